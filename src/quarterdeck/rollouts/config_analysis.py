"""The judgement of an agent-configuration canary: is the candidate configuration no worse?

An agent-configuration canary (issue 20) sends a share of new runs of one agent type to a
candidate configuration (another model, a new system prompt) and compares the two arms'
*finished* runs. This module is that comparison, pure: it takes what each arm did and the
limits, and returns the same :class:`AnalysisResult` as the deployment canary's judgement
(``analysis.py``), so the shared state machine (``machine.py``) promotes, rolls back or extends
a configuration canary exactly as it does a deployment. Unlike a deployment canary, the verdict
is *relative*: a coder that fails 10 % of its runs is fine if the stable one fails 10 % too, so
every limit is "no worse than the stable arm by more than X".

The rules, and why:

* **Success rate** (``success-rate``). Fail *early*, before the sample is complete, when the
  candidate is significantly worse: the Wilson 95 % lower bound of its failure rate is above
  the stable arm's failure rate plus ``max_success_drop``, and it has failed at least
  ``MIN_EARLY_FAILURES`` runs. Then even the most charitable reading of the candidate is over
  the limit, and every further run sent to it is a run a user loses. The floor of three
  failures is there because agent runs fail far more often than requests do, and the bound is
  looked at again every interval: with the bound alone, one failure in the first run
  (lower bound 20.6 %) rolls back a candidate exactly as good as a stable arm that fails 10 % of
  its runs, and over run-by-run looks up to 60 runs such a candidate was rolled back 14.4 % of
  the time (exact computation, stable 10 %); with the floor 4.3 %, while one failing 40 % of
  its runs against 2 % is still rolled back by its 12th run nine times in ten. Pass only once
  *both* arms have ``required_runs()`` finished runs and the candidate's observed failure rate
  is within the limit. The pass uses the point estimate, not the Wilson
  upper bound, deliberately: with a 5-point limit the upper bound at 60 runs and no failure is
  still ~6 %, so a bound-based pass would need hundreds of runs to prove what the rule of
  three already sized the sample for (no failure in ``n`` runs bounds the rate at ``3/n``).
  Over the limit but not significantly so is inconclusive: a person looks, nothing is rolled
  back on noise.
* **Cost per successful run** (``cost-per-success``): ``cost_usd / succeeded`` per arm, so a
  cheap model that fails more is not called cheaper (its failed runs cost money and produce
  nothing). Judged once both arms have ``max(10, required_runs() // 3)`` successes; fails when
  the candidate's exceeds the stable's by more than ``max_cost_increase``. Free on both sides
  (the simulated provider) passes; a free stable arm against a paying candidate fails.
  A known limit: an arm's sample carries totals and means but no per-run spread, so cost,
  turns and duration compare point estimates; agent runs vary widely in cost, and a 10 % limit
  on a few dozen runs can fail an equally priced candidate by chance. Widen the limits, or
  raise ``min_runs``, for costly agent types.
* **Turns** (mean), **duration** (p95), **quality** (mean score, needs ``quality_n >= 10`` on
  both arms) and **coverage** (mean percent, ``coverage_n >= 10`` on both): judged once both
  arms have the required runs, failing beyond their limits.
* **Not measured is a pass, not inconclusive.** When neither arm reports a quantity (an agent
  type that writes no code has no coverage and no quality score), the measurement passes with
  a detail starting "not measured:". Inconclusive would extend every step and then pause the
  canary for a person forever, for a number that can never arrive. The same holds when the
  stable arm has too little of it to be a baseline. The opposite case is not a pass: the
  stable arm reports it and the candidate does not (a coder that stopped running its tests
  reports no coverage), which is inconclusive, for a person to look at.

Overall: any failing measurement fails (the reason names the first, with both arms' values);
else anything inconclusive is inconclusive; else pass. Cancelled runs never reach here: a
cancel is a person's decision, not the configuration's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from quarterdeck.rollouts.analysis import AnalysisResult, Measurement, Verdict, wilson_lower_bound

MIN_SCORED_RUNS = 10  # per arm, for quality and coverage means: fewer is a handful, not a mean
MIN_EARLY_FAILURES = 3  # candidate failures before an early fail (module docstring says why)
MIN_COST_SUCCESSES = 10  # per arm, the floor of the cost comparison's sample
_EPS = 1e-9  # float slack so that exactly-at-the-limit passes (0.05 + 0.05 vs 0.1)


@dataclass(frozen=True)
class ArmSample:
    """What one arm's finished runs did (cancelled runs excluded: a person's decision, not the
    configuration's)."""

    runs: int  # finished: succeeded + failed + timed_out
    succeeded: int
    cost_usd: float  # total known cost of those runs (all of them, failed included)
    turns_mean: float | None  # None when runs == 0
    duration_p95_s: float | None
    quality_mean: float | None  # code-quality score 0..1 (agents/quality.py), runs that have one
    quality_n: int
    coverage_mean: float | None  # percent 0..100, runs that have one
    coverage_n: int


