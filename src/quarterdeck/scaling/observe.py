"""What the scaler sees at each tick: the run store's queue, the breakers, the target's replicas.

Why these sources and no others: the queue (queued, running, the oldest wait) is what agent work
needs and lives in Postgres, which every replica can read; a model provider's open breaker says
more pods would not help. CPU and memory are left ``None``: there is no Prometheus wiring in
the process yet, and the policies treat a missing guard as "not hot" (they only ever stop a
scale-down), so nothing is lost but the guard itself.

A failed read is reported as missing (``None``), never as zero: the policy holds on a missing
``queued``/``running`` instead of reading an outage as an idle pool and shrinking it.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog

from quarterdeck.health.checks import breaker_states
from quarterdeck.resilience.breaker import DATABASE, REDIS, Breakers, CircuitStatus
from quarterdeck.runs.store_protocol import RunStore
from quarterdeck.scaling.policy import Observation

log = structlog.get_logger(__name__)

__all__ = ["Observer"]

_NOT_PROVIDERS = frozenset({DATABASE, REDIS})


class Observer:
    """Turns the store's stats and the breakers into one :class:`Observation` per tick.

    Stateful only for the arrival rate, which needs the previous tick's run count. That rate is
    the growth of the runs in flight (queued + running) per second, clipped at 0: the store
    counts runs by state, not runs created, so runs that arrived and finished between two ticks
    are not seen. It is a lower bound of arrivals, and only feeds the policy's backlog boost,
    where under-counting errs towards fewer pods.
    """

    def __init__(
        self,
        run_store: RunStore,
        breakers: Breakers | None = None,
        *,
        provider_breakers: Iterable[str] = (),
        heartbeat_stale_s: float = 30.0,
    ) -> None:
        self.run_store = run_store
        self.breakers = breakers
        self.provider_breakers = tuple(provider_breakers)
        self.heartbeat_stale_s = heartbeat_stale_s
        self._last: tuple[float, int] | None = None  # (at, runs in flight)

    def reset(self) -> None:
        """Forget the previous count (a new leader's first tick has no rate)."""
        self._last = None

    async def observe(self, at: float, *, replicas: int, ready: int | None = None) -> Observation:
        """The observation at ``at`` (monotonic seconds) for a pool of ``replicas``."""
        queued: int | None = None
        running: int | None = None
        oldest: float | None = None
        arrivals: float | None = None
        try:
            stats = await self.run_store.stats()
        except Exception as exc:  # any failure is a missing metric, never zero
            log.warning("scaler.stats_failed", error=str(exc) or type(exc).__name__)
        else:
            queued = sum(stats.queued.values())
            running = stats.states.get("running", 0)
            oldest = stats.oldest_s if queued else 0.0
            total = sum(stats.states.values())
            if self._last is not None and at > self._last[0]:
                arrivals = max(0.0, (total - self._last[1]) / (at - self._last[0]))
            self._last = (at, total)
        return Observation(
            at=at,
            replicas=replicas,
            ready=ready,
            queued=queued,
            running=running,
            oldest_queued_s=oldest,
            arrivals_per_s=arrivals,
            provider_failing=await self.provider_failing(),
        )

    async def busy_pods(self) -> dict[str, int]:
        """Running runs per worker pod (its host name), for the pod-deletion-cost before a
        scale-down; raises if the store cannot say (then no pod may be picked blindly)."""
        return await self.run_store.running_per_worker(stale_after_s=self.heartbeat_stale_s)

    async def provider_failing(self) -> bool:
        """Whether any model provider's breaker is open (the process's own, and the configured
        provider's, read through the shared store when there is one). Unknown counts as no."""
        if self.breakers is None:
            return False
        try:
            states = await breaker_states(self.breakers)
            for name in self.provider_breakers:
                if name not in states:
                    states[name] = CircuitStatus(await self.breakers.state(name)).name.lower()
        except Exception as exc:
            log.warning("scaler.breakers_failed", error=str(exc) or type(exc).__name__)
            return False
        return any(s == "open" for n, s in states.items() if n not in _NOT_PROVIDERS)
