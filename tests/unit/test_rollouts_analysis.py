"""One analysis interval judged: error rate (early fail, sample-size pass), latency p95,
throughput per unit of weight, user checks, and how they combine."""

from __future__ import annotations

import math

import pytest

from quarterdeck.rollouts.analysis import (
    AnalysisResult,
    Measurement,
    VersionSample,
    judge,
    wilson_lower_bound,
)
from quarterdeck.rollouts.spec import Analysis, MetricCheck

STABLE = VersionSample(requests=5700, errors=3, latency_p95_s=1.2, rate_per_s=0.95)


def canary(
    n: int, errors: int = 0, p95: float | None = 1.0, rate: float | None = 0.05
) -> VersionSample:
    return VersionSample(requests=n, errors=errors, latency_p95_s=p95, rate_per_s=rate)


def by_name(result: AnalysisResult, name: str) -> Measurement:
    (found,) = [m for m in result.measurements if m.name == name]
    return found


def test_wilson_lower_bound_known_values() -> None:
    # 5 of 10: the 95 % Wilson interval is [0.2366, 0.7634] (textbook value)
    assert wilson_lower_bound(5, 10) == pytest.approx(0.2366, abs=1e-4)
    assert wilson_lower_bound(0, 300) == 0.0
    assert wilson_lower_bound(0, 0) == 0.0
    assert wilson_lower_bound(1, 1) == pytest.approx(0.2065, abs=1e-4)
    assert wilson_lower_bound(10, 10) < 1.0
    # it narrows towards the observed rate as n grows
    assert wilson_lower_bound(50, 100) < wilson_lower_bound(500, 1000) < 0.5


def test_half_failing_5_percent_canary_fails_after_10_samples() -> None:
    result = judge(Analysis(), weight=5, stable=STABLE, canary=canary(10, errors=5))
    assert result.verdict == "fail"
    error = by_name(result, "error-rate")
    assert error.verdict == "fail"
    assert error.value == 0.5  # the failing value is kept for the status
    assert error.limit == "<= 1 %"
    assert "5 errors in 10 requests" in error.detail
    assert "error-rate" in result.reason
    assert (result.samples, result.required) == (10, 300)


def test_one_error_in_two_is_not_yet_a_failure_at_a_loose_limit() -> None:
    # lower bound of 1/2 is ~9.5 %: above 1 % (fail), below 20 % (keep looking)
    assert judge(Analysis(), weight=5, stable=STABLE, canary=canary(2, 1)).verdict == "fail"
    loose = Analysis(max_error_rate=0.2)
    result = judge(loose, weight=5, stable=STABLE, canary=canary(2, 1))
    assert by_name(result, "error-rate").verdict == "inconclusive"


def test_zero_errors_in_299_is_inconclusive_and_300_passes() -> None:
    short = judge(Analysis(), weight=5, stable=STABLE, canary=canary(299))
    assert short.verdict == "inconclusive"
    assert by_name(short, "error-rate").verdict == "inconclusive"
    assert "299 of 300 samples" in by_name(short, "error-rate").detail
    assert "299 of 300 samples" in short.reason
    full = judge(Analysis(), weight=5, stable=STABLE, canary=canary(300))
    assert full.verdict == "pass", full.reason
    assert all(m.verdict == "pass" for m in full.measurements)
    assert full.samples == 300


def test_min_samples_overrides_the_rule_of_three() -> None:
    analysis = Analysis(min_samples=50)
    assert judge(analysis, weight=5, stable=STABLE, canary=canary(49)).verdict == "inconclusive"
    result = judge(analysis, weight=5, stable=STABLE, canary=canary(50))
    assert result.verdict == "pass"
    assert result.required == 50


def test_no_canary_requests_is_inconclusive_not_a_pass() -> None:
    result = judge(Analysis(), weight=5, stable=STABLE, canary=canary(0, p95=None, rate=0.0))
    assert result.verdict == "inconclusive"
    error = by_name(result, "error-rate")
    assert (error.value, error.detail) == (None, "0 of 300 samples")