@dataclass(frozen=True)
class ConfigAnalysis:
    """The limits of a configuration canary, each relative to the stable arm."""

    interval_s: float = 60.0
    max_extensions: int = 3
    max_success_drop: float = 0.05  # absolute: candidate success rate may be this far below stable
    max_cost_increase: float = 0.10  # relative: cost per successful run
    max_turns_increase: float = 0.25  # relative: mean turns
    max_duration_increase: float = 0.50  # relative: p95 duration
    max_quality_drop: float = 0.10  # absolute, score 0..1
    max_coverage_drop: float = 5.0  # absolute, percentage points
    min_runs: int | None = None  # per arm; None: ceil(3 / max_success_drop) (rule of three)

    def required_runs(self) -> int:
        """Finished runs each arm needs before anything but an early failure is decided."""
        if self.min_runs is not None:
            return self.min_runs
        if not 0 < self.max_success_drop < 1:
            return 300  # an invalid spec (validate() rejects it) still gets a safe number
        return math.ceil(3.0 / self.max_success_drop - _EPS)  # 3/0.05 must be 60, not 61

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if not (0 < self.interval_s < math.inf):
            raise ValueError("interval_s must be a finite duration > 0")
        if self.max_extensions < 0:
            raise ValueError("max_extensions must be >= 0")
        if not 0 < self.max_success_drop < 1:
            raise ValueError("max_success_drop must be in (0, 1)")
        for name in ("max_cost_increase", "max_turns_increase", "max_duration_increase"):
            value = getattr(self, name)
            if not (0 <= value < math.inf):
                raise ValueError(f"{name} must be a finite fraction >= 0")
        if not 0 <= self.max_quality_drop <= 1:
            raise ValueError("max_quality_drop must be in [0, 1]")
        if not 0 <= self.max_coverage_drop <= 100:
            raise ValueError("max_coverage_drop must be in [0, 100] percentage points")
        if self.min_runs is not None and self.min_runs < 1:
            raise ValueError("min_runs must be >= 1")


def judge_config(
    analysis: ConfigAnalysis, stable: ArmSample, candidate: ArmSample
) -> AnalysisResult:
    """Judge one interval of a configuration canary (the rules are in the module docstring)."""
    stable, candidate = _sane(stable), _sane(candidate)
    required = analysis.required_runs()
    full = candidate.runs >= required and stable.runs >= required
    waiting = _waiting(stable, candidate, required)
    measurements = (
        _success_rate(analysis, stable, candidate, required),
        _cost(analysis, stable, candidate, required),
        _relative(
            "turns", stable.turns_mean, candidate.turns_mean, analysis.max_turns_increase,
            "mean turns", "{:.3g}", full, waiting,
        ),
        _relative(
            "duration-p95", stable.duration_p95_s, candidate.duration_p95_s,
            analysis.max_duration_increase, "p95 duration", "{:.3g} s", full, waiting,
        ),
        _drop(
            "quality", (stable.quality_mean, stable.quality_n),
            (candidate.quality_mean, candidate.quality_n), analysis.max_quality_drop,
            "{:.3g}", full, waiting,
        ),
        _drop(
            "coverage", (stable.coverage_mean, stable.coverage_n),
            (candidate.coverage_mean, candidate.coverage_n), analysis.max_coverage_drop,
            "{:.3g} %", full, waiting,
        ),
    )  # fmt: skip
    failed = [m for m in measurements if m.verdict == "fail"]
    open_ = [m for m in measurements if m.verdict == "inconclusive"]
    verdict: Verdict
    if failed:
        verdict, reason = "fail", f"{failed[0].name}: {failed[0].detail}"
        if len(failed) > 1:
            reason += f" (also failing: {', '.join(m.name for m in failed[1:])})"
    elif open_:
        verdict, reason = "inconclusive", "; ".join(f"{m.name}: {m.detail}" for m in open_)
    else:
        verdict = "pass"
        reason = (
            f"all {len(measurements)} measurements passed on {candidate.runs} candidate and "
            f"{stable.runs} stable runs"
        )
    return AnalysisResult(verdict, measurements, reason, candidate.runs, required)


