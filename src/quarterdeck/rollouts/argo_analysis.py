"""The metrics of the exported Argo ``AnalysisTemplate`` documents: our gates as Argo measures.

Separate from :mod:`quarterdeck.rollouts.argo` because it is a different concern: ``argo.py``
shapes the ``Rollout`` (strategy, steps, services, which template each step references), while
this module translates the analysis rules of ``analysis.py`` into Argo metrics: PromQL wrapped
in ``scalar()``, the Wilson lower bound computed in PromQL, sample-size filters, and the success,
failure and inconclusive limits that make a guard fail fast only on clear evidence and a gate
pass only on enough (see ``argo.py``'s docstring for how each rule maps onto Argo's). A change
to a threshold's meaning lands here; a change to the manifest's layout lands there.
"""

from __future__ import annotations

import re
from typing import Any

from quarterdeck.rollouts.analysis import MIN_LATENCY_SAMPLES, MIN_THROUGHPUT_REQUESTS, Z_95
from quarterdeck.rollouts.queries import render_check, version_queries
from quarterdeck.rollouts.spec import MetricCheck, RolloutSpec

API_VERSION = "argoproj.io/v1alpha1"
_ADDRESS_ARG = "prometheus-address"
WEIGHT_ARG = "canary-weight"
_ADDRESS = "{{args.prometheus-address}}"  # Argo fills these in when it creates the run
_WEIGHT = "{{args.canary-weight}}"
_NEVER = "result < 0"  # counts, rates and latencies never are, and NaN compares false

Doc = dict[str, Any]


def analysis_template(
    name: str, metrics: list[Doc], prometheus: str, *, weight_arg: bool = False
) -> Doc:
    args: list[Doc] = [{"name": _ADDRESS_ARG, "value": prometheus}]
    if weight_arg:
        args.append({"name": WEIGHT_ARG})  # no default: each step passes its weight
    return {
        "apiVersion": API_VERSION,
        "kind": "AnalysisTemplate",
        "metadata": {"name": name},
        "spec": {"args": args, "metrics": metrics},
    }


def guard_metrics(spec: RolloutSpec, *, count: int | None) -> list[Doc]:
    """Fail fast, every interval, on clear evidence only (the controller's fail rules).

    The error rate fails when even its Wilson 95 % lower bound is over the limit (computed in
    PromQL, so one error in the first ten requests does not abort a good canary); the p95 only
    with ``MIN_LATENCY_SAMPLES`` requests behind it; a user check on its failure condition. No
    data is NaN, which fails nothing: passing is the step gate's job.
    """
    a = spec.analysis
    q = version_queries("canary", a.interval_s)
    enough = f"and on() {_at_least(q['requests'], MIN_LATENCY_SAMPLES)}"
    metrics = [
        _metric(
            "error-rate-bound",
            _wilson_lower_bound(_scalar(q["errors"]), _scalar(q["requests"])),
            spec,
            failure=f"result > {num(a.max_error_rate)}",
            count=count,
        ),
        _metric(
            "latency-p95-breach",
            _scalar(f"{q['latency_p95_s']} {enough}"),
            spec,
            failure=f"result > {num(a.max_latency_p95_s)}",
            count=count,
        ),
    ]
    for name, check in _named_checks(spec):
        if check.failure:
            query = _scalar(render_check(check.query, "canary"))
            metrics.append(
                _metric(f"{name}-failure", query, spec, failure=check.failure, count=count)
            )
    return metrics


def gate_metrics(spec: RolloutSpec, window_s: float) -> list[Doc]:
    """Pass a step only on enough evidence, else extend by one interval, then inconclusive.

    Each metric is measured up to ``max_extensions + 1`` times one interval apart; the first
    success completes it (``consecutiveSuccessLimit: 1``), ``inconclusiveLimit`` is the number
    of extensions. Built-in gates have a failure condition that never holds (failing is the
    guard's job), so they end Successful or Inconclusive, never Failed by a shortfall.
    """
    a = spec.analysis
    q = version_queries("canary", window_s)
    rate = f"{_scalar(q['errors'])} / {_scalar(q['requests'])}"
    metrics = [
        _gated("samples", _scalar(q["requests"]), spec, f"result >= {a.required_samples()}"),
        _gated("error-rate", rate, spec, f"result <= {num(a.max_error_rate)}"),
        _gated(
            "latency-p95",
            _scalar(q["latency_p95_s"]),
            spec,
            f"result <= {num(a.max_latency_p95_s)}",
        ),
    ]
    for name, check in _named_checks(spec):
        query = _scalar(render_check(check.query, "canary"))
        metrics.append(_gated(name, query, spec, check.success, failure=check.failure))
    return metrics


