"""The circuit breaker's state machine, pure: :func:`step` maps (state, config, event, now) to
(new state, allowed) and touches nothing else, so the same code runs in-process, inside a Redis
WATCH/MULTI transaction (:mod:`quarterdeck.resilience.redis_backend`) and in unit tests with a
:class:`~quarterdeck.kit.clock.FakeClock`. The registry that shares it between processes and
keeps the gauge is :mod:`quarterdeck.resilience.breaker`, which re-exports these names.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any, Literal

Event = Literal["allow", "success", "failure", "release", "observe"]
"""``release`` ends a probe that proved nothing either way (e.g. a 400 or a cancelled call);
``observe`` only applies the passage of time."""


class CircuitStatus(IntEnum):
    """Values match the ``claude_agent_circuit_state`` gauge: 0 closed, 1 half-open, 2 open."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True)
class BreakerConfig:
    failure_threshold: int = 5
    open_for_s: float = 60.0
    window_s: float = 30.0
    half_open_probes: int = 1
    probe_timeout_s: float | None = None
    """How long an unreported probe holds its slot; defaults to ``open_for_s``."""

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.half_open_probes < 1:
            raise ValueError("failure_threshold and half_open_probes must be at least 1")
        if self.open_for_s < 0 or self.window_s <= 0:
            raise ValueError("open_for_s must be >= 0 and window_s > 0")

    @property
    def probe_timeout(self) -> float:
        return self.open_for_s if self.probe_timeout_s is None else self.probe_timeout_s

    @property
    def ttl_s(self) -> float:
        """After this long untouched, any state is equivalent to a fresh CLOSED one."""
        return max(self.window_s, self.open_for_s + self.probe_timeout) + 60.0


@dataclass(frozen=True)
class BreakerState:
    """Everything a breaker knows; small and JSON-serialisable so replicas can share it.

    ``failures`` keeps at most ``failure_threshold`` recent timestamps: that is all the sliding
    window needs, and it bounds the size of the shared value.
    """

    status: CircuitStatus = CircuitStatus.CLOSED
    failures: tuple[float, ...] = ()
    opened_at: float = 0.0
    probes: tuple[float, ...] = ()
    probe_successes: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "status": int(self.status),
                "failures": list(self.failures),
                "opened_at": self.opened_at,
                "probes": list(self.probes),
                "probe_successes": self.probe_successes,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes | None) -> BreakerState:
        """Parse a stored state; anything missing or unreadable is a fresh CLOSED breaker."""
        if not raw:
            return cls()
        try:
            data: dict[str, Any] = json.loads(raw)
            return cls(
                status=CircuitStatus(int(data["status"])),
                failures=tuple(float(t) for t in data.get("failures", ())),
                opened_at=float(data.get("opened_at", 0.0)),
                probes=tuple(float(t) for t in data.get("probes", ())),
                probe_successes=int(data.get("probe_successes", 0)),
            )
        except (ValueError, KeyError, TypeError):
            return cls()


def advance(state: BreakerState, cfg: BreakerConfig, now: float) -> BreakerState:
    """Apply the passage of time: prune old failures and expired probes, OPEN -> HALF_OPEN."""
    if state.status is CircuitStatus.CLOSED and not state.failures and not state.probes:
        return state  # the healthy steady state: nothing to prune (and no allocation per call)
    failures = tuple(t for t in state.failures if now - t < cfg.window_s)
    if state.status is CircuitStatus.OPEN:
        if now - state.opened_at >= cfg.open_for_s:
            return BreakerState(CircuitStatus.HALF_OPEN, (), state.opened_at, (), 0)
        return replace(state, failures=failures)
    if state.status is CircuitStatus.HALF_OPEN:
        probes = tuple(t for t in state.probes if now - t < cfg.probe_timeout)
        return replace(state, failures=(), probes=probes)
    return replace(state, failures=failures, probes=())


def _open(state: BreakerState, now: float) -> BreakerState:
    return BreakerState(CircuitStatus.OPEN, state.failures, now, (), 0)