def _pct(fraction: float) -> str:
    """``0.0123`` as ``"1.23 %"``, ``0.01`` as ``"1 %"``."""
    return f"{fraction * 100:.2f}".rstrip("0").rstrip(".") + " %"


def _known(value: float | None) -> float | None:
    """A NaN (a mean over nothing, as a query returns it) is no value, not a number to compare."""
    return None if value is None or math.isnan(value) else float(value)


def _sane(arm: ArmSample) -> ArmSample:
    """Clamp counts into ``0 <= succeeded <= runs`` and costs to ``>= 0``.

    Why: the two counts come from one query each, a moment apart, so a run finishing between
    them can read one more success than runs; that is noise to absorb, not a crash.
    """
    runs = max(0, int(arm.runs))
    succeeded = min(max(0, int(arm.succeeded)), runs)
    cost = arm.cost_usd if math.isfinite(arm.cost_usd) and arm.cost_usd > 0 else 0.0
    return ArmSample(
        runs, succeeded, cost, _known(arm.turns_mean), _known(arm.duration_p95_s),
        _known(arm.quality_mean), max(0, int(arm.quality_n)),
        _known(arm.coverage_mean), max(0, int(arm.coverage_n)),
    )  # fmt: skip


def _waiting(stable: ArmSample, candidate: ArmSample, required: int) -> str:
    """Which arm is short of runs, as "candidate 12 of 60 runs needed"; "" when neither."""
    short = [
        f"{name} {arm.runs} of {required} runs needed"
        for name, arm in (("candidate", candidate), ("stable", stable))
        if arm.runs < required
    ]
    return ", ".join(short)


def _success_rate(
    analysis: ConfigAnalysis, stable: ArmSample, candidate: ArmSample, required: int
) -> Measurement:
    """Early fail on significant evidence, pass on the full sample (module docstring)."""
    name = "success-rate"
    if stable.runs == 0:
        detail = f"no finished stable run to compare with ({_waiting(stable, candidate, required)})"
        return Measurement(name, None, "stable arm's rate", "inconclusive", detail)
    stable_rate = stable.succeeded / stable.runs
    floor = stable_rate - analysis.max_success_drop
    shown = f">= {_pct(max(0.0, floor))}"
    theirs = f"stable {_pct(stable_rate)} ({stable.succeeded} of {stable.runs})"
    if candidate.runs == 0:
        detail = f"candidate 0 of {required} runs needed; {theirs}"
        return Measurement(name, None, shown, "inconclusive", detail)
    rate = candidate.succeeded / candidate.runs
    seen = f"candidate {_pct(rate)} ({candidate.succeeded} of {candidate.runs}) vs {theirs}"
    # the candidate's failure rate's lower bound, as a success rate: its best plausible reading
    failures = candidate.runs - candidate.succeeded
    best = 1.0 - wilson_lower_bound(failures, candidate.runs)
    if failures >= MIN_EARLY_FAILURES and best < floor - _EPS:
        detail = f"{seen}; even its 95 % upper bound {_pct(best)} is below {_pct(floor)}"
        return Measurement(name, rate, shown, "fail", detail)
    waiting = _waiting(stable, candidate, required)
    if waiting:
        return Measurement(name, rate, shown, "inconclusive", f"{waiting} ({seen})")
    if rate < floor - _EPS:
        why = (
            f"95 % upper bound {_pct(best)}"
            if best >= floor - _EPS
            else f"{failures} failures, {MIN_EARLY_FAILURES} needed to fail"
        )
        detail = f"{seen} is below {_pct(floor)}, but not conclusively ({why})"
        return Measurement(name, rate, shown, "inconclusive", detail)
    return Measurement(name, rate, shown, "pass", f"{seen}, limit {shown}")


