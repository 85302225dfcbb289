"""An agent-configuration canary judged: success rate (early fail on significant evidence, pass
on the full sample), cost per successful run, turns, duration, quality, coverage, the "not
measured" pass, and how the measurements combine."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from quarterdeck.rollouts.analysis import AnalysisResult, Measurement
from quarterdeck.rollouts.config_analysis import ArmSample, ConfigAnalysis, judge_config

DEFAULT = ConfigAnalysis()


def arm(runs: int, succeeded: int | None = None, **given: Any) -> ArmSample:
    """A healthy arm: every run succeeds, $0.03 per run, 8 turns, p95 120 s, quality 0.8 on
    every run, coverage 80 % on every run, unless ``given`` says otherwise."""
    done = runs if succeeded is None else succeeded
    values: dict[str, Any] = {
        "runs": runs,
        "succeeded": done,
        "cost_usd": 0.03 * runs,
        "turns_mean": 8.0 if runs else None,
        "duration_p95_s": 120.0 if runs else None,
        "quality_mean": 0.8 if runs else None,
        "quality_n": runs,
        "coverage_mean": 80.0 if runs else None,
        "coverage_n": runs,
    }
    values.update(given)
    return ArmSample(**values)


STABLE = arm(500, 490)  # 2 % failures


def by_name(result: AnalysisResult, name: str) -> Measurement:
    (found,) = [m for m in result.measurements if m.name == name]
    return found


# --- sample size -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("analysis", "expected"),
    [
        (ConfigAnalysis(), 60),  # rule of three: 3 / 0.05, not 61 from float rounding
        (ConfigAnalysis(max_success_drop=0.01), 300),
        (ConfigAnalysis(max_success_drop=0.07), 43),
        (ConfigAnalysis(min_runs=25), 25),
    ],
)
def test_required_runs(analysis: ConfigAnalysis, expected: int) -> None:
    assert analysis.required_runs() == expected


# --- success rate ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "verdict"),
    [
        (arm(10, 6), "fail"),  # 40 % vs 2 % failures: the Wilson bound is already ~17 %
        (arm(5, 2), "fail"),  # 60 % failures in 5 is significant too
        (arm(5, 4), "inconclusive"),  # 1 in 5 could be luck (lower bound ~3.6 % < 7 %)
        (arm(2, 1), "inconclusive"),  # bound ~9.5 % > 7 %, but one failure is not a pattern
        (arm(1, 0), "inconclusive"),  # nor is a first run failing (bound 20.6 %)
        (arm(4, 2), "inconclusive"),  # two failures in four: bound ~15 %, still only two
        (arm(30, 27), "inconclusive"),  # 10 % vs 2 % + 5: over, but not significantly, and short
    ],
)
def test_early_fail_only_on_significant_evidence(candidate: ArmSample, verdict: str) -> None:
    result = judge_config(DEFAULT, STABLE, candidate)
    assert by_name(result, "success-rate").verdict == verdict
    assert result.verdict == verdict
    assert (result.samples, result.required) == (candidate.runs, 60)


def _early_fail_probability(stable: ArmSample, p: float, by: int) -> float:
    """The exact probability that a candidate failing each run with probability ``p`` is failed
    early at some run up to ``by``, looking after every run (worse than the controller, which
    looks once an interval): a walk over (runs, failures) that stops where judge_config fails."""
    alive = {0: 1.0}  # failures so far -> probability of having got here without a failure
    fired = 0.0
    for n in range(1, by + 1):
        step: dict[int, float] = {}
        for x, pr in alive.items():
            step[x + 1] = step.get(x + 1, 0.0) + pr * p
            step[x] = step.get(x, 0.0) + pr * (1 - p)
        alive = {}
        for x, pr in step.items():
            verdict = by_name(judge_config(DEFAULT, stable, arm(n, n - x)), "success-rate")
            if verdict.verdict == "fail":
                fired += pr
            else:
                alive[x] = pr
    return fired


@pytest.mark.parametrize(
    ("stable_failures", "at_most"),
    [(0.02, 0.01), (0.10, 0.05), (0.20, 0.08)],
)
def test_an_equal_candidate_is_rarely_failed_early(stable_failures: float, at_most: float) -> None:
    # measured: 0.4 %, 4.3 %, 7.0 % (Wilson bound alone: 4.6 %, 14.4 %, 9.1 %)
    stable = arm(1000, round(1000 * (1 - stable_failures)))
    assert _early_fail_probability(stable, stable_failures, 60) < at_most


def test_a_clearly_worse_candidate_is_failed_within_a_few_runs() -> None:
    # 40 % failures against 2 %: failed by the 12th run nine times in ten (measured 0.90+)
    assert _early_fail_probability(STABLE, 0.40, 12) >= 0.9


def test_early_fail_names_both_arms_in_the_reason() -> None:
    result = judge_config(DEFAULT, STABLE, arm(10, 6))
    rate = by_name(result, "success-rate")
    assert rate.value == 0.6
    assert rate.limit == ">= 93 %"
    assert result.reason.startswith("success-rate: ")
    assert "candidate 60 % (6 of 10)" in result.reason
    assert "stable 98 % (490 of 500)" in result.reason


def test_early_fail_is_relative_to_a_weak_stable_arm() -> None:
    # 40 % failures is no regression when the stable configuration fails 40 % too
    weak = arm(500, 300)
    result = judge_config(DEFAULT, weak, arm(10, 6))
    assert by_name(result, "success-rate").verdict == "inconclusive"


@pytest.mark.parametrize(
    ("stable", "candidate", "waiting"),
    [
        (STABLE, arm(12), "candidate 12 of 60 runs needed"),
        (STABLE, arm(59), "candidate 59 of 60 runs needed"),
        (arm(30), arm(80), "stable 30 of 60 runs needed"),
        (STABLE, arm(0), "candidate 0 of 60 runs needed"),
    ],
)
def test_inconclusive_below_the_required_runs(
    stable: ArmSample, candidate: ArmSample, waiting: str
) -> None:
    result = judge_config(DEFAULT, stable, candidate)
    assert result.verdict == "inconclusive"
    rate = by_name(result, "success-rate")
    assert rate.verdict == "inconclusive"
    assert waiting in rate.detail
    assert waiting in result.reason


def test_no_stable_runs_is_inconclusive_even_for_a_bad_candidate() -> None:
    result = judge_config(DEFAULT, arm(0), arm(10, 2))
    assert by_name(result, "success-rate").verdict == "inconclusive"
    assert result.verdict == "inconclusive"


def test_full_sample_over_the_limit_but_not_significantly_is_inconclusive() -> None:
    # 6 failures in 60 (10 %) vs 2 %: over 7 %, but the bound (~4.7 %) is not
    result = judge_config(DEFAULT, STABLE, arm(60, 54))
    rate = by_name(result, "success-rate")
    assert rate.verdict == "inconclusive"
    assert "not conclusively" in rate.detail


def test_full_sample_within_the_limit_passes_on_the_point_estimate() -> None:
    # 4 failures in 60 (6.7 %) vs 2 % + 5 points: within, though its upper bound is not
    result = judge_config(DEFAULT, STABLE, arm(60, 56))
    assert by_name(result, "success-rate").verdict == "pass"
    assert result.verdict == "pass"


# --- cost per successful run -----------------------------------------------------------------


def test_equal_success_and_cheaper_cost_passes() -> None:
    stable = arm(100, 95, cost_usd=95 * 0.030)
    candidate = arm(60, 57, cost_usd=57 * 0.012)
    result = judge_config(DEFAULT, stable, candidate)
    assert result.verdict == "pass", result.reason
    assert all(m.verdict == "pass" for m in result.measurements)
    cost = by_name(result, "cost-per-success")
    assert cost.value == pytest.approx(0.012)
    assert cost.detail == (
        "cost per successful run: candidate $0.012 vs stable $0.03 (limit <= $0.033)"
    )
    assert result.reason == "all 6 measurements passed on 60 candidate and 100 stable runs"


@pytest.mark.parametrize(
    ("candidate_cost", "verdict"),
    [
        (0.036, "fail"),  # +20 %
        (0.0335, "fail"),  # +11.7 %
        (0.0325, "pass"),  # +8.3 %
        (0.030, "pass"),
    ],
)
def test_cost_per_success_limit(candidate_cost: float, verdict: str) -> None:
    stable = arm(100, 100, cost_usd=100 * 0.030)
    candidate = arm(60, 60, cost_usd=60 * candidate_cost)
    result = judge_config(DEFAULT, stable, candidate)
    assert by_name(result, "cost-per-success").verdict == verdict
    assert result.verdict == verdict
    if verdict == "fail":
        assert result.reason.startswith("cost-per-success: cost per successful run: candidate")
        assert "stable $0.03" in result.reason


def test_cost_counts_failed_runs_against_the_successes() -> None:
    # the same $0.03 per run, but 4 of the candidate's 60 runs fail: 7.1 % dearer per success,
    # within a 10 % limit and beyond a 5 % one
    stable = arm(100, 100, cost_usd=3.0)
    candidate = arm(60, 56, cost_usd=1.8)
    cost = by_name(judge_config(DEFAULT, stable, candidate), "cost-per-success")
    assert cost.value == pytest.approx(1.8 / 56)
    assert cost.verdict == "pass"
    strict = dataclasses.replace(DEFAULT, max_cost_increase=0.05)
    assert judge_config(strict, stable, candidate).verdict == "fail"


@pytest.mark.parametrize(
    ("stable_cost", "candidate_cost", "verdict"),
    [(0.0, 0.0, "pass"), (0.0, 0.6, "fail"), (math.nan, 0.0, "pass")],
)
def test_free_arms(stable_cost: float, candidate_cost: float, verdict: str) -> None:
    result = judge_config(DEFAULT, arm(60, cost_usd=stable_cost), arm(60, cost_usd=candidate_cost))
    assert by_name(result, "cost-per-success").verdict == verdict


def test_cost_waits_for_successes_on_both_arms() -> None:
    # 20 successes each are needed (max(10, 60 // 3)); before that a doubled cost is not judged
    result = judge_config(DEFAULT, arm(500), arm(19, cost_usd=19 * 0.06))
    cost = by_name(result, "cost-per-success")
    assert cost.verdict == "inconclusive"
    assert "20 each needed" in cost.detail
    later = judge_config(DEFAULT, arm(500), arm(20, cost_usd=20 * 0.06))
    assert by_name(later, "cost-per-success").verdict == "fail"


# --- turns, duration, quality, coverage ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "candidate", "verdict"),
    [
        ("turns", {"turns_mean": 10.5}, "fail"),  # +31 % > 25 %
        ("turns", {"turns_mean": 9.9}, "pass"),  # +24 %
        ("duration-p95", {"duration_p95_s": 190.0}, "fail"),  # +58 % > 50 %
        ("duration-p95", {"duration_p95_s": 175.0}, "pass"),
        ("quality", {"quality_mean": 0.65}, "fail"),  # 0.15 below
        ("quality", {"quality_mean": 0.71}, "pass"),
        ("coverage", {"coverage_mean": 74.0}, "fail"),  # 6 points below
        ("coverage", {"coverage_mean": 75.5}, "pass"),
        ("coverage", {"coverage_mean": 95.0}, "pass"),  # better is never a failure
    ],
)
def test_secondary_limits(name: str, candidate: dict[str, Any], verdict: str) -> None:
    result = judge_config(DEFAULT, arm(100), arm(60, **candidate))
    measured = by_name(result, name)
    assert measured.verdict == verdict
    assert result.verdict == verdict
    if verdict == "fail":
        assert result.reason.startswith(f"{name}: ")
        assert "candidate" in result.reason and "stable" in result.reason


def test_secondary_limits_wait_for_the_full_sample() -> None:
    # 40 % more turns on 30 runs: inconclusive, not yet a failure
    result = judge_config(DEFAULT, arm(100), arm(30, turns_mean=11.2))
    turns = by_name(result, "turns")
    assert turns.verdict == "inconclusive"
    assert "candidate 30 of 60 runs needed" in turns.detail


@pytest.mark.parametrize("name", ["quality", "coverage"])
def test_unmeasured_quality_and_coverage_pass(name: str) -> None:
    none: dict[str, Any] = {f"{name}_mean": None, f"{name}_n": 0}
    result = judge_config(DEFAULT, arm(100, **none), arm(60, **none))
    measured = by_name(result, name)
    assert measured.verdict == "pass"
    assert measured.detail.startswith("not measured:")
    assert result.verdict == "pass"
    # even before the full sample: it is not what keeps the step open
    early = judge_config(DEFAULT, arm(100, **none), arm(5, **none))
    assert by_name(early, name).verdict == "pass"


@pytest.mark.parametrize("name", ["quality", "coverage"])
def test_too_few_scored_runs(name: str) -> None:
    # a stable arm with 9 scored runs is no baseline: not measured
    result = judge_config(DEFAULT, arm(100, **{f"{name}_n": 9}), arm(60))
    assert by_name(result, name).verdict == "pass"
    assert by_name(result, name).detail.startswith("not measured:")
    # a candidate that stopped reporting what the stable arm reports is for a person to look at
    silent = judge_config(DEFAULT, arm(100), arm(60, **{f"{name}_n": 3}))
    assert by_name(silent, name).verdict == "inconclusive"
    assert silent.verdict == "inconclusive"


# --- combination -----------------------------------------------------------------------------


def test_any_failure_fails_and_the_reason_names_the_first() -> None:
    candidate = arm(60, turns_mean=20.0, coverage_mean=50.0)
    result = judge_config(DEFAULT, arm(100), candidate)
    assert result.verdict == "fail"
    assert result.reason.startswith("turns: ")
    assert "also failing: coverage" in result.reason


def test_insane_counts_are_clamped() -> None:
    # one more success than runs (two queries a moment apart) is a 100 % rate, not 101 %
    result = judge_config(DEFAULT, arm(100), arm(60, 61))
    assert by_name(result, "success-rate").value == 1.0
    assert result.verdict == "pass"


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"max_success_drop": 0.0}, "max_success_drop must be in (0, 1)"),
        ({"max_success_drop": 1.0}, "max_success_drop must be in (0, 1)"),
        ({"max_success_drop": math.nan}, "max_success_drop"),
        ({"interval_s": 0.0}, "interval_s"),
        ({"max_extensions": -1}, "max_extensions"),
        ({"max_cost_increase": -0.1}, "max_cost_increase"),
        ({"max_turns_increase": math.inf}, "max_turns_increase"),
        ({"max_duration_increase": math.nan}, "max_duration_increase"),
        ({"max_quality_drop": 1.5}, "max_quality_drop"),
        ({"max_coverage_drop": -1.0}, "max_coverage_drop"),
        ({"min_runs": 0}, "min_runs"),
    ],
)
def test_validate_names_the_bad_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field.replace('(', '[(]').replace(')', '[)]')}"):
        dataclasses.replace(DEFAULT, **change).validate()


def test_defaults_validate() -> None:
    DEFAULT.validate()
    ConfigAnalysis(min_runs=1, max_cost_increase=0.0, max_quality_drop=0.0).validate()
