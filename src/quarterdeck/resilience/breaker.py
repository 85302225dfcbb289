"""Circuit breakers: stop calling a dependency that is failing, then probe it back to health.

The state machine (:mod:`quarterdeck.resilience.circuit`, re-exported here) is pure:
:func:`step` maps (state, config, event, now) to (new state, allowed) and touches nothing else,
so the same code runs in-process, inside a Redis WATCH/MULTI transaction (see
:mod:`quarterdeck.resilience.redis_backend`), and in unit tests
driven by a :class:`~quarterdeck.kit.clock.FakeClock`.

The guide's numbers are the defaults: open after 5 failures within a 30 s window, stay open
60 s, then let ``half_open_probes`` calls through; that many successes close the circuit, any
failure re-opens it. A probe that never reports back (its process died) expires after
``probe_timeout_s``, so a crashed replica cannot wedge a shared breaker half-open.

``now`` is Unix seconds (``time.time()``) whenever state is shared between processes, because
monotonic clocks of different processes do not agree. Replica clock skew of a second or two
only shifts a 60 s open window by that much.

:class:`Breakers` is the registry the executor uses: one breaker per name (``anthropic:<model>``
per provider and model, ``database`` and ``redis`` per dependency), shared through a
:class:`BreakerStore` when one is configured, with an in-process copy that keeps working when
the store is down, and the ``claude_agent_circuit_state`` gauge kept current.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from quarterdeck import metrics
from quarterdeck.exceptions import Unavailable
from quarterdeck.resilience.circuit import (
    BreakerConfig,
    BreakerState,
    CircuitBreaker,
    CircuitStatus,
    Event,
    advance,
    merge,
    step,
)
from quarterdeck.resilience.retry import classify

log = structlog.get_logger(__name__)

__all__ = [
    "DATABASE",
    "REDIS",
    "BreakerConfig",
    "BreakerState",
    "BreakerStore",
    "Breakers",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitStatus",
    "Event",
    "InMemoryBreakerStore",
    "SharedStateUnavailable",
    "Step",
    "advance",
    "breaker_name",
    "merge",
    "step",
]


DATABASE = "database"
REDIS = "redis"


@dataclass(frozen=True)
class Step:
    before: BreakerState
    after: BreakerState
    allowed: bool


class SharedStateUnavailable(Exception):
    """The shared store (Redis) cannot be reached; callers fall back to in-process state."""


class BreakerStore(Protocol):
    """Where breaker state lives so several replicas see one breaker per name.

    ``apply`` must be an atomic read-modify-write of :func:`step`; both methods raise
    :class:`SharedStateUnavailable` when the store cannot be reached.
    """

    @property
    def available(self) -> bool: ...

    async def apply(self, name: str, cfg: BreakerConfig, event: Event, now: float) -> Step: ...

    async def merge(
        self, name: str, cfg: BreakerConfig, local: BreakerState, now: float
    ) -> BreakerState: ...

    async def close(self) -> None: ...


class InMemoryBreakerStore:
    """A :class:`BreakerStore` in one process: the reference implementation, and the way unit
    tests show two registries sharing a store without Redis."""

    def __init__(self) -> None:
        self.states: dict[str, BreakerState] = {}

    @property
    def available(self) -> bool:
        return True

    async def apply(self, name: str, cfg: BreakerConfig, event: Event, now: float) -> Step:
        before = self.states.get(name, BreakerState())
        after, allowed = step(before, cfg, event, now)
        self.states[name] = after
        return Step(before, after, allowed)

    async def merge(
        self, name: str, cfg: BreakerConfig, local: BreakerState, now: float
    ) -> BreakerState:
        merged = merge(self.states.get(name, BreakerState()), local, cfg, now)
        self.states[name] = merged
        return merged

    async def close(self) -> None:
        return None


def breaker_name(provider: str, model: str) -> str:
    """The breaker for one provider and model, e.g. ``anthropic:claude-sonnet-4-5``."""
    return f"{provider}:{model}"


class CircuitOpenError(Unavailable):
    """Raised by :meth:`Breakers.guard` instead of calling a dependency whose circuit is open."""

    type_slug = "circuit-open"
    title = "Dependency circuit open"

    def __init__(self, name: str, retry_in: float) -> None:
        super().__init__(f"circuit {name!r} is open", retry_after=max(1, int(retry_in + 0.999)))
        self.name = name
        self.retry_in = retry_in


class Breakers:
    """All of a process's breakers, shared through ``store`` when it is reachable.

    Every event is applied to the shared store when possible, and the result mirrored into the
    local :class:`CircuitBreaker`; when the store is unavailable the event is applied to the
    local breaker instead, so Redis never holds the only copy and an outage of Redis never stops
    a call. When the store comes back, each local copy is merged into it (see :func:`merge`)
    before the next shared event, so what a replica learned while cut off is not lost.

    Names in ``local_only`` (by default ``redis``: its own breaker cannot live in Redis) never
    use the store.
    """

    def __init__(
        self,
        store: BreakerStore | None = None,
        *,
        config: BreakerConfig | None = None,
        configs: Mapping[str, BreakerConfig] | None = None,
        local_only: Iterable[str] = (REDIS,),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._config = config or BreakerConfig()
        self._configs = dict(configs or {})
        self._local_only = frozenset(local_only)
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}
        self._gauges: dict[str, Any] = {}  # name -> its claude_agent_circuit_state child
        self._degraded = False

    def get(self, name: str) -> CircuitBreaker:
        """The local breaker for ``name`` (created CLOSED on first use)."""
        cb = self._breakers.get(name)
        if cb is None:
            cb = CircuitBreaker.from_config(name, self._configs.get(name, self._config))
            self._breakers[name] = cb
            self._gauges[name] = metrics.CIRCUIT_STATE.labels(metrics.dependency(name))
            self._gauges[name].set(0)
        return cb

    @property
    def shared(self) -> bool:
        """True while events go through the shared store."""
        return self.store is not None and self.store.available and not self._degraded

    async def allow(self, name: str) -> bool:
        return await self._apply(name, "allow")

    async def record_success(self, name: str) -> None:
        await self._apply(name, "success")

    async def record_failure(self, name: str) -> None:
        await self._apply(name, "failure")

    async def release(self, name: str) -> None:
        await self._apply(name, "release")

    async def state(self, name: str) -> CircuitStatus:
        await self._apply(name, "observe")
        return self.get(name).state(self._clock())

    def guard(self, name: str, trips: Callable[[BaseException], bool] | None = None) -> _Guard:
        """``async with breakers.guard(name):`` runs the body only if the circuit allows it,
        and records how it went.

        Raises :class:`CircuitOpenError` without running the body when the circuit is open.
        An exception for which ``trips`` is true (default: 5xx, overload, timeout, connection
        errors; see :func:`quarterdeck.resilience.retry.classify`) counts as a failure; any
        other exception (a 400, a 429, a cancellation) releases a probe slot without counting.
        """
        return _Guard(self, name, trips)

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()

    async def _apply(self, name: str, event: Event) -> bool:
        cb = self.get(name)
        now = self._clock()
        before = cb.state(now)
        if self.store is not None and name not in self._local_only and await self._ready(now):
            try:
                result = await self.store.apply(name, cb.config, event, now)
            except SharedStateUnavailable as exc:
                self._degrade(exc)
                allowed = cb.apply(event, now)
            else:
                cb.current = result.after
                allowed = result.allowed
        else:
            allowed = cb.apply(event, now)
        after = cb.state(now)
        self._gauges[name].set(int(after))
        if after is not before:
            log.warning(
                "circuit.transition",
                dependency=name,
                before=before.name.lower(),
                after=after.name.lower(),
                shared=self.shared,
            )
        return allowed

    async def _ready(self, now: float) -> bool:
        """Whether to use the store now; after an outage, first merge local copies into it."""
        assert self.store is not None
        if not self.store.available:
            self._degrade(None)
            return False
        if not self._degraded:
            return True
        try:
            for name, cb in list(self._breakers.items()):
                if name not in self._local_only:
                    cb.current = await self.store.merge(name, cb.config, cb.current, now)
        except SharedStateUnavailable:
            return False
        self._degraded = False
        log.info("circuit.shared_state_restored", breakers=len(self._breakers))
        return True

    def _degrade(self, exc: BaseException | None) -> None:
        if not self._degraded:
            self._degraded = True
            log.warning("circuit.shared_state_unavailable", error=str(exc) if exc else None)


class _Guard:
    """:meth:`Breakers.guard` as a plain class: it wraps every provider call, and a
    generator-based context manager cost a few microseconds more per call."""

    __slots__ = ("breakers", "name", "trips")

    def __init__(
        self, breakers: Breakers, name: str, trips: Callable[[BaseException], bool] | None
    ) -> None:
        self.breakers, self.name, self.trips = breakers, name, trips

    async def __aenter__(self) -> None:
        if not await self.breakers.allow(self.name):
            cb = self.breakers.get(self.name)
            raise CircuitOpenError(self.name, cb.retry_in(self.breakers._clock()))

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> bool:
        if exc is None:
            await self.breakers.record_success(self.name)
            return False
        failed = self.trips(exc) if self.trips is not None else classify(exc).trips_breaker
        await (
            self.breakers.record_failure(self.name) if failed else self.breakers.release(self.name)
        )
        return False