def test_enough_samples_above_limit_but_not_conclusively_is_inconclusive() -> None:
    # 4 in 300 is 1.33 %: above 1 %, yet its lower bound is not
    assert wilson_lower_bound(4, 300) < 0.01
    result = judge(Analysis(), weight=5, stable=STABLE, canary=canary(300, errors=4))
    error = by_name(result, "error-rate")
    assert error.verdict == "inconclusive"
    assert "not conclusively" in error.detail
    assert result.verdict == "inconclusive"
    # 3 in 300 is exactly 1 %: within the limit
    assert judge(Analysis(), weight=5, stable=STABLE, canary=canary(300, 3)).verdict == "pass"


def test_errors_above_requests_are_clamped() -> None:
    result = judge(Analysis(), weight=5, stable=STABLE, canary=canary(3, errors=4))
    assert by_name(result, "error-rate").value == 1.0
    assert result.verdict == "fail"
    negative = judge(Analysis(), weight=5, stable=STABLE, canary=canary(-2, errors=-1))
    assert negative.samples == 0


@pytest.mark.parametrize(
    ("n", "p95", "verdict"),
    [
        (20, 5.5, "fail"),
        (19, 5.5, "inconclusive"),  # too few for a p95 to be a tail
        (19, 1.0, "inconclusive"),
        (20, 5.0, "pass"),  # the limit itself is within
        (400, math.inf, "fail"),  # histogram_quantile past the last bucket
        (400, None, "inconclusive"),
        (400, math.nan, "inconclusive"),  # histogram_quantile of no requests
    ],
)
def test_latency_p95(n: int, p95: float | None, verdict: str) -> None:
    result = judge(Analysis(), weight=50, stable=STABLE, canary=canary(n, p95=p95, rate=0.95))
    latency = by_name(result, "latency-p95")
    assert latency.verdict == verdict
    assert latency.limit == "<= 5 s"
    if verdict == "fail":
        assert result.verdict == "fail"
        assert latency.value == p95


def test_throughput_is_normalised_by_weight_at_5_percent() -> None:
    # A healthy 5 % canary serves 5 % of the requests: the guide's raw ratio reads ~0.05.
    healthy = judge(Analysis(), weight=5, stable=STABLE, canary=canary(300, rate=0.05))
    throughput = by_name(healthy, "throughput")
    assert 0.05 / 0.95 < 0.1  # what the raw ratio would have said
    assert throughput.value == pytest.approx(1.0)
    assert throughput.verdict == "pass"
    # half the expected throughput per unit of weight fails
    slow = judge(Analysis(), weight=5, stable=STABLE, canary=canary(300, rate=0.025))
    assert by_name(slow, "throughput").value == pytest.approx(0.5)
    assert by_name(slow, "throughput").verdict == "fail"
    assert slow.verdict == "fail"
    assert "below 0.8" in slow.reason


def test_throughput_uses_the_weight_it_is_given() -> None:
    # 1 canary pod beside 3 stable: really 25 %, so equal per-pod rates read 1.0 at weight 25
    stable = VersionSample(900, 0, 1.0, 0.75)
    real = judge(Analysis(), weight=25.0, stable=stable, canary=canary(300, rate=0.25))
    assert by_name(real, "throughput").value == pytest.approx(1.0)
    # judged at the nominal 5 % the same canary would read 6.3x too fast, not wrong but useless
    nominal = judge(Analysis(), weight=5, stable=stable, canary=canary(300, rate=0.25))
    assert by_name(nominal, "throughput").value == pytest.approx((0.25 / 0.05) / (0.75 / 0.95))


def test_throughput_with_too_little_traffic_is_inconclusive() -> None:
    few_canary = judge(Analysis(), weight=5, stable=STABLE, canary=canary(19, rate=0.001))
    throughput = by_name(few_canary, "throughput")
    assert throughput.verdict == "inconclusive"
    assert throughput.value is not None and throughput.value < 0.8  # kept, though not judged
    few_stable = VersionSample(19, 0, 1.0, 0.95)
    result = judge(Analysis(), weight=5, stable=few_stable, canary=canary(300, rate=0.001))
    assert by_name(result, "throughput").verdict == "inconclusive"
    for stable_rate in (None, math.nan, 0.0):
        no_data = VersionSample(500, 0, 1.0, stable_rate)
        result = judge(Analysis(), weight=5, stable=no_data, canary=canary(300))
        assert by_name(result, "throughput").verdict == "inconclusive"


