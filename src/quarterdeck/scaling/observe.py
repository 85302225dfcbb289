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
ARRIVALS_WINDOW_S = 60.0
"""The window of the arrival rate (the simulator's ``ARRIVALS_WINDOW_S`` is the same)."""


class Observer:
    """Turns the store's stats and the breakers into one :class:`Observation` per tick.

    The arrival rate is the runs submitted in the last ``arrivals_window_s`` (60 s) over that
    window, counted by the store from ``created_at`` (whatever became of them since), so a
    steady stream of short runs that never piles up still counts. A new leader sees it at once:
    the count is in Postgres, not in this process.
    """

    def __init__(
        self,
        run_store: RunStore,
        breakers: Breakers | None = None,
        *,
        provider_breakers: Iterable[str] = (),
        heartbeat_stale_s: float = 30.0,
        arrivals_window_s: float = ARRIVALS_WINDOW_S,
    ) -> None:
        self.run_store = run_store
        self.breakers = breakers
        self.provider_breakers = tuple(provider_breakers)
        self.heartbeat_stale_s = heartbeat_stale_s
        self.arrivals_window_s = arrivals_window_s

    def reset(self) -> None:
        """Nothing to forget: every input is read afresh each tick (kept for the scaler's
        leadership hand-over, which calls it)."""

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
            try:
                created = await self.run_store.created_since(self.arrivals_window_s)
            except Exception as exc:  # the rate only sizes the backlog boost: missing is fine
                log.warning("scaler.arrivals_failed", error=str(exc) or type(exc).__name__)
            else:
                arrivals = created / self.arrivals_window_s
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
