"""What a rollout is asked to do: its strategy, steps and analysis (issue 20).

Why one frozen value for the whole request: the controller stores it with the rollout and
derives every action from it and the stored state, so a restarted controller (or a new leader)
continues the same rollout. ``spec_hash`` lets a controller notice that the spec changed under a
running rollout (Argo's ``currentStepHash``).

The guide's defaults, kept: a canary at 5 % for 5 minutes, then 20, 50, 80 and 100 % for 3
minutes each; error rate at most 1 %, throughput ratio at least 0.8; the old side removed after
10 stable minutes. Corrected: latency is judged on p95, not the average (an average hides the
tail); throughput is compared per unit of weight; and a step passes only with enough samples
(``min_samples``, by the rule of three: no failure in ``n`` samples bounds the error rate at
``3/n`` with 95 % confidence, so proving 1 % needs 300).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Literal

Strategy = Literal["canary", "blue-green"]
TrafficMode = Literal["auto", "nginx", "replicas"]

GUIDE_WEIGHTS = (5, 20, 50, 80, 100)
GUIDE_PAUSES_S = (300.0, 180.0, 180.0, 180.0, 180.0)


@dataclass(frozen=True, slots=True)
class Step:
    """Send ``weight`` % of traffic to the canary, then analyse for ``pause_s`` seconds
    (``None``: wait for a person's ``promote``). A blue-green rollout may start with a 0 %
    step: the preview."""

    weight: int
    pause_s: float | None


@dataclass(frozen=True, slots=True)
class MetricCheck:
    """A user-defined query judged every analysis interval, Argo-style.

    ``query`` is PromQL with ``{{version}}`` standing for the version label value (stable or
    canary); ``success`` and ``failure`` are conditions on its scalar ``result`` such as
    ``result < 0.05`` (a comparison, optionally joined by ``and``/``or``). Failure wins; neither
    met is inconclusive.
    """

    name: str
    query: str
    success: str | None = None
    failure: str | None = None


@dataclass(frozen=True, slots=True)
class Analysis:
    interval_s: float = 60.0
    max_error_rate: float = 0.01
    max_latency_p95_s: float = 5.0
    min_throughput_ratio: float = 0.8  # canary per unit of weight / stable per unit of weight
    min_samples: int | None = None  # None: ceil(3 / max_error_rate) (rule of three)
    max_extensions: int = 3  # a step short of samples is extended this often, then inconclusive
    checks: tuple[MetricCheck, ...] = ()

    def required_samples(self) -> int:
        if self.min_samples is not None:
            return self.min_samples
        return math.ceil(3.0 / self.max_error_rate) if self.max_error_rate > 0 else 300


@dataclass(frozen=True, slots=True)
class RolloutSpec:
    target: str  # the Deployment rolled out, e.g. "claude-agent-api"
    image: str  # the new image (canary version)
    strategy: Strategy = "canary"
    steps: tuple[Step, ...] = field(
        default_factory=lambda: tuple(
            Step(w, p) for w, p in zip(GUIDE_WEIGHTS, GUIDE_PAUSES_S, strict=True)
        )
    )
    analysis: Analysis = field(default_factory=Analysis)
    traffic: TrafficMode = "auto"
    stable_soak_s: float = 600.0  # after full promotion, keep the old side this long

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if not self.target or not self.image:
            raise ValueError("target and image are required")
        if not self.steps:
            raise ValueError("steps: at least one step")
        last = 0
        for i, step in enumerate(self.steps):
            if self.strategy == "blue-green" and i == 0 and step.weight == 0:
                pass  # the preview: the new side at full size, no user traffic yet
            elif not 0 < step.weight <= 100:
                raise ValueError(f"steps[{i}].weight must be in 1..100, got {step.weight}")
            if step.weight < last:
                raise ValueError(f"steps[{i}].weight must not decrease ({last} -> {step.weight})")
            if step.pause_s is not None and not (0 <= step.pause_s < math.inf):
                raise ValueError(f"steps[{i}].pause must be a finite duration >= 0")
            last = step.weight
        if self.steps[-1].weight != 100:
            raise ValueError("the last step must send 100 % of traffic to the new version")
        a = self.analysis
        if not 0 < a.max_error_rate < 1:
            raise ValueError("analysis.max_error_rate must be in (0, 1)")
        if a.interval_s <= 0 or a.max_latency_p95_s <= 0 or a.min_throughput_ratio < 0:
            raise ValueError("analysis interval, latency and throughput ratio must be positive")
        if a.min_samples is not None and a.min_samples < 1:
            raise ValueError("analysis.min_samples must be >= 1")
        if a.max_extensions < 0:
            raise ValueError("analysis.max_extensions must be >= 0")
        if self.stable_soak_s < 0:
            raise ValueError("stable_soak must be >= 0")

    def spec_hash(self) -> str:
        raw = json.dumps(asdict(self), sort_keys=True, default=str).encode()
        return hashlib.sha256(raw).hexdigest()[:16]


def parse_steps(weights: str, pauses: str | None = None) -> tuple[Step, ...]:
    """``"5,20,50,80,100"`` and ``"5m,3m"`` (the last pause repeats; ``manual`` waits for a
    promote) into steps. Raises ``ValueError`` with the bad item."""
    from quarterdeck.kit.durations import parse_duration

    items = [w.strip() for w in weights.split(",") if w.strip()]
    try:
        ws = [int(w) for w in items]
    except ValueError as exc:
        raise ValueError(f"steps must be whole percentages like 5,20,100; got {weights!r}") from exc
    given = [p.strip() for p in (pauses or "").split(",") if p.strip()]
    out: list[Step] = []
    for i, w in enumerate(ws):
        if given:
            text = given[min(i, len(given) - 1)]
            pause = None if text == "manual" else parse_duration(text)
        else:
            pause = GUIDE_PAUSES_S[min(i, len(GUIDE_PAUSES_S) - 1)]
        out.append(Step(w, pause))
    return tuple(out)


def checked_steps(weights: str, pauses: str | None) -> tuple[Step, ...]:
    """:func:`parse_steps` for a request: a bad item is a ``ValidationFailed`` (422) naming
    ``steps`` or ``pauses``."""
    from quarterdeck.exceptions import ValidationFailed

    try:
        return parse_steps(weights, pauses)
    except ValueError as exc:
        field = "pauses" if "duration" in str(exc).lower() else "steps"
        raise ValidationFailed(
            f"{field}: {exc}", errors=[{"field": field, "message": str(exc)}]
        ) from exc