def _gated(
    name: str,
    query: str,
    spec: RolloutSpec,
    success: str | None,
    *,
    failure: str | None = _NEVER,
) -> Doc:
    a = spec.analysis
    limits: Doc = {"inconclusiveLimit": a.max_extensions}
    if success:  # without a success condition Argo's consecutiveSuccessLimit cannot be met
        limits["consecutiveSuccessLimit"] = 1
    count = a.max_extensions + 1
    return _metric(name, query, spec, success=success, failure=failure, count=count, limits=limits)


def throughput_metric(spec: RolloutSpec) -> Doc:
    """Per unit of weight, judged only with ``MIN_THROUGHPUT_REQUESTS`` on each side."""
    a = spec.analysis
    c = version_queries("canary", a.interval_s)
    s = version_queries("stable", a.interval_s)
    floor = MIN_THROUGHPUT_REQUESTS
    canary = _scalar(f"({c['rate_per_s']}) and on() {_at_least(c['requests'], floor)}")
    stable = _scalar(f"({s['rate_per_s']}) and on() {_at_least(s['requests'], floor)}")
    w = _WEIGHT
    query = f"({canary} / ({w} / 100)) / ({stable} / ((100 - {w}) / 100))"
    ratio = num(a.min_throughput_ratio)
    return _gated(
        "throughput-per-weight", query, spec, f"result >= {ratio}", failure=f"result < {ratio}"
    )


def preview_metrics(spec: RolloutSpec, window_s: float) -> list[Doc]:
    """Blue-green has one gate before the switch: the step gate plus the guards, bounded."""
    bound = spec.analysis.max_extensions + 1
    return [*gate_metrics(spec, window_s), *guard_metrics(spec, count=bound)]


def _named_checks(spec: RolloutSpec) -> list[tuple[str, MetricCheck]]:
    """``check-<slug>``, numbered on a clash: Argo needs metric names unique in a run."""
    out: list[tuple[str, MetricCheck]] = []
    seen: set[str] = set()
    for check in spec.analysis.checks:
        base = f"check-{_slug(check.name)}"
        name, n = base, 2
        while name in seen:
            name, n = f"{base}-{n}", n + 1
        seen.add(name)
        out.append((name, check))
    return out


def _wilson_lower_bound(errors: str, requests: str, z: float = Z_95) -> str:
    """``analysis.wilson_lower_bound`` in PromQL scalars (NaN with no requests)."""
    p = f"({errors} / {requests})"
    z2 = repr(z * z)
    centre = f"({p} + {z2} / (2 * {requests}))"
    radicand = f"({p} * (1 - {p}) / {requests} + {z2} / (4 * {requests} * {requests}))"
    margin = f"({z!r} * scalar(sqrt(vector{radicand})))"
    return f"scalar(clamp_min(vector(({centre} - {margin}) / (1 + {z2} / {requests})), 0))"


def _at_least(count_query: str, n: int) -> str:
    """A filter that keeps a series only when the count reached ``n`` (parenthesised: PromQL's
    ``>=`` binds tighter than the ``or vector(0)`` inside the count)."""
    return f"(({count_query}) >= {n})"


def _metric(
    name: str,
    query: str,
    spec: RolloutSpec,
    *,
    success: str | None = None,
    failure: str | None = None,
    count: int | None,
    limits: Doc | None = None,
) -> Doc:
    metric: Doc = {"name": name, "interval": duration(spec.analysis.interval_s)}
    if count is not None:
        metric["count"] = count
    if success:
        metric["successCondition"] = success
    if failure:
        metric["failureCondition"] = failure
    metric["failureLimit"] = 0  # Argo's default, said out loud: one failure aborts
    metric.update(limits or {})
    metric["provider"] = {"prometheus": {"address": _ADDRESS, "query": query}}
    return metric


def _scalar(query: str) -> str:
    return f"scalar({query.strip()})"


def duration(seconds: float) -> str:
    """Argo durations are Go duration strings: ``300s``, ``1.5s``."""
    return f"{num(seconds)}s"


def num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "unnamed"
