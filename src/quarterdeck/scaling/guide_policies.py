"""The reference guide's two scaling policies, reproduced faithfully — mistakes included.

Why keep them: the simulator compares Quarterdeck's policy against what the guide ships, so these
must behave as the guide's configuration and code behave, not as they should.  Each mistake is
kept on purpose and named here so nobody "fixes" it:

``guide-hpa`` — the guide's ``HorizontalPodAutoscaler`` (autoscaling/v2) run through the HPA v2
algorithm (``horizontal.go``/``replica_calculator.go``): CPU 70 %, memory 80 %, a Pods metric
``claude_agent_requests_per_second`` at 10 per pod, min 3, max 20, tolerance 0.1, a 15 s sync
period; ``scaleUp`` stabilized for **300 s** (the mistake: a burst must last ~5 min before any
scale-out) with the policies Percent 100 %/15 s and Pods 4/15 s (``selectPolicy: Max``);
``scaleDown`` stabilized for 300 s with Percent 10 %/60 s (truncating: 20→3 takes 12 periods).
Simplifications, since an observation carries pool means rather than per-pod samples: the metric
mean is taken over the ready pods (``ready`` when known, else ``replicas``), and the HPA's
missing-pod and CPU-initialization adjustments are not modelled.  ``cpu_ratio``/``memory_ratio``
stand for utilization of the *request* (the HPA's unit); they are ratios of the limit, equal when
requests equal limits.

``guide-pressure`` — the guide's ``AdaptiveAgentScaler``: every 30 s it sums six binary factors
(CPU > 0.7, memory > 0.8, queue > 50, p95 > 10 s, error rate > 5 %, request rate > 100); a score
≥ 3 sets ``min(ceil(replicas * 1.5), 20)``, a score of 0 with more than 3 replicas sets
``max(floor(replicas * 0.8), 3)``.  Kept mistakes: the memory factor compares
``container_memory_usage_bytes`` (bytes) with 0.8, so it is on whenever memory is reported; a
metric the query does not return reads as ``0`` (``|| '0'``), so missing data looks idle; errors
add pressure, so it scales out into a failing provider; no tolerance, no cooldown, no
stabilization.  Its CPU query yields cores, compared with 0.7; ``cpu_ratio`` stands in for it
(equal with a one-core limit).  It patches ``spec.replicas`` while the HPA does too — the fight is
the simulator's to model, not this policy's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from quarterdeck.scaling.policy import (
    Decision,
    FactorValue,
    Observation,
    ScalerConfig,
    StabilizationWindow,
    within_tolerance,
)

__all__ = [
    "GUIDE_MAX_REPLICAS",
    "GUIDE_MIN_REPLICAS",
    "GuideHpaPolicy",
    "GuidePressurePolicy",
    "RatePolicy",
]

GUIDE_MIN_REPLICAS = 3
GUIDE_MAX_REPLICAS = 20


@dataclass(frozen=True, slots=True)
class RatePolicy:
    """One HPA ``behavior`` policy: at most ``value`` pods or percent per ``period_s``."""

    kind: str  # "Pods" or "Percent"
    value: int
    period_s: float


class GuideHpaPolicy:
    """The guide's HPA, as the HPA v2 controller would run it (see the module docstring)."""

    name = "guide-hpa"
    sync_period_s = 15.0  # --horizontal-pod-autoscaler-sync-period
    tolerance = 0.1  # --horizontal-pod-autoscaler-tolerance
    cpu_target = 0.70
    memory_target = 0.80
    rps_per_pod_target = 10.0
    min_replicas = GUIDE_MIN_REPLICAS
    max_replicas = GUIDE_MAX_REPLICAS
    scale_up_window_s = 300.0  # the guide's; the HPA default is 0
    scale_down_window_s = 300.0
    scale_up_policies = (RatePolicy("Percent", 100, 15.0), RatePolicy("Pods", 4, 15.0))
    scale_down_policies = (RatePolicy("Percent", 10, 60.0),)

    def __init__(self, config: ScalerConfig | None = None) -> None:
        if config is not None:
            config.validate()  # accepted for a uniform factory; the guide's numbers rule
        self._up = StabilizationWindow(self.scale_up_window_s)
        self._down = StabilizationWindow(self.scale_down_window_s)
        self._events: list[tuple[float, int]] = []  # (at, replica change), + up, - down
        self._last_sync: float | None = None

    def decide(self, obs: Observation) -> Decision:
        """One HPA sync; between syncs (every 15 s) it holds."""
        current = obs.replicas
        factors: dict[str, FactorValue] = {
            "replicas": current,
            "ready": obs.ready,
            "cpu_ratio": obs.cpu_ratio,
            "memory_ratio": obs.memory_ratio,
            "requests_per_s": obs.requests_per_s,
        }
        if self._last_sync is not None and obs.at - self._last_sync < self.sync_period_s:
            factors["synced"] = False
            return self._out(obs, current, f"hold at {current}: between HPA syncs.", factors)
        self._last_sync = obs.at
        factors["synced"] = True
        self._up.seed(obs.at, current)  # the HPA seeds its one list, which both windows read
        self._down.seed(obs.at, current)

        if current == 0:
            why = "hold at 0: replicas set to 0 disable the HPA (ScalingActive=False)."
            return self._out(obs, 0, why, factors)
        if current > self.max_replicas or current < self.min_replicas:
            desired = min(max(current, self.min_replicas), self.max_replicas)
            why = f"set {current}→{desired}: outside the HPA's {self.min_replicas}..{self.max_replicas}."
            return self._record(obs, desired, why, factors)

        proposals = self._proposals(obs, factors)
        valid = [p for p in proposals if p is not None]
        invalid = len(proposals) - len(valid)
        factors["invalid_metrics"] = invalid
        if not valid:
            return self._out(obs, current, f"hold at {current}: every metric is missing.", factors)
        raw = max(valid)
        factors["raw_recommendation"] = raw
        if invalid and raw < current:
            why = f"hold at {current}: a metric is missing and the others suggest scaling down."
            return self._out(obs, current, why, factors)

        # Stabilization (horizontal.go, stabilizeRecommendationWithBehaviors).
        self._up.add(obs.at, raw)
        self._down.add(obs.at, raw)
        up_bound, down_bound = self._up.lowest(), self._down.highest()
        stabilized = max(current, up_bound)
        stabilized = min(stabilized, down_bound)
        factors.update(window_up_min=up_bound, window_down_max=down_bound, stabilized=stabilized)

        desired, limit = self._rate_limit(obs.at, current, stabilized)
        factors["rate_limit"] = limit
        if desired > current:
            why = f"scale up {current}→{desired}: the lowest recommendation of the last "
            why += f"{self.scale_up_window_s:g} s is {up_bound}"
        elif desired < current:
            why = f"scale down {current}→{desired}: the highest recommendation of the last "
            why += f"{self.scale_down_window_s:g} s is {down_bound}"
        elif raw > current:
            why = f"hold at {current}: {raw} wanted, but the {self.scale_up_window_s:g} s "
            why += f"scale-up window still holds {up_bound}"
        elif raw < current:
            why = f"hold at {current}: {raw} wanted, but the {self.scale_down_window_s:g} s "
            why += f"scale-down window still holds {down_bound}"
        else:
            why = f"hold at {current}: every metric is within tolerance of its target"
        if limit is not None and desired != stabilized:
            why += f" (rate limited to {limit})"
        return self._record(obs, desired, why + ".", factors)

    def _proposals(self, obs: Observation, factors: dict[str, FactorValue]) -> list[int | None]:
        """``ceil(ratio * ready pods)`` per metric, or ``None`` when the metric is missing."""
        pods = obs.ready if obs.ready is not None else obs.replicas
        factors["metric_pods"] = pods
        rps_per_pod = None
        if obs.requests_per_s is not None and pods > 0:
            rps_per_pod = obs.requests_per_s / pods
        metrics = (
            ("cpu", obs.cpu_ratio, self.cpu_target),
            ("memory", obs.memory_ratio, self.memory_target),
            ("rps", rps_per_pod, self.rps_per_pod_target),
        )
        out: list[int | None] = []
        for label, value, target in metrics:
            if value is None or pods <= 0:
                factors[f"{label}_proposal"] = None
                out.append(None)
                continue
            ratio = value / target
            proposal = (
                obs.replicas
                if within_tolerance(obs.replicas, ratio, self.tolerance)
                else math.ceil(ratio * pods)
            )
            factors[f"{label}_usage_ratio"] = ratio
            factors[f"{label}_proposal"] = proposal
            out.append(proposal)
        return out

    def _rate_limit(self, at: float, current: int, desired: int) -> tuple[int, int | None]:
        """``convertDesiredReplicasWithBehaviorRate``: the behavior policies plus min/max."""
        ev = self._events
        if desired > current:
            limit = max(
                _up_proposal(p, current - _changed_within(ev, at, p.period_s, True))
                for p in self.scale_up_policies
            )
            limit = max(limit, current)
            allowed = min(self.max_replicas, limit)
            return min(desired, allowed), limit
        if desired < current:
            limit = min(
                _down_proposal(p, current + _changed_within(ev, at, p.period_s, False))
                for p in self.scale_down_policies
            )
            limit = min(limit, current)
            allowed = max(self.min_replicas, limit)
            return max(desired, allowed), limit
        return desired, None

    def _record(
        self, obs: Observation, desired: int, reason: str, factors: dict[str, FactorValue]
    ) -> Decision:
        if desired != obs.replicas:
            self._events.append((obs.at, desired - obs.replicas))
            longest = max(p.period_s for p in (*self.scale_up_policies, *self.scale_down_policies))
            self._events = [(t, c) for t, c in self._events if t > obs.at - longest]
        return self._out(obs, desired, reason, factors)

    def _out(
        self, obs: Observation, desired: int, reason: str, factors: dict[str, FactorValue]
    ) -> Decision:
        factors["desired"] = desired
        return Decision(obs.at, self.name, obs.replicas, desired, reason, factors)


