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

The guard's, gates' and throughput's metrics (PromQL, conditions, limits) are built in
:mod:`.argo_analysis`; here the ``Rollout`` and which templates each step references.
"""

from __future__ import annotations

import math

import yaml

from quarterdeck.exceptions import ValidationFailed

# API_VERSION and Doc re-exported: the AnalysisTemplates' metrics are built in argo_analysis.
from quarterdeck.rollouts.argo_analysis import API_VERSION as API_VERSION
from quarterdeck.rollouts.argo_analysis import (
    WEIGHT_ARG,
    analysis_template,
    duration,
    gate_metrics,
    guard_metrics,
    num,
    preview_metrics,
    throughput_metric,
)
from quarterdeck.rollouts.argo_analysis import Doc as Doc
from quarterdeck.rollouts.queries import POD_VERSION_LABEL
from quarterdeck.rollouts.spec import RolloutSpec

DEFAULT_PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"
ANNOTATION_PREFIX = "quarterdeck.dev/"


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
        templates = [analysis_template(names.preview, preview_metrics(spec, window), prometheus)]
        strategy: Doc = {"blueGreen": _blue_green(spec, stable, canary, names)}
        notes = {"strategy": "blue-green: the preview is analysed before the switch"}
    else:
        templates = [analysis_template(names.guard, guard_metrics(spec, count=None), prometheus)]
        for window in sorted({_step_window(spec, s.pause_s) for s in spec.steps}):
            templates.append(
                analysis_template(names.gate(window), gate_metrics(spec, window), prometheus)
            )
        use_nginx = spec.traffic in ("nginx", "auto")
        real = [_real_weight(step.weight, replicas, use_nginx) for step in spec.steps]
        if any(w < 100 for w in real):
            templates.append(
                analysis_template(
                    names.throughput, [throughput_metric(spec)], prometheus, weight_arg=True
                )
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
        return f"{self.target}-gate-{duration(window_s)}"


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
            steps.append({"pause": {"duration": duration(step.pause_s)}})
        window = _step_window(spec, step.pause_s)
        refs = [{"templateName": names.gate(window)}]
        args: list[Doc] = []
        if real < 100:
            refs.append({"templateName": names.throughput})
            args.append({"name": WEIGHT_ARG, "value": num(real)})
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
