"""Emergency scale-up requests handed, through Postgres, to the scaler's leader.

Why: the health monitor and the scaler have separate elections (``locks.HEALTH_LEADER`` and
``locks.SCALER``, or two Leases), so in a deployment of several replicas the process whose
health monitor asks for workers is often not the one allowed to write the replica count. A
refusal there would lose the request; a write there would be a second writer of the count. So a
follower stores the request (table ``scaling_requests``) and the scaler's leader takes it on its
next tick and acts on it by the same path as its own health monitor's (the cooldown, the floor
and the decision row are the same: :meth:`~quarterdeck.scaling.scaler.Scaler.emergency_scale_up`).

Why exactly once: taking marks the rows ``taken`` in the statement that returns them, skipping
rows another transaction holds (``FOR UPDATE SKIP LOCKED``), so even two processes that both
believe they lead (a Lease changing hands) act on different requests. A leader that dies
between taking and acting loses the request; the health monitor asks again while the problem
lasts, which is also why requests older than ``ttl_s`` are expired and never acted on late: a
step taken a minute after the problem it answered may answer nothing any more.

Why the follower's answer is "not accepted": nothing has been added yet, and the recovery
result must not claim capacity that may never come (the leader may refuse: cooldown, an HPA).
The answer says the request was passed on; the leader's own answer is kept with the request
and its decision is stored like any other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from quarterdeck.health.recovery import ScaleAnswer
from quarterdeck.kit.clock import utcnow
from quarterdeck.scaling import repository as repo
from quarterdeck.scaling.gauges import ERRORS
from quarterdeck.scaling.outcome import detail
from quarterdeck.store.pool import Database

log = structlog.get_logger(__name__)

__all__ = ["HANDED_OVER", "MIN_TTL_S", "TAKE_LIMIT", "HandOver", "HandedRequest", "request_ttl"]

HANDED_OVER = "not scaled yet: passed to the scaler's leader"
"""How the answer to a handed-over request starts."""
MIN_TTL_S = 60.0
"""A handed-over request is acted on at most this long (or two scaler intervals) after it."""
TAKE_LIMIT = 20
"""At most this many requests are taken per tick (the rest wait for the next, or expire)."""


def request_ttl(interval_s: float) -> float:
    """How long a request waits for a leader: two ticks, and never less than a minute (a
    leadership change takes up to one elector retry on top of a tick)."""
    return max(2.0 * interval_s, MIN_TTL_S)


@dataclass(frozen=True)
class HandedRequest:
    """A request the leader took: ``reason`` is the health monitor's (e.g. a check's name)."""

    id: int
    requested_at: datetime
    reason: str


class HandOver:
    """A follower's side (:meth:`emergency_scale_up` stores) and the leader's (:meth:`take`).

    Usable on its own as the health monitor's scale target (``emergency_requester``) in a
    process that runs no scaler loop while the deployment's scaler mode is not ``off``.
    """

    def __init__(
        self,
        db: Database,
        *,
        interval_s: float,
        ttl_s: float | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.interval_s = interval_s
        self.ttl_s = request_ttl(interval_s) if ttl_s is None else ttl_s
        self.clock = clock

    async def emergency_scale_up(self, why: str) -> ScaleAnswer:
        """Store the request for the scaler's leader; the answer says so (not accepted yet)."""
        async with self.db.acquire() as conn:
            request_id = await repo.insert_request(conn, at=self.clock(), reason=why)
        log.info("scaler.request_handed_over", request=request_id, reason=why)
        return ScaleAnswer(
            False,
            f"{HANDED_OVER} as request {request_id}, which acts "
            f"on it at its next tick (every {self.interval_s:g} s) or drops it after "
            f"{self.ttl_s:g} s",
        )

    async def take(self) -> list[HandedRequest]:
        """Expire the requests older than ``ttl_s``, then take the pending ones, oldest first."""
        now = self.clock()
        cutoff = now - timedelta(seconds=self.ttl_s)
        note = f"expired: not taken by the scaler's leader within {self.ttl_s:g} s"
        async with self.db.acquire() as conn, conn.transaction():
            expired = await repo.expire_requests(conn, before=cutoff, at=now, answer=note)
            rows = await repo.take_requests(conn, at=now, limit=TAKE_LIMIT)
        if expired:
            log.warning("scaler.requests_expired", requests=expired, ttl_s=self.ttl_s)
        return [HandedRequest(int(r["id"]), r["requested_at"], str(r["reason"])) for r in rows]

    async def serve(self, act: Callable[[str, int], Awaitable[ScaleAnswer]]) -> None:
        """The leader's side, at the start of each tick: take the pending requests and act on
        each (``act(reason, request_id)``, the scaler's own emergency path), keeping the answers
        with them. Failures are logged and counted, never raised: the tick goes on without them.
        """
        try:
            taken = await self.take()
        except Exception as exc:
            ERRORS.inc()
            log.warning("scaler.requests_unreadable", error=detail(exc))
            return
        for request in taken:
            try:
                answer = await act(request.reason, request.id)
            except Exception as exc:  # Postgres or the observer failed mid-way
                ERRORS.inc()
                answer = ScaleAnswer(False, f"not scaled: the scaler failed ({detail(exc)})")
            log.warning("scaler.request_taken", request=request.id, answer=answer.reason)
            try:
                await self.settle(request.id, answer)
            except Exception as exc:
                log.warning("scaler.request_unsettled", request=request.id, error=detail(exc))

    async def settle(self, request_id: int, answer: ScaleAnswer) -> None:
        """Keep the leader's answer with the request it took."""
        text = answer.reason
        if answer.accepted or not text.startswith("not scaled"):
            text = f"{'scaled' if answer.accepted else 'not scaled'}: {text}"
        async with self.db.acquire() as conn:
            await repo.settle_request(conn, request_id, text[:2000])

    async def purge(self, older_than: datetime) -> int:
        """Delete requests made before ``older_than``; returns how many."""
        async with self.db.acquire() as conn:
            return await repo.purge_requests(conn, older_than)