def _changed_within(events: list[tuple[float, int]], at: float, period_s: float, up: bool) -> int:
    """Replicas added (``up``) or deleted by events strictly after ``at - period_s``, as the HPA."""
    cutoff = at - period_s
    return sum(abs(c) for t, c in events if t > cutoff and (c > 0 if up else c < 0))


def _up_proposal(policy: RatePolicy, start: int) -> int:
    if policy.kind == "Pods":
        return start + policy.value
    return math.ceil(start * (1 + policy.value / 100))


def _down_proposal(policy: RatePolicy, start: int) -> int:
    if policy.kind == "Pods":
        return start - policy.value
    return int(start * (1 - policy.value / 100))  # truncates, as the HPA's int32() does


class GuidePressurePolicy:
    """The guide's ``AdaptiveAgentScaler.analyzeScalingNeed``, evaluated every 30 s."""

    name = "guide-pressure"
    interval_s = 30.0  # setInterval(..., 30000)
    min_replicas = GUIDE_MIN_REPLICAS
    max_replicas = GUIDE_MAX_REPLICAS

    def __init__(self, config: ScalerConfig | None = None) -> None:
        if config is not None:
            config.validate()  # accepted for a uniform factory; the guide's numbers rule
        self._last_eval: float | None = None

    def decide(self, obs: Observation) -> Decision:
        """Sum the binary factors and scale by 1.5 (score ≥ 3) or by 0.8 (score 0)."""
        current = obs.replicas
        if self._last_eval is not None and obs.at - self._last_eval < self.interval_s:
            factors: dict[str, FactorValue] = {"replicas": current, "evaluated": False}
            why = f"hold at {current}: between the 30 s evaluations."
            return self._out(obs, current, why, factors)
        self._last_eval = obs.at

        # parseFloat(result[0]?.value[1] || '0'): a missing series reads as 0.
        cpu = _or_zero(obs.cpu_ratio)
        memory = _or_zero(obs.memory_bytes)  # bytes, compared below with 0.8: the unit bug
        queue = _or_zero(obs.queued)
        p95 = _or_zero(obs.p95_latency_s)
        errors = _or_zero(obs.error_rate)
        rps = _or_zero(obs.requests_per_s)
        flags = {
            "cpuPressure": cpu > 0.7,
            "memoryPressure": memory > 0.8,
            "queueBacklog": queue > 50,
            "highLatency": p95 > 10,
            "highErrorRate": errors > 0.05,
            "highRequestRate": rps > 100,
        }
        score = sum(flags.values())
        factors = {
            "replicas": current,
            "evaluated": True,
            "cpu_usage": cpu,
            "memory_usage_bytes": memory,
            "queue_length": queue,
            "p95_latency_s": p95,
            "error_rate": errors,
            "requests_per_s": rps,
            **{k: int(v) for k, v in flags.items()},
            "pressure_score": score,
        }
        on = ", ".join(k for k, v in flags.items() if v) or "none"
        if score >= 3:
            desired = min(math.ceil(current * 1.5), self.max_replicas)
            why = f"High pressure detected (score: {score}; {on}): {current}→{desired}."
        elif score == 0 and current > self.min_replicas:
            desired = max(math.floor(current * 0.8), self.min_replicas)
            why = f"Low resource utilization detected (score 0): {current}→{desired}."
        else:
            desired = current
            why = f"No scaling needed (score: {score}; {on})."
        return self._out(obs, desired, why, factors)

    def _out(
        self, obs: Observation, desired: int, reason: str, factors: dict[str, FactorValue]
    ) -> Decision:
        factors["desired"] = desired
        return Decision(obs.at, self.name, obs.replicas, desired, reason, factors)


def _or_zero(value: float | None) -> float:
    return 0.0 if value is None else float(value)
