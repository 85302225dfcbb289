"""How a step's weight becomes traffic, and what weight the canary really gets.

Two ways to send a share of requests to the new version:

- **nginx**: a second, canary Ingress for the same host and path (ingress-nginx's canary
  annotations) with ``canary-weight: N``; the controller sends N % of random requests to the
  canary Service whatever the pod counts, so the step's weight is the real weight.
- **replicas**: no router; both versions sit behind one Service and kube-proxy spreads
  connections over pods, so the canary's share is its share of the pods. At the guide's three
  pods a "5 %" step cannot be 5 %: one canary pod beside three stable ones is 25 %. The status
  says so (``describe_split``) and the analysis normalises throughput by that real weight.

In both modes the pod counts follow Argo Rollouts when the stable side is left fully scaled
(``CalculateReplicaCountsForTrafficRoutedCanary`` without ``dynamicStableScale``): the canary
gets ``ceil(total * weight / 100)`` pods, at least one, and the stable side keeps all ``total``.
Why keep the stable side whole: rolling back is then only taking traffic (and pods) away from
the canary, at once, with the stable capacity already there; a stable side shrunk for a bad
canary would have to be scaled back up while users wait. The price, by replicas: until the last
(100 %) step the canary can never have more than half the pods, so an "80 %" step on 3 pods is
really 50 %, and the status says that too. At 100 % the canary takes all the traffic, so the
stable side has no pods in the split (its Deployment may be kept for the soak, out of rotation).
"""

from __future__ import annotations

import math

CANARY_ANNOTATION = "nginx.ingress.kubernetes.io/canary"
CANARY_WEIGHT_ANNOTATION = "nginx.ingress.kubernetes.io/canary-weight"


def _check_weight(weight: int) -> None:
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
        raise ValueError(f"weight must be a whole percentage in 0..100, got {weight!r}")


def replica_split(total: int, weight: int) -> tuple[int, int]:
    """``(canary pods, stable pods)`` for a step of ``weight`` % over ``total`` pods.

    The canary gets ``ceil(total * weight / 100)`` pods, at least one when ``weight > 0`` (a
    canary with no pod gets no traffic and proves nothing), all ``total`` at 100 %; the stable
    side keeps ``total`` pods below 100 % and none at 100 %.
    """
    _check_weight(weight)
    if total < 0:
        raise ValueError(f"total pods must be >= 0, got {total}")
    if total == 0:
        return 0, 0
    if weight == 0:
        return 0, total
    if weight == 100:
        return total, 0
    return max(1, math.ceil(total * weight / 100)), total


def effective_weight(canary_pods: int, stable_pods: int) -> float:
    """The percentage of traffic the canary gets when traffic follows pods (0 with no pods)."""
    if canary_pods < 0 or stable_pods < 0:
        raise ValueError("pod counts must be >= 0")
    pods = canary_pods + stable_pods
    return 100.0 * canary_pods / pods if pods else 0.0


def nginx_canary_annotations(weight: int) -> dict[str, str]:
    """The annotations of the canary Ingress at ``weight`` %.

    Values are strings, as Kubernetes annotations must be. Weight 0 keeps the Ingress marked
    as a canary with ``canary-weight: "0"``: the ingress-nginx docs say a weight of 0 sends no
    requests to the canary's Service by this rule, which is what a rollback wants, and leaving
    ``canary: "true"`` in place means the Ingress never turns into a second primary Ingress for
    the same host and path (Argo's nginx router does the same on abort: weight 0, still a
    canary).
    """
    _check_weight(weight)
    return {CANARY_ANNOTATION: "true", CANARY_WEIGHT_ANNOTATION: str(weight)}


def _percent(value: float) -> str:
    return f"{value:.0f} %" if abs(value - round(value)) < 0.05 else f"{value:.1f} %"


def describe_split(mode: str, weight: int, total: int) -> str:
    """One line for the status saying how a step is carried out and the weight it really gets,
    e.g. ``"replicas: 1 canary of 4 pods, really 25 % for a 5 % step"``."""
    canary, stable = replica_split(total, weight)
    pods = f"{canary} canary of {canary + stable} pods"
    if mode == "nginx":
        return f"nginx: canary-weight {weight} % of requests ({pods})"
    if mode == "replicas":
        real = effective_weight(canary, stable)
        if abs(real - weight) < 0.05:
            return f"replicas: {pods}, {_percent(real)} as asked"
        return f"replicas: {pods}, really {_percent(real)} for a {weight} % step"
    raise ValueError(
        f"traffic mode must be nginx or replicas (auto is resolved first), not {mode!r}"
    )