def step(
    state: BreakerState, cfg: BreakerConfig, event: Event, now: float
) -> tuple[BreakerState, bool]:
    """The whole state machine. Returns the new state and, for ``allow``, whether to call.

    For events other than ``allow`` the boolean is True (nothing to refuse).
    """
    s = advance(state, cfg, now)
    if event == "observe":
        return s, True
    if event == "allow":
        if s.status is CircuitStatus.CLOSED:
            return s, True
        if s.status is CircuitStatus.OPEN:
            return s, False
        if len(s.probes) < cfg.half_open_probes:
            return replace(s, probes=(*s.probes, now)), True
        return s, False
    if event == "failure":
        if s.status is CircuitStatus.HALF_OPEN:
            return _open(replace(s, failures=(now,)), now), True
        if s.status is CircuitStatus.OPEN:
            return s, True  # a call that started before the circuit opened; already counted
        failures = (*s.failures, now)[-cfg.failure_threshold :]
        s = replace(s, failures=failures)
        return (_open(s, now) if len(failures) >= cfg.failure_threshold else s), True
    if event == "success":
        if s.status is not CircuitStatus.HALF_OPEN:
            return s, True
        successes = s.probe_successes + 1
        if successes >= cfg.half_open_probes:
            return BreakerState(), True
        return replace(s, probes=s.probes[1:], probe_successes=successes), True
    # release
    if s.status is CircuitStatus.HALF_OPEN and s.probes:
        return replace(s, probes=s.probes[1:]), True
    return s, True


def merge(
    shared: BreakerState, local: BreakerState, cfg: BreakerConfig, now: float
) -> BreakerState:
    """Combine a replica's local copy with the shared one after Redis comes back.

    The more severe status wins (OPEN over HALF_OPEN over CLOSED; the later ``opened_at`` among
    equals), and failure timestamps are unioned, so failures seen while partitioned still count.
    """
    a, b = advance(shared, cfg, now), advance(local, cfg, now)
    if (a.status, a.opened_at) < (b.status, b.opened_at):
        a, b = b, a
    failures = tuple(sorted(set(a.failures) | set(b.failures)))[-cfg.failure_threshold :]
    merged = replace(a, failures=failures)
    if merged.status is CircuitStatus.CLOSED and len(failures) >= cfg.failure_threshold:
        merged = _open(merged, now)
    return merged


@dataclass
class CircuitBreaker:
    """One in-process breaker. Not thread-safe; meant for one event loop."""

    name: str
    failure_threshold: int = 5
    open_for_s: float = 60.0
    window_s: float = 30.0
    half_open_probes: int = 1
    probe_timeout_s: float | None = None
    current: BreakerState = field(default_factory=BreakerState)

    @classmethod
    def from_config(cls, name: str, cfg: BreakerConfig) -> CircuitBreaker:
        return cls(
            name,
            cfg.failure_threshold,
            cfg.open_for_s,
            cfg.window_s,
            cfg.half_open_probes,
            cfg.probe_timeout_s,
        )

    @functools.cached_property
    def config(self) -> BreakerConfig:
        """Built once: it is read on every call through the breaker."""
        return BreakerConfig(
            self.failure_threshold,
            self.open_for_s,
            self.window_s,
            self.half_open_probes,
            self.probe_timeout_s,
        )

    def apply(self, event: Event, now: float) -> bool:
        self.current, allowed = step(self.current, self.config, event, now)
        return allowed

    def allow(self, now: float) -> bool:
        """Whether a call may go ahead now; in HALF_OPEN this claims a probe slot."""
        return self.apply("allow", now)

    def record_success(self, now: float) -> None:
        self.apply("success", now)

    def record_failure(self, now: float) -> None:
        self.apply("failure", now)

    def release(self, now: float) -> None:
        self.apply("release", now)

    def state(self, now: float) -> CircuitStatus:
        return advance(self.current, self.config, now).status

    def retry_in(self, now: float) -> float:
        """Seconds until an OPEN breaker will let a probe through (0 if it would now)."""
        s = advance(self.current, self.config, now)
        if s.status is CircuitStatus.OPEN:
            return max(0.0, s.opened_at + self.open_for_s - now)
        return 0.0