def test_throughput_skipped_at_100_percent() -> None:
    gone = VersionSample(0, 0, None, None)
    result = judge(Analysis(), weight=100, stable=gone, canary=canary(300, rate=1.0))
    throughput = by_name(result, "throughput")
    assert (throughput.verdict, throughput.value) == ("pass", None)
    assert result.verdict == "pass"


def test_weight_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        judge(Analysis(), weight=101, stable=STABLE, canary=canary(300))
    zero = judge(Analysis(), weight=0, stable=STABLE, canary=canary(300))
    assert by_name(zero, "throughput").verdict == "inconclusive"


CHECKS = (
    MetricCheck("queue", "q{version='{{version}}'}", success="result < 10", failure="result > 50"),
    MetricCheck("apdex", "a", success="result >= 0.9"),
)


@pytest.mark.parametrize(
    ("queue", "verdict"),
    [
        (5.0, "pass"),
        (60.0, "fail"),
        (20.0, "inconclusive"),  # neither condition
        (None, "inconclusive"),
        (math.nan, "inconclusive"),
    ],
)
def test_custom_check(queue: float | None, verdict: str) -> None:
    analysis = Analysis(checks=CHECKS)
    result = judge(
        analysis,
        weight=5,
        stable=STABLE,
        canary=canary(300),
        checks={"queue": queue, "apdex": 0.95},
    )
    check = by_name(result, "queue")
    assert check.verdict == verdict
    assert check.limit == "success: result < 10; failure: result > 50"
    assert check.value == (None if queue is None or math.isnan(queue) else queue)
    assert by_name(result, "apdex").verdict == "pass"
    assert result.verdict == verdict


def test_failure_wins_over_success_and_odd_checks_are_inconclusive() -> None:
    both = MetricCheck("both", "x", success="result > 0", failure="result > 1")
    none = MetricCheck("none", "x")
    broken = MetricCheck("broken", "x", success="result >> 1")
    absent = MetricCheck("absent", "x", success="result > 0")
    analysis = Analysis(checks=(both, none, broken, absent))
    result = judge(
        analysis,
        weight=5,
        stable=STABLE,
        canary=canary(300),
        checks={"both": 2.0, "none": 1.0, "broken": 1.0, "unused": 9.0},
    )
    assert by_name(result, "both").verdict == "fail"
    assert by_name(result, "none").verdict == "inconclusive"
    assert by_name(result, "none").limit == "no condition"
    assert by_name(result, "broken").verdict == "inconclusive"
    assert "position" in by_name(result, "broken").detail
    assert by_name(result, "absent").verdict == "inconclusive"
    assert result.verdict == "fail"
    assert [m.name for m in result.measurements][3:] == ["both", "none", "broken", "absent"]


def test_any_fail_beats_inconclusive_and_every_measurement_is_kept() -> None:
    # error rate still short of samples, latency clearly over: the interval fails
    result = judge(Analysis(), weight=20, stable=STABLE, canary=canary(40, p95=9.0, rate=0.24))
    assert by_name(result, "error-rate").verdict == "inconclusive"
    assert by_name(result, "latency-p95").verdict == "fail"
    assert result.verdict == "fail"
    assert "latency-p95" in result.reason and "error-rate" not in result.reason
    assert [m.name for m in result.measurements] == ["error-rate", "latency-p95", "throughput"]
    assert all(m.limit for m in result.measurements)


@pytest.mark.parametrize(
    ("check", "value", "verdict"),
    [
        (MetricCheck("s", "x", success="result >= 0.9"), 0.95, "pass"),
        (MetricCheck("s", "x", success="result >= 0.9"), 0.5, "fail"),  # unmet success fails
        (MetricCheck("f", "x", failure="result > 0.1"), 0.5, "fail"),
        (MetricCheck("f", "x", failure="result > 0.1"), 0.01, "pass"),  # avoided failure passes
    ],
)
def test_a_single_condition_is_judged_as_argo_judges_it(
    check: MetricCheck, value: float, verdict: str
) -> None:
    result = judge(
        Analysis(checks=(check,)),
        weight=5,
        stable=STABLE,
        canary=canary(300),
        checks={check.name: value},
    )
    assert by_name(result, check.name).verdict == verdict