def _cost(
    analysis: ConfigAnalysis, stable: ArmSample, candidate: ArmSample, required: int
) -> Measurement:
    """Cost per successful run, once both arms have enough successes to average over."""
    name = "cost-per-success"
    needed = max(MIN_COST_SUCCESSES, required // 3)
    if stable.succeeded < needed or candidate.succeeded < needed:
        detail = (
            f"candidate {candidate.succeeded} and stable {stable.succeeded} successful runs, "
            f"{needed} each needed"
        )
        return Measurement(name, None, "successes", "inconclusive", detail)
    mine = candidate.cost_usd / candidate.succeeded
    theirs = stable.cost_usd / stable.succeeded
    limit = theirs * (1 + analysis.max_cost_increase)
    shown = f"<= ${limit:.3g}"
    detail = (
        f"cost per successful run: candidate ${mine:.3g} vs stable ${theirs:.3g} (limit {shown})"
    )
    if mine > limit + _EPS * max(1.0, limit):  # a free stable arm makes any real cost a rise
        return Measurement(name, mine, shown, "fail", detail)
    return Measurement(name, mine, shown, "pass", detail)


def _relative(
    name: str,
    stable: float | None,
    candidate: float | None,
    increase: float,
    what: str,
    fmt: str,
    full: bool,
    waiting: str,
) -> Measurement:
    """Mean turns or p95 duration: the candidate may exceed the stable arm by ``increase``."""
    limit = None if stable is None else stable * (1 + increase)
    shown = "not measured" if limit is None else "<= " + fmt.format(limit)
    return _compare(
        name, stable, candidate, limit, shown, lambda c, lim: c <= lim * (1 + _EPS) + 1e-12,
        what, fmt, full, waiting, stable_enough=True, candidate_enough=True,
    )  # fmt: skip


def _drop(
    name: str,
    stable: tuple[float | None, int],
    candidate: tuple[float | None, int],
    drop: float,
    fmt: str,
    full: bool,
    waiting: str,
) -> Measurement:
    """A quality or coverage mean: the candidate may fall ``drop`` below the stable arm.

    Each mean needs ``MIN_SCORED_RUNS`` scored runs per arm; a mean of three scores says more
    about those three tasks than about the configuration.
    """
    (s_mean, s_n), (c_mean, c_n) = stable, candidate
    s_mean = s_mean if s_n > 0 else None
    c_mean = c_mean if c_n > 0 else None
    limit = None if s_mean is None else s_mean - drop
    shown = "not measured" if limit is None else ">= " + fmt.format(limit)
    return _compare(
        name, s_mean, c_mean, limit, shown, lambda c, lim: c >= lim - _EPS,
        f"mean {name} (candidate {c_n}, stable {s_n} scored runs)", fmt, full, waiting,
        stable_enough=s_n >= MIN_SCORED_RUNS, candidate_enough=c_n >= MIN_SCORED_RUNS,
    )  # fmt: skip


def _compare(
    name: str,
    stable: float | None,
    candidate: float | None,
    limit: float | None,
    shown: str,
    within: Callable[[float, float], bool],
    what: str,
    fmt: str,
    full: bool,
    waiting: str,
    *,
    stable_enough: bool,
    candidate_enough: bool,
) -> Measurement:
    """The shared order of a secondary measurement's decision.

    Nothing on either side: pass, "not measured" (the module docstring says why). Arms short of
    runs: inconclusive. No baseline on the stable side: pass, "not measured". A baseline but
    (too little of) nothing on the candidate's: inconclusive, since that absence may itself be
    the regression. Otherwise the limit decides.
    """

    def show(value: float | None) -> str:
        return "none" if value is None else fmt.format(value)

    seen = f"{what}: candidate {show(candidate)} vs stable {show(stable)}"
    if stable is None and candidate is None:
        return Measurement(name, None, shown, "pass", f"not measured: neither arm reported {name}")
    if not full:
        return Measurement(name, candidate, shown, "inconclusive", f"{waiting} ({seen})")
    if stable is None or limit is None or not stable_enough:
        detail = f"not measured: the stable arm has too little {name} to compare with ({seen})"
        return Measurement(name, candidate, shown, "pass", detail)
    if candidate is None or not candidate_enough:
        detail = f"the stable arm reports {name} and the candidate too little to judge ({seen})"
        return Measurement(name, candidate, shown, "inconclusive", detail)
    if within(candidate, limit):
        return Measurement(name, candidate, shown, "pass", f"{seen} (limit {shown})")
    return Measurement(name, candidate, shown, "fail", f"{seen} is beyond the limit {shown}")
