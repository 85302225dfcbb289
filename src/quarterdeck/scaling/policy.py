"""The shared interface of the scaling policies, and the pure helpers they share.

Why this shape: every policy is a small state machine (stabilization windows, cooldowns) that is
fed observations carrying their own time, and answers with a :class:`Decision` that records every
input and intermediate it used.  Nothing here reads a clock or does I/O, so the simulator and the
tests can drive the policies with plain numbers, and a decision can always be explained after the
fact from its ``factors``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, fields
from typing import Literal, Protocol

__all__ = [
    "Decision",
    "EmergencyFloor",
    "EmergencyGrant",
    "FactorValue",
    "Observation",
    "Policy",
    "PolicyName",
    "ScalerConfig",
    "StabilizationWindow",
    "clamp",
    "make_policy",
    "within_tolerance",
]

PolicyName = Literal["quarterdeck", "guide-hpa", "guide-pressure"]
FactorValue = float | int | str | bool | None


@dataclass(frozen=True, slots=True)
class Observation:
    """What a policy sees at one instant; ``None`` means the metric is missing, not zero."""

    at: float  # seconds (any epoch; only differences matter)
    replicas: int  # worker replicas now (desired count last set)
    ready: int | None = None  # ready replicas (None: unknown)
    queued: int | None = None  # queued runs (None: the metric is missing)
    running: int | None = None  # running runs
    oldest_queued_s: float | None = None
    arrivals_per_s: float | None = None  # runs submitted per second, recent window
    cpu_ratio: float | None = None  # mean CPU use / CPU limit, 0..1+
    memory_ratio: float | None = None  # mean memory use / memory limit, 0..1+
    p95_latency_s: float | None = None  # (for the guide's pressure score)
    error_rate: float | None = None  # (ditto)
    requests_per_s: float | None = None  # (ditto, and the guide's HPA pods metric)
    memory_bytes: float | None = None  # (the guide's pressure score compares THIS with 0.8)
    provider_failing: bool = False  # a model provider's breaker is open
    floor: int | None = None  # an emergency scale-up's count, held (see EmergencyFloor)


@dataclass(frozen=True, slots=True)
class Decision:
    """One policy answer: the replica count it wants, and why, with every factor it used."""

    at: float
    policy: str
    current: int
    desired: int
    reason: str  # one sentence a person reads
    factors: dict[str, FactorValue]  # every input and intermediate used

    @property
    def direction(self) -> Literal["up", "down", "hold"]:
        """``up``/``down`` when the desired count differs from the current one, else ``hold``."""
        if self.desired > self.current:
            return "up"
        if self.desired < self.current:
            return "down"
        return "hold"


class Policy(Protocol):
    """A stateful decision maker: feed it observations in time order, one decision each."""

    name: str

    def decide(self, obs: Observation) -> Decision: ...


@dataclass(frozen=True, slots=True)
class ScalerConfig:
    """Quarterdeck's scaling knobs (the guide's policies carry their own, as the guide wrote them)."""

    min_replicas: int = 2  # one worker drains while another serves (see quarterdeck_policy)
    max_replicas: int = 20
    concurrency_per_worker: int = 50  # settings.worker_concurrency
    target_utilization: float = 0.8  # in-flight target = concurrency * this (Knative-style)
    tolerance: float = 0.1  # no change within ±10 % of current
    max_backlog_age_s: float = 60.0  # oldest queued older than this: add capacity
    scale_up_stabilization_s: float = 0.0  # fast up
    scale_down_stabilization_s: float = 300.0  # slow down: highest recommendation in window
    cooldown_s: float = 30.0  # minimum time between changes
    max_scale_up_step: int = 10  # pods added per decision at most
    cpu_guard: float = 0.9  # above: never scale down
    memory_guard: float = 0.9

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field, so a bad config fails at startup."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} must be finite, got {value!r}")
        if self.min_replicas < 0:
            raise ValueError(f"min_replicas must be >= 0, got {self.min_replicas}")
        if self.max_replicas < 1:
            raise ValueError(f"max_replicas must be >= 1, got {self.max_replicas}")
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) must be >= min_replicas ({self.min_replicas})"
            )
        if self.concurrency_per_worker < 1:
            raise ValueError(
                f"concurrency_per_worker must be >= 1, got {self.concurrency_per_worker}"
            )
        if not 0.0 < self.target_utilization <= 1.0:
            raise ValueError(f"target_utilization must be in (0, 1], got {self.target_utilization}")
        if not 0.0 <= self.tolerance < 1.0:
            raise ValueError(f"tolerance must be in [0, 1), got {self.tolerance}")
        if self.max_backlog_age_s <= 0.0:
            raise ValueError(f"max_backlog_age_s must be > 0, got {self.max_backlog_age_s}")
        if self.scale_up_stabilization_s < 0.0:
            raise ValueError(
                f"scale_up_stabilization_s must be >= 0, got {self.scale_up_stabilization_s}"
            )
        if self.scale_down_stabilization_s < 0.0:
            raise ValueError(
                f"scale_down_stabilization_s must be >= 0, got {self.scale_down_stabilization_s}"
            )
        if self.cooldown_s < 0.0:
            raise ValueError(f"cooldown_s must be >= 0, got {self.cooldown_s}")
        if self.max_scale_up_step < 1:
            raise ValueError(f"max_scale_up_step must be >= 1, got {self.max_scale_up_step}")
        if self.cpu_guard <= 0.0:
            raise ValueError(f"cpu_guard must be > 0, got {self.cpu_guard}")
        if self.memory_guard <= 0.0:
            raise ValueError(f"memory_guard must be > 0, got {self.memory_guard}")


def clamp(value: int, lo: int, hi: int) -> int:
    """Bound ``value`` to ``[lo, hi]``; ``lo`` wins if the bounds cross (never below the floor)."""
    return max(lo, min(hi, value))


def within_tolerance(current: int, ratio: float, tolerance: float) -> bool:
    """The HPA rule: a usage/target ``ratio`` within ``1 ± tolerance`` changes nothing.

    Why a ratio and not a count: at small replica counts a one-pod change is a large relative
    step, and the HPA (which operators know) judges the metric ratio, not the pod delta.
    ``current == 0`` is never within tolerance: an empty pool with work must be able to start.
    """
    if current <= 0:
        return False
    return abs(ratio - 1.0) <= tolerance


class StabilizationWindow:
    """The recommendations of the last ``window_s`` seconds, as the HPA v2 keeps them.

    Why: reacting to the newest recommendation alone makes a pool flap with a noisy load.  The
    HPA scales down only to the *highest* recommendation of its scale-down window, and up only to
    the *lowest* of its scale-up window.  As in ``horizontal.go`` a recommendation counts while
    its time is strictly after ``now - window_s``, and the newest one always counts, so a window
    of 0 s keeps only the newest.  Observations must arrive in non-decreasing time order.
    """

    __slots__ = ("_items", "window_s")

    def __init__(self, window_s: float) -> None:
        if window_s < 0.0:
            raise ValueError(f"window_s must be >= 0, got {window_s}")
        self.window_s = window_s
        self._items: deque[tuple[float, int]] = deque()

    def add(self, at: float, recommendation: int) -> None:
        """Record ``recommendation`` at ``at`` and forget those older than the window."""
        if self._items and at < self._items[-1][0]:
            raise ValueError(f"time went backwards: {at} < {self._items[-1][0]}")
        while self._items and self._items[0][0] <= at - self.window_s:
            self._items.popleft()
        self._items.append((at, recommendation))

    def seed(self, at: float, current: int) -> None:
        """On first sight, count the current size as a recommendation, as the HPA does.

        Why (``maybeInitScaleDownStabilizationWindow``): a restarted scaler has no history, and
        without a seed its first low recommendation would shrink the pool at once.
        """
        if not self._items:
            self.add(at, current)

    def __len__(self) -> int:
        return len(self._items)

    def highest(self) -> int:
        """The highest recommendation in the window (the scale-down bound)."""
        if not self._items:
            raise ValueError("empty stabilization window")
        return max(r for _, r in self._items)

    def lowest(self) -> int:
        """The lowest recommendation in the window (the scale-up bound)."""
        if not self._items:
            raise ValueError("empty stabilization window")
        return min(r for _, r in self._items)


@dataclass(frozen=True, slots=True)
class EmergencyGrant:
    """The answer to one emergency request: the count to set now, or why nothing is set."""

    at: float
    current: int
    desired: int
    accepted: bool
    reason: str  # one sentence a person reads (without the "health monitor: …" prefix)
    until: float | None  # the raised floor is held until then (accepted grants only)
    factors: dict[str, FactorValue]


class EmergencyFloor:
    """The health monitor's emergency scale-ups: bounded, one step, rate-limited, then held.

    Why a floor and not a one-off write: the policy's next tick sees the same queue that made the
    monitor ask and would undo the change at once (the pods it added are not serving yet).  So an
    applied grant becomes a floor the policy honours (``Observation.floor``) for the scale-down
    stabilization window (at least the cooldown: a change sooner would break the cooldown's
    "minimum time between changes"), after which the policy's own windows take over.

    Why a step and not max: the monitor knows the pool is behind, not by how much; the step is
    the policy's own (its old-backlog boost, at most ``max_scale_up_step``), and a pool still
    behind a cooldown later gets another.  Requests within ``cooldown_s`` of the last applied
    one do not stack: the monitor asks every tick while failing, and pods take a while to start.

    Pure: ``now`` comes with each call; :meth:`commit` is called only once the count was set, so a
    refused write (an HPA, an API error) leaves neither a floor nor a cooldown behind.
    """

    __slots__ = ("_floor", "_last_at", "_until", "config")

    def __init__(self, config: ScalerConfig) -> None:
        config.validate()
        self.config = config
        self._floor: int | None = None
        self._until: float | None = None
        self._last_at: float | None = None

    @property
    def hold_s(self) -> float:
        """How long an applied emergency count is held against the policy's scale-downs."""
        return max(self.config.scale_down_stabilization_s, self.config.cooldown_s)

    def request(
        self, at: float, current: int, step: int, *, provider_failing: bool = False
    ) -> EmergencyGrant:
        """What an emergency request at ``at`` may do to a pool of ``current`` replicas.

        ``step`` is the policy's own scale-up step for the pool's load; it is bounded to
        ``1..max_scale_up_step`` and the result to ``min_replicas..max_replicas``.
        """
        cfg = self.config
        since = None if self._last_at is None else at - self._last_at
        factors: dict[str, FactorValue] = {
            "emergency": True,
            "replicas": current,
            "step_wanted": step,
            "max_scale_up_step": cfg.max_scale_up_step,
            "min_replicas": cfg.min_replicas,
            "max_replicas": cfg.max_replicas,
            "cooldown_s": cfg.cooldown_s,
            "seconds_since_emergency": since,
            "floor_in_force": self.floor(at),
            "provider_failing": provider_failing,
        }

        def refuse(why: str) -> EmergencyGrant:
            return EmergencyGrant(at, current, current, False, why, None, factors)

        if since is not None and since < cfg.cooldown_s:
            return refuse(
                f"not scaled: an emergency scale-up to {self._floor} was made {since:g} s ago, "
                f"and requests within the {cfg.cooldown_s:g} s cooldown do not stack"
            )
        if provider_failing:
            return refuse(
                "not scaled: a model provider is failing, and more pods cannot serve a backlog "
                "the model cannot"
            )
        if current >= cfg.max_replicas:
            return refuse(f"not scaled: already at the maximum of {cfg.max_replicas} replicas")
        bounded_step = clamp(step, 1, cfg.max_scale_up_step)
        desired = clamp(current + bounded_step, cfg.min_replicas, cfg.max_replicas)
        factors.update(step=bounded_step, desired=desired, hold_s=self.hold_s)
        why = f"scale up {current}→{desired} (+{desired - current}), held for {self.hold_s:g} s"
        return EmergencyGrant(at, current, desired, True, why, at + self.hold_s, factors)

    def commit(self, grant: EmergencyGrant) -> None:
        """The grant's count was set: hold it as the floor, and start the cooldown."""
        if not grant.accepted or grant.until is None:
            raise ValueError("only an accepted grant can be committed")
        self._floor, self._until, self._last_at = grant.desired, grant.until, grant.at

    def floor(self, at: float) -> int | None:
        """The count the policy must not go below at ``at``; None once the hold is over."""
        if self._floor is None or self._until is None or at >= self._until:
            return None
        return self._floor


def make_policy(name: PolicyName, config: ScalerConfig) -> Policy:
    """Build a fresh policy (empty windows, no history) by name; the config is validated first.

    Only Quarterdeck's policy is tuned by ``config``.  The guide's two policies keep the guide's
    own numbers — bounds 3..20, thresholds, windows and intervals — because reproducing them
    exactly is their whole point; they accept the config so every policy is built the same way.
    """
    config.validate()
    # Imported here: the policy modules import this one, and this keeps the import acyclic.
    if name == "quarterdeck":
        from quarterdeck.scaling.quarterdeck_policy import QuarterdeckPolicy

        return QuarterdeckPolicy(config)
    if name == "guide-hpa":
        from quarterdeck.scaling.guide_policies import GuideHpaPolicy

        return GuideHpaPolicy(config)
    if name == "guide-pressure":
        from quarterdeck.scaling.guide_policies import GuidePressurePolicy

        return GuidePressurePolicy(config)
    raise ValueError(f"unknown policy {name!r}; expected quarterdeck, guide-hpa or guide-pressure")
