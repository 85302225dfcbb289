"""Each API replica's view of the agent-configuration canaries, for routing new runs.

Why a cache: every submission asks for its type's route, and a query per submission would cost
more than the insert it precedes. The newest canary of every type is re-read at most every
``ttl_s`` seconds (one small indexed query), so a weight the leader's controller moved, or a
rollback, reaches every replica's submissions within ``ttl_s``. A read that fails keeps the last
routes rather than failing submissions (the share is a preference; the run is what matters); a
replica that never read any routes sends every run to the YAML configuration and says so in
the log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from quarterdeck.rollouts import canary_repository
from quarterdeck.rollouts.canary_spec import TARGET_PREFIX, from_json
from quarterdeck.runs.config_routes import ConfigRoute
from quarterdeck.store.pool import Database

log = structlog.get_logger(__name__)

__all__ = ["CanaryRouter", "route_of"]

_TERMINAL = ("completed", "aborted", "rolled_back")


def route_of(canary_id: str, phase: str, weight: int, spec: dict[str, object]) -> ConfigRoute:
    """The route a stored canary gives: live at its weight (soaking counts as 100 %), or ended
    with the candidate in force (completed) or the stable settings (aborted, rolled back)."""
    plan = from_json(dict(spec))
    live = phase not in _TERMINAL
    return ConfigRoute(
        canary_id=canary_id,
        live=live,
        weight=100 if phase == "soaking" else weight,
        stable=dict(plan.base),
        candidate=dict(plan.settings),
        promoted=phase == "completed",
    )


class CanaryRouter:
    """Implements ``runs.config_routes.ConfigRoutes`` from the ``rollouts`` table."""

    def __init__(
        self, db: Database, *, ttl_s: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.db, self.ttl_s, self.clock = db, ttl_s, clock
        self._routes: dict[str, ConfigRoute] = {}
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    async def route(self, agent_type: str) -> ConfigRoute | None:
        if self._read_at is None or self.clock() - self._read_at >= self.ttl_s:
            async with self._lock:  # one refresh at a time; the others use its result
                if self._read_at is None or self.clock() - self._read_at >= self.ttl_s:
                    await self.refresh()
        return self._routes.get(agent_type)

    async def refresh(self) -> None:
        try:
            async with self.db.acquire() as conn:
                rows = await canary_repository.newest_canaries(conn)
        except Exception as exc:
            log.warning("rollouts.routes_unreadable", error=str(exc), kept=len(self._routes))
            self._read_at = self.clock()  # retry after ttl_s, not on every submission
            return
        self._routes = {
            row["target"].removeprefix(TARGET_PREFIX): route_of(
                row["id"], row["phase"], row["weight"], row["spec"]
            )
            for row in rows
        }
        self._read_at = self.clock()

    def forget(self) -> None:
        """Re-read on the next route (after this process started or ended a canary)."""
        self._read_at = None
