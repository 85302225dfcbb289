"""``rollout export --format argo``: the same rollout as Argo Rollouts manifests (issue 20).

Why export at all: teams that already run Argo Rollouts should get the plan and the gates they
tuned here (steps, thresholds, the sample-size rule) without retyping them, and without
rewriting their pod template: the ``Rollout`` points at the existing Deployment through
``workloadRef`` (Argo's documented migration path, ``docs/migrating.md``).

How our rules map onto Argo's (argoproj/argo-rollouts docs and code, PROVENANCE in tests):

- Queries are wrapped in PromQL ``scalar(...)``: Argo evaluates a Scalar response as a number
  and a Vector as a list, and our condition grammar (``conditions.py``) is a subset of Argo's
  expr language on a number, so user checks are copied as written and the built-in ones read
  ``result > 0.01``. No data is NaN, and every comparison with NaN is false in both.
- The *guard* (background analysis, every interval, ``failureLimit: 0``: Argo fails when
  ``failed > failureLimit``, so one failed measurement aborts) fails fast only on clear
  evidence, as the controller does: the Wilson 95 % lower bound of the error rate over the
  limit, a p95 over the limit with enough requests behind it, a user check's failure.
- The *gate* (an ``analysis`` step after each pause) passes a step only on enough evidence:
  samples (rule of three), error rate and p95 within limits, user checks; throughput per unit of
  weight below 100 %. "Extend, then pause": ``count = max_extensions + 1`` measurements one
  interval apart, ``consecutiveSuccessLimit: 1`` (Argo >= 1.8), ``inconclusiveLimit =
  max_extensions`` (Inconclusive when ``inconclusive > inconclusiveLimit``, and an Inconclusive
  run pauses the rollout for a person); the built-in failure condition never holds, so a
  shortfall is never a failure and never a pass.
- Blue-green has no weights: one bounded gate-plus-guard before the switch
  (``prePromotionAnalysis``), the soak as ``scaleDownDelaySeconds``.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

from quarterdeck.exceptions import ValidationFailed
from quarterdeck.rollouts.analysis import MIN_LATENCY_SAMPLES, MIN_THROUGHPUT_REQUESTS, Z_95
from quarterdeck.rollouts.queries import POD_VERSION_LABEL, render_check, version_queries
from quarterdeck.rollouts.spec import MetricCheck, RolloutSpec

API_VERSION = "argoproj.io/v1alpha1"
DEFAULT_PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"
ANNOTATION_PREFIX = "quarterdeck.dev/"
_ADDRESS_ARG = "prometheus-address"
_WEIGHT_ARG = "canary-weight"
_ADDRESS = "{{args.prometheus-address}}"  # Argo fills these in when it creates the run
_WEIGHT = "{{args.canary-weight}}"
_NEVER = "result < 0"  # counts, rates and latencies never are, and NaN compares false

Doc = dict[str, Any]


def export_argo(
    spec: RolloutSpec,
    *,
    namespace: str = "ai-agents",
    stable_service: str | None = None,
    canary_service: str | None = None,
    ingress: str | None = None,
    replicas: int = 3,
    prometheus: str = DEFAULT_PROMETHEUS,
) -> list[Doc]:
    """The ``Rollout`` first, then the ``AnalysisTemplate`` documents it references.

    Services default to ``<target>`` (stable, also blue-green's active) and ``<target>-canary``
    (canary, also the preview); the ingress defaults to ``<target>``; ``replicas`` is the
    Rollout's own (Argo does not read the Deployment's). Raises ``ValidationFailed`` for a spec
    that :meth:`RolloutSpec.validate` rejects.
    """
    try:
        spec.validate()
        if replicas < 1:
            raise ValueError("replicas must be >= 1")
    except ValueError as exc:
        raise ValidationFailed(f"cannot export: {exc}") from exc
    stable = stable_service or spec.target
    canary = canary_service or f"{spec.target}-canary"
    names = _Names(spec.target)
    if spec.strategy == "blue-green":
        window = _step_window(spec, spec.steps[0].pause_s)
        templates = [_template(names.preview, _preview_metrics(spec, window), prometheus)]
        strategy: Doc = {"blueGreen": _blue_green(spec, stable, canary, names)}
        notes = {"strategy": "blue-green: the preview is analysed before the switch"}
    else:
        templates = [_template(names.guard, _guard_metrics(spec, count=None), prometheus)]
        for window in sorted({_step_window(spec, s.pause_s) for s in spec.steps}):
            templates.append(_template(names.gate(window), _gate_metrics(spec, window), prometheus))
        use_nginx = spec.traffic in ("nginx", "auto")
        real = [_real_weight(step.weight, replicas, use_nginx) for step in spec.steps]
        if any(w < 100 for w in real):
            templates.append(
                _template(names.throughput, [_throughput_metric(spec)], prometheus, weight_arg=True)
            )
        strategy = {"canary": _canary(spec, stable, canary, ingress, names, real, use_nginx)}
        notes = {"traffic": _traffic_note(spec, replicas, use_nginx)}
    rollout: Doc = {
        "apiVersion": API_VERSION,
        "kind": "Rollout",
        "metadata": {
            "name": spec.target,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "quarterdeck-export"},
            "annotations": {
                f"{ANNOTATION_PREFIX}{key}": value
                for key, value in [
                    *notes.items(),
                    ("image", f"{spec.image} (set it on the Deployment to start the rollout)"),
                    ("spec-hash", spec.spec_hash()),
                ]
            },
        },
        "spec": {
            "replicas": replicas,
            "workloadRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": spec.target,
                "scaleDown": "onsuccess",
            },
            "strategy": strategy,
        },
    }
    for template in templates:
        template["metadata"]["namespace"] = namespace
    return [rollout, *templates]


def to_yaml(docs: list[Doc]) -> str:
    """A multi-document YAML stream, keys in the order built (apiVersion, kind, ... first)."""
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)


class _Names:
    def __init__(self, target: str) -> None:
        self.target = target
        self.guard = f"{target}-guard"
        self.throughput = f"{target}-throughput"
        self.preview = f"{target}-preview"

    def gate(self, window_s: float) -> str:
        return f"{self.target}-gate-{_duration(window_s)}"


def _canary(
    spec: RolloutSpec,
    stable: str,
    canary: str,
    ingress: str | None,
    names: _Names,
    real_weights: list[float],
    use_nginx: bool,
) -> Doc:
    """Per step: set the weight, pause, then the step gate (and throughput below 100 %)."""
    steps: list[Doc] = []
    for step, real in zip(spec.steps, real_weights, strict=True):
        steps.append({"setWeight": step.weight})
        if step.pause_s is None:
            steps.append({"pause": {}})
        elif step.pause_s > 0:
            steps.append({"pause": {"duration": _duration(step.pause_s)}})
        window = _step_window(spec, step.pause_s)
        refs = [{"templateName": names.gate(window)}]
        args: list[Doc] = []
        if real < 100:
            refs.append({"templateName": names.throughput})
            args.append({"name": _WEIGHT_ARG, "value": _num(real)})
        analysis: Doc = {"templates": refs}
        if args:
            analysis["args"] = args
        steps.append({"analysis": analysis})
    out: Doc = {
        "canaryService": canary,
        "stableService": stable,
        "canaryMetadata": {"labels": {POD_VERSION_LABEL: "canary"}},
        "stableMetadata": {"labels": {POD_VERSION_LABEL: "stable"}},
        "analysis": {"templates": [{"templateName": names.guard}]},
        "steps": steps,
    }
    if use_nginx:
        out["trafficRouting"] = {"nginx": {"stableIngress": ingress or spec.target}}
        # Argo allows the canary's scaleDownDelaySeconds only with traffic routing.
        out["scaleDownDelaySeconds"] = math.ceil(spec.stable_soak_s)
    return out


def _blue_green(spec: RolloutSpec, stable: str, canary: str, names: _Names) -> Doc:
    return {
        "activeService": stable,
        "previewService": canary,
        "activeMetadata": {"labels": {POD_VERSION_LABEL: "stable"}},
        "previewMetadata": {"labels": {POD_VERSION_LABEL: "canary"}},
        # A manual pause anywhere in the plan means a person promotes.
        "autoPromotionEnabled": all(s.pause_s is not None for s in spec.steps),
        "scaleDownDelaySeconds": math.ceil(spec.stable_soak_s),
        "prePromotionAnalysis": {"templates": [{"templateName": names.preview}]},
    }


def _template(name: str, metrics: list[Doc], prometheus: str, *, weight_arg: bool = False) -> Doc:
    args: list[Doc] = [{"name": _ADDRESS_ARG, "value": prometheus}]
    if weight_arg:
        args.append({"name": _WEIGHT_ARG})  # no default: each step passes its weight
    return {
        "apiVersion": API_VERSION,
        "kind": "AnalysisTemplate",
        "metadata": {"name": name},
        "spec": {"args": args, "metrics": metrics},
    }


def _guard_metrics(spec: RolloutSpec, *, count: int | None) -> list[Doc]:
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
            failure=f"result > {_num(a.max_error_rate)}",
            count=count,
        ),
        _metric(
            "latency-p95-breach",
            _scalar(f"{q['latency_p95_s']} {enough}"),
            spec,
            failure=f"result > {_num(a.max_latency_p95_s)}",
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


def _gate_metrics(spec: RolloutSpec, window_s: float) -> list[Doc]:
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
        _gated("error-rate", rate, spec, f"result <= {_num(a.max_error_rate)}"),
        _gated(
            "latency-p95",
            _scalar(q["latency_p95_s"]),
            spec,
            f"result <= {_num(a.max_latency_p95_s)}",
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


def _throughput_metric(spec: RolloutSpec) -> Doc:
    """Per unit of weight, judged only with ``MIN_THROUGHPUT_REQUESTS`` on each side."""
    a = spec.analysis
    c = version_queries("canary", a.interval_s)
    s = version_queries("stable", a.interval_s)
    floor = MIN_THROUGHPUT_REQUESTS
    canary = _scalar(f"({c['rate_per_s']}) and on() {_at_least(c['requests'], floor)}")
    stable = _scalar(f"({s['rate_per_s']}) and on() {_at_least(s['requests'], floor)}")
    w = _WEIGHT
    query = f"({canary} / ({w} / 100)) / ({stable} / ((100 - {w}) / 100))"
    ratio = _num(a.min_throughput_ratio)
    return _gated(
        "throughput-per-weight", query, spec, f"result >= {ratio}", failure=f"result < {ratio}"
    )


def _preview_metrics(spec: RolloutSpec, window_s: float) -> list[Doc]:
    """Blue-green has one gate before the switch: the step gate plus the guards, bounded."""
    bound = spec.analysis.max_extensions + 1
    return [*_gate_metrics(spec, window_s), *_guard_metrics(spec, count=bound)]


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
    metric: Doc = {"name": name, "interval": _duration(spec.analysis.interval_s)}
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


def _traffic_note(spec: RolloutSpec, replicas: int, use_nginx: bool) -> str:
    if use_nginx:
        return "nginx: Argo sets canary-weight on a copy of the stable ingress"
    shares = ", ".join(
        f"{s.weight}% -> {_canary_pods(s.weight, replicas)}/{replicas} pods" for s in spec.steps
    )
    return (
        "replica ratio: no traffic router, so Argo approximates each weight by the share of "
        f"canary pods ({shares}); a true small weight needs nginx or more replicas"
    )


def _real_weight(weight: int, replicas: int, use_nginx: bool) -> float:
    """The canary's real share of traffic: the weight behind nginx, else its share of pods.

    Throughput is normalised by this (``analysis.judge`` does the same): normalising a canary
    that really takes 33 % by 5 would call a healthy one almost seven times too fast.
    """
    if use_nginx or weight >= 100:
        return float(weight)
    canary = _canary_pods(weight, replicas)
    return round(100.0 * canary / replicas, 2)


def _canary_pods(weight: int, replicas: int) -> int:
    """Nearest whole pod, ties up, at least one (Argo's basic canary, surge ignored)."""
    return min(replicas, max(1, math.floor(replicas * weight / 100 + 0.5)))


def _step_window(spec: RolloutSpec, pause_s: float | None) -> float:
    """The samples window: the step's own pause, or one interval after a manual pause."""
    if pause_s is None or pause_s <= 0:
        return spec.analysis.interval_s
    return pause_s


def _scalar(query: str) -> str:
    return f"scalar({query.strip()})"


def _duration(seconds: float) -> str:
    """Argo durations are Go duration strings: ``300s``, ``1.5s``."""
    return f"{_num(seconds)}s"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "unnamed"
