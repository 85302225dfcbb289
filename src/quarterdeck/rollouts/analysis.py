"""The judgement of one analysis interval of a canary step: pass, fail or inconclusive.

Pure: it takes what the per-version queries measured (``queries.py``) and the spec's limits and
returns a verdict with every measurement, its value and its limit, so the rollout's status can
say *which* number failed and by how much (Flagger users asked for exactly that, fluxcd/flagger
#1810). The controller maps the verdict as Argo does: pass continues, fail rolls back,
inconclusive extends the step (up to ``Analysis.max_extensions``) and then pauses for a person.
A step is never passed on too little evidence; that is the guide's mistake this module exists
to fix (it passed a step on any handful of requests).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from quarterdeck.rollouts.conditions import evaluate
from quarterdeck.rollouts.spec import Analysis, MetricCheck

Verdict = Literal["pass", "fail", "inconclusive"]

Z_95 = 1.959963984540054  # the 95 % Wilson interval's half-width in standard errors
MIN_LATENCY_SAMPLES = 20  # below this a "p95" is one of the slowest few requests, not a tail
MIN_THROUGHPUT_REQUESTS = 20  # per side; below it a rate is mostly Poisson noise

_NO_CHECKS: Mapping[str, float | None] = MappingProxyType({})


@dataclass(frozen=True)
class VersionSample:
    """What one version (stable or canary) did in the analysis window."""

    requests: int  # finished in the window (success or error)
    errors: int
    latency_p95_s: float | None
    rate_per_s: float | None  # throughput


@dataclass(frozen=True)
class Measurement:
    name: str
    value: float | None
    limit: str
    verdict: Verdict
    detail: str


@dataclass(frozen=True)
class AnalysisResult:
    verdict: Verdict
    measurements: tuple[Measurement, ...]
    reason: str
    samples: int  # canary requests in the window
    required: int  # canary requests a pass needs (Analysis.required_samples)


def wilson_lower_bound(errors: int, requests: int, z: float = Z_95) -> float:
    """The lower end of the Wilson score interval for ``errors / requests``.

    Why Wilson and not ``p - z·se``: the normal approximation is useless exactly where a canary
    is judged, at small ``n`` and rates near 0 or 1 (it goes below zero, and at 5 of 10 it is
    too generous); Wilson's interval stays inside [0, 1] and is accurate down to a few samples.
    """
    if requests <= 0 or errors <= 0:
        return 0.0  # exactly: no error seen bounds nothing from below (the formula leaves 1e-19)
    n = float(requests)
    p = errors / n
    z2 = z * z
    centre = p + z2 / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, (centre - margin) / (1 + z2 / n))


def judge(
    analysis: Analysis,
    *,
    weight: float,
    stable: VersionSample,
    canary: VersionSample,
    checks: Mapping[str, float | None] = _NO_CHECKS,
) -> AnalysisResult:
    """Judge one interval: any measurement failing fails it, all passing passes it, else
    inconclusive.

    ``weight`` is the percentage of traffic the canary *really* gets: the step's weight behind
    an nginx canary Ingress, ``traffic.effective_weight`` when traffic follows replicas (a "5 %"
    step on 3 pods is really 25 %, and normalising by 5 would call a healthy canary five times
    too fast). ``checks`` holds each user check's scalar result by name (``None`` when the query
    returned nothing).
    """
    if not 0 <= weight <= 100:
        raise ValueError(f"weight must be a percentage in 0..100, got {weight}")
    canary = _sane(canary)
    stable = _sane(stable)
    required = analysis.required_samples()
    measurements = (
        _error_rate(analysis, canary, required),
        _latency(analysis, canary),
        _throughput(analysis, weight / 100.0, stable, canary),
        *(_check(check, checks.get(check.name)) for check in analysis.checks),
    )
    verdict: Verdict
    failed = [m for m in measurements if m.verdict == "fail"]
    open_ = [m for m in measurements if m.verdict == "inconclusive"]
    if failed:
        verdict, reason = "fail", "; ".join(f"{m.name}: {m.detail}" for m in failed)
    elif open_:
        verdict, reason = "inconclusive", "; ".join(f"{m.name}: {m.detail}" for m in open_)
    else:
        verdict = "pass"
        reason = f"all {len(measurements)} measurements passed on {canary.requests} samples"
    return AnalysisResult(verdict, measurements, reason, canary.requests, required)


def _pct(fraction: float) -> str:
    """``0.0123`` as ``"1.23 %"``, ``0.01`` as ``"1 %"``."""
    return f"{fraction * 100:.2f}".rstrip("0").rstrip(".") + " %"


def _sane(sample: VersionSample) -> VersionSample:
    """Clamp counts into ``0 <= errors <= requests``.

    Why: ``increase()`` extrapolates and the two counts come from two queries evaluated a moment
    apart, so a window can read one more error than requests; judging 3 errors in 2 requests as
    a 150 % error rate would be noise, not evidence.
    """
    requests = max(0, int(sample.requests))
    errors = min(max(0, int(sample.errors)), requests)
    if requests == sample.requests and errors == sample.errors:
        return sample
    return VersionSample(requests, errors, sample.latency_p95_s, sample.rate_per_s)


def _error_rate(analysis: Analysis, canary: VersionSample, required: int) -> Measurement:
    """Fail early on clear evidence, pass only on enough evidence.

    Fail as soon as the Wilson 95 % lower bound of the canary's error rate exceeds the limit:
    then even the most charitable reading of what was seen is over the limit, so a canary
    failing half its runs is rolled back after about ten samples, within one interval, instead
    of hurting users until the full sample is in. (The interval is two-sided, so the bound is
    a 97.5 % one-sided one: the check repeats every interval, and the stricter bound keeps
    those repeated looks from rolling back a good canary by chance.)

    Pass only with ``required`` samples (the rule of three: no error in ``n`` bounds the rate at
    ``3/n`` with 95 % confidence, so proving 1 % takes 300) and the observed rate within the
    limit. Anything between is inconclusive, saying how far the sample has got.
    """
    limit = analysis.max_error_rate
    n, e = canary.requests, canary.errors
    shown = f"<= {_pct(limit)}"
    if n == 0:
        return Measurement("error-rate", None, shown, "inconclusive", f"0 of {required} samples")
    rate = e / n
    low = wilson_lower_bound(e, n)
    seen = f"{e} errors in {n} requests ({_pct(rate)})"
    if low > limit:
        detail = f"{seen}; even its 95 % lower bound {_pct(low)} is above {_pct(limit)}"
        return Measurement("error-rate", rate, shown, "fail", detail)
    if n < required:
        detail = f"{n} of {required} samples ({seen})"
        return Measurement("error-rate", rate, shown, "inconclusive", detail)
    if rate > limit:
        detail = (
            f"{seen} is above {_pct(limit)}, but not conclusively (95 % lower bound {_pct(low)})"
        )
        return Measurement("error-rate", rate, shown, "inconclusive", detail)
    return Measurement("error-rate", rate, shown, "pass", f"{seen} on {n} of {required} samples")


def _latency(analysis: Analysis, canary: VersionSample) -> Measurement:
    """p95, not the guide's average: an average hides the slow tail users feel.

    A p95 needs some requests to mean anything: with fewer than ``MIN_LATENCY_SAMPLES`` it is
    one of the slowest few, so it neither fails nor passes. No data (``histogram_quantile`` over
    no requests is NaN) is inconclusive, never a pass (Flagger's silently passing checks,
    fluxcd/flagger#1581).
    """
    limit = analysis.max_latency_p95_s
    shown = f"<= {limit:g} s"
    p95 = canary.latency_p95_s
    if p95 is None or math.isnan(p95):
        return Measurement("latency-p95", None, shown, "inconclusive", "no latency data")
    seen = f"p95 {p95:.3g} s over {canary.requests} requests"
    if canary.requests < MIN_LATENCY_SAMPLES:
        detail = f"{seen}, needs at least {MIN_LATENCY_SAMPLES}"
        return Measurement("latency-p95", p95, shown, "inconclusive", detail)
    if p95 > limit:
        return Measurement("latency-p95", p95, shown, "fail", f"{seen} is above {limit:g} s")
    return Measurement("latency-p95", p95, shown, "pass", seen)


def _throughput(
    analysis: Analysis, w: float, stable: VersionSample, canary: VersionSample
) -> Measurement:
    """The canary's throughput per unit of weight against the stable side's.

    ``(canary_rate / w) / (stable_rate / (1 - w))``: a healthy canary at 5 % serves 5 % of the
    requests, so the guide's raw ratio reads about 0.05 and fails every healthy canary below
    80 % weight. Per unit of weight a healthy canary reads about 1, and one that drops or
    refuses work reads low. It fails only when both sides served enough requests for their
    rates to mean something; at 100 % there is no stable side left to compare with.
    """
    limit = analysis.min_throughput_ratio
    shown = f">= {limit:g}"
    if w >= 1.0:
        return Measurement("throughput", None, shown, "pass", "skipped: no stable side at 100 %")
    if w <= 0.0:
        return Measurement("throughput", None, shown, "inconclusive", "no canary traffic at 0 %")
    c, s = canary.rate_per_s, stable.rate_per_s
    if c is None or s is None or math.isnan(c) or math.isnan(s):
        return Measurement("throughput", None, shown, "inconclusive", "no throughput data")
    if s <= 0:
        return Measurement("throughput", None, shown, "inconclusive", "stable side served nothing")
    ratio = (c / w) / (s / (1.0 - w))
    seen = (
        f"{ratio:.2f} per unit of weight (canary {c:.3g}/s at {_pct(w)}, "
        f"stable {s:.3g}/s at {_pct(1 - w)})"
    )
    fewest = min(canary.requests, stable.requests)
    if fewest < MIN_THROUGHPUT_REQUESTS:
        detail = (
            f"{seen}; too little traffic to judge ({canary.requests} canary, "
            f"{stable.requests} stable requests, needs {MIN_THROUGHPUT_REQUESTS} each)"
        )
        return Measurement("throughput", ratio, shown, "inconclusive", detail)
    if ratio < limit:
        return Measurement("throughput", ratio, shown, "fail", f"{seen} is below {limit:g}")
    return Measurement("throughput", ratio, shown, "pass", seen)


def _check(check: MetricCheck, value: float | None) -> Measurement:
    """A user's query, judged as Argo Rollouts judges a metric's conditions.

    Both conditions: the failure one wins, then the success one, neither is inconclusive. Only a
    success condition: met passes, unmet fails. Only a failure condition: met fails, unmet
    passes. (So ``argo.py``'s export means the same thing in Argo.)

    No value (the query returned nothing, or NaN) is inconclusive rather than judged, because a
    condition like ``result < 0.05`` would otherwise pass on a query that matched no series. A
    condition that does not parse (the spec is validated on submit, so only a stored spec from
    an older grammar could) is inconclusive too: a person looks, the controller does not crash.
    """
    given = (("success", check.success), ("failure", check.failure))
    shown = "; ".join(f"{kind}: {text}" for kind, text in given if text) or "no condition"
    if value is None or math.isnan(value):
        return Measurement(check.name, None, shown, "inconclusive", "query returned no value")
    try:
        failed = bool(check.failure) and evaluate(check.failure or "", value)
        succeeded = bool(check.success) and evaluate(check.success or "", value)
    except ValueError as exc:
        return Measurement(check.name, value, shown, "inconclusive", str(exc))
    if failed:
        return Measurement(check.name, value, shown, "fail", f"{value:g} meets the failure")
    if succeeded:
        return Measurement(check.name, value, shown, "pass", f"{value:g} meets the success")
    if check.success and not check.failure:
        return Measurement(check.name, value, shown, "fail", f"{value:g} misses the success")
    if check.failure and not check.success:
        return Measurement(check.name, value, shown, "pass", f"{value:g} avoids the failure")
    detail = f"{value:g} meets neither condition" if shown != "no condition" else "no condition"
    return Measurement(check.name, value, shown, "inconclusive", detail)
