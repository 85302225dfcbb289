"""Budget holds: reserve a call's worst-case cost before the call, so budgets cannot be overspent.

A check-then-call budget lets every concurrent call see the same "room left" and all of them
pass (LiteLLM #34732, PR #40002: 4 of 5 concurrent calls admitted past a cap). Here a call
first *reserves* its worst case: one atomic call locks every budget row that applies (tenant,
key, run: always in that order, so two reservations never deadlock), then sums spend plus live
holds for each limit and inserts the hold only if every limit still has room. A call that no
budget applies to costs one indexed read and writes nothing. Reservations
against one budget therefore queue on its row lock, and each one sees the holds of all that went
before. The gateway recorder deletes the hold in the transaction that records the call's
metered cost (``repository.delete_holds``), so spend + holds only ever steps down to the truth.
A hold whose process died is ignored after ``ttl_s``.

The reservation is one round trip to a server-side function (``repository.reserve_hold``): the
locks are held only while Postgres runs it, never across a round trip to a busy event loop, and
its check takes a snapshot after the locks are held. (A single SQL statement would keep the
snapshot from before it waited for the lock and admit calls over the limit.)

Most calls have no budget at all, so "none applies" is remembered per (tenant, key, run) for
``unlimited_ttl_s`` (2 s): such a call then costs no round trip. A budget set through
:class:`~.service.BudgetService` in this process applies at once (it calls :meth:`forget`); one
set on another replica applies there within the TTL.

When the check cannot finish within ``timeout_s`` (lock contention, a slow or absent database)
the call is refused with ``Unavailable`` (fail closed, the default: a hard budget is the point),
or with ``fail_open`` admitted without a hold, logged and counted in
``claude_agent_budget_check_failures_total``. (A reservation cancelled at the deadline may still
commit its hold server-side; it then counts until it expires, erring on the side of the budget.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal

import asyncpg
import structlog
from prometheus_client import Counter

from quarterdeck import metrics
from quarterdeck.budgets import repository as repo
from quarterdeck.budgets.models import (
    BudgetExceeded,
    Limit,
    first_exceeded,
    seconds_until_reset,
)
from quarterdeck.exceptions import Unavailable
from quarterdeck.kit.clock import utcnow
from quarterdeck.kit.ids import new_id
from quarterdeck.store.pool import CONNECTION_ERRORS, Database

log = structlog.get_logger(__name__)

BUDGET_CHECK_FAILURES = Counter(
    "claude_agent_budget_check_failures_total",
    "Budget reservations that could not finish in time or reach Postgres, by what was done: "
    "admitted (fail open) or refused (fail closed)",
    ["outcome"],
    registry=metrics.REGISTRY,
)

_TIMEOUTS: tuple[type[BaseException], ...] = (
    TimeoutError,
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.LockNotAvailableError,
)
_CHECK_FAILED: tuple[type[BaseException], ...] = (*_TIMEOUTS, *CONNECTION_ERRORS, Unavailable)
"""The check could not finish: these fail open or closed. Anything else (a bug) propagates."""


class BudgetHolds:
    """Reserve and release holds against tenant, key and run budgets (see the module doc)."""

    def __init__(
        self,
        db: Database,
        *,
        ttl_s: float = 900.0,
        timeout_s: float = 2.0,
        fail_open: bool = False,
        unlimited_ttl_s: float = 2.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.ttl = timedelta(seconds=ttl_s)
        self.timeout_s = timeout_s
        self.fail_open = fail_open
        self.unlimited_ttl_s = unlimited_ttl_s
        self.clock = clock
        self._unlimited: dict[tuple[str, str | None, str | None], float] = {}

    def forget(self) -> None:
        """A budget changed: stop trusting what was remembered as unlimited."""
        self._unlimited.clear()

    async def reserve(
        self, *, tenant: str, key_id: str | None, run_id: str | None, amount: Decimal
    ) -> str | None:
        """Hold ``amount`` USD against every budget that applies; return the hold's id.

        None when no budget applies (nothing is written), or when the check failed and
        ``fail_open`` is set. Raises :class:`BudgetExceeded` for the first limit (tenant daily,
        tenant monthly, key daily, key monthly, run total) that the call could pass, and
        :class:`Unavailable` when the check failed and ``fail_open`` is not set.
        """
        scopes = (tenant, key_id, run_id)
        if self._unlimited.get(scopes, 0.0) > time.monotonic():
            return None
        now = self.clock()
        try:
            async with asyncio.timeout(self.timeout_s):
                started = time.monotonic()
                async with self.db.acquire() as conn:
                    left_ms = int((self.timeout_s - (time.monotonic() - started)) * 1000)
                    found = await repo.reserve_hold(
                        conn,
                        hold_id=new_id("hold"),
                        tenant=tenant,
                        key_id=key_id,
                        run_id=run_id,
                        amount=amount,
                        now=now,
                        expires_at=now + self.ttl,
                        lock_timeout_ms=max(1, left_ms),
                    )
        except _CHECK_FAILED as exc:
            self._failed(tenant, exc)  # raises Unavailable unless failing open
            return None
        if found is None:
            if len(self._unlimited) >= 10_000:
                self._unlimited.clear()
            self._unlimited[scopes] = time.monotonic() + self.unlimited_ttl_s
            return None
        if found.hold_id is not None:
            return found.hold_id
        limits = _limits(found.limits, found.spent, tenant, key_id, run_id)
        failed = first_exceeded(limits, amount)
        if failed is None:  # pragma: no cover - the function and first_exceeded share one rule
            raise RuntimeError("budget hold refused but no limit is exceeded")
        raise BudgetExceeded(
            tenant,
            failed.period,
            failed.limit,
            failed.spent,
            amount,
            scope=failed.scope,
            subject=failed.subject,
            retry_after_s=seconds_until_reset(failed.period, now),
        )

    async def release(self, hold_id: str) -> None:
        """Drop a hold whose call never reached the upstream (nothing to bill)."""
        async with self.db.acquire() as conn:
            await repo.delete_holds(conn, [hold_id])

    async def purge_expired(self) -> int:
        """Delete expired holds (ignored already); run it now and then to keep the table small."""
        async with self.db.acquire() as conn:
            return await repo.purge_expired_holds(conn, self.clock())

    def _failed(self, tenant: str, exc: BaseException) -> None:
        outcome = "admitted" if self.fail_open else "refused"
        BUDGET_CHECK_FAILURES.labels(outcome).inc()
        log.warning(
            "budget.check_failed",
            tenant=tenant,
            outcome=outcome,
            error=type(exc).__name__,
            timeout_s=self.timeout_s,
        )
        if self.fail_open:
            return
        why = (
            f"it did not finish within {self.timeout_s:g} s"
            if isinstance(exc, _TIMEOUTS)
            else f"Postgres is unreachable ({type(exc).__name__})"
        )
        raise Unavailable(
            f"budget check unavailable: {why}; the call is refused (budgets fail closed)",
            retry_after=max(1, round(self.timeout_s)),
        ) from exc


def _limits(
    limits: repo.AppliedLimits,
    spent: repo.Spent,
    tenant: str,
    key_id: str | None,
    run_id: str | None,
) -> list[Limit]:
    """The limits that apply, in the order they are reported: tenant, key, run."""
    found: list[Limit] = []
    if limits.tenant_daily is not None:
        found.append(Limit("tenant", tenant, "daily", limits.tenant_daily, spent.tenant_day))
    if limits.tenant_monthly is not None:
        found.append(Limit("tenant", tenant, "monthly", limits.tenant_monthly, spent.tenant_month))
    if key_id is not None and limits.key_daily is not None:
        found.append(Limit("key", key_id, "daily", limits.key_daily, spent.key_day))
    if key_id is not None and limits.key_monthly is not None:
        found.append(Limit("key", key_id, "monthly", limits.key_monthly, spent.key_month))
    if run_id is not None and limits.run_total is not None:
        found.append(Limit("run", run_id, "total", limits.run_total, spent.run_total))
    return found
