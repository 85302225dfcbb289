"""Tenant and key budgets: daily and monthly USD limits checked before every provider call.

Spend is computed, not counted: the sum of ``run_turns.cost_usd`` for the tenant's runs plus
``gateway_calls.cost_usd`` for its gateway traffic in the current UTC day or month, plus the
holds of gateway calls still in flight (``budgets.holds``). ``run_turns`` and ``gateway_calls``
are the billing records (one row per completed turn or relayed call), so a resumed or retried
run is never counted twice and the budget cannot drift from reality. Turns of models with
unknown prices add nothing (their cost is NULL), like the cost counter.

:meth:`BudgetService.check` compares ``spent + estimate`` with each limit, where the estimate is
the executor's worst case for the next call, so a tenant stops *before* the call that would
cross the line rather than after it. Periods are UTC calendar days and months.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

import asyncpg
from prometheus_client import Gauge

from quarterdeck import metrics
from quarterdeck.budgets import repository as repo
from quarterdeck.budgets.models import (
    BudgetExceeded,
    BudgetStatus,
    KeyBudget,
    KeyBudgetStatus,
    TenantBudget,
    as_money,
    period_starts,
    remaining,
)
from quarterdeck.exceptions import NotFound
from quarterdeck.kit.clock import utcnow
from quarterdeck.security.auth import repository as keys
from quarterdeck.store.pool import Database

__all__ = [
    "BudgetExceeded",
    "BudgetService",
    "BudgetStatus",
    "KeyBudget",
    "KeyBudgetStatus",
    "TenantBudget",
    "period_starts",
]

Limits = tuple[Decimal | None, Decimal | None]


class BudgetService:
    """Budget use-cases.

    :meth:`check` runs before every provider call, so the tenant's *limits* are cached for
    ``limits_ttl_s`` (spend never is): a tenant without a budget then costs no query at all. A
    limit set through this service applies at once in this process, and within the TTL on other
    replicas.
    """

    def __init__(
        self,
        db: Database,
        *,
        limits_ttl_s: float = 2.0,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        """``on_change`` runs after a limit is set here: the gateway's holds stop trusting
        what they remembered as unlimited, so the new limit applies at once in this process."""
        self.db = db
        self.limits_ttl_s = limits_ttl_s
        self.on_change = on_change
        self._limits: dict[str, tuple[float, Limits | None]] = {}
        self._reading: dict[str, asyncio.Future[Limits | None]] = {}

    async def _limits_of(self, tenant: str) -> Limits | None:
        """The tenant's limits, cached for ``limits_ttl_s``. When they expire, one caller reads
        them again and concurrent callers wait for that read: hundreds of runs checking at the
        same moment must not each take a pooled connection for the same row."""
        cached = self._limits.get(tenant)
        if cached is not None and time.monotonic() - cached[0] < self.limits_ttl_s:
            return cached[1]
        pending = self._reading.get(tenant)
        if pending is None:
            pending = asyncio.ensure_future(self._read_limits(tenant))
            self._reading[tenant] = pending
            pending.add_done_callback(lambda done: self._forget_read(tenant, done))
        return await asyncio.shield(pending)

    def _forget_read(self, tenant: str, done: object) -> None:
        if self._reading.get(tenant) is done:
            del self._reading[tenant]

    async def _read_limits(self, tenant: str) -> Limits | None:
        async with self.db.acquire() as conn:
            read = await repo.read_limits(conn, tenant)
        limits = None if read == (None, None) else read
        if self._reading.get(tenant) is not asyncio.current_task():
            return limits  # set() changed the limits meanwhile: do not cache this older read
        if len(self._limits) > 10_000:
            self._limits.clear()
        self._limits[tenant] = (time.monotonic(), limits)
        return limits

    async def set(
        self,
        tenant: str,
        daily: Decimal | float | None,
        monthly: Decimal | float | None,
    ) -> TenantBudget:
        budget = await self.db.run(
            lambda conn: repo.upsert(conn, tenant, as_money(daily), as_money(monthly))
        )
        self._limits.pop(tenant, None)
        if self.on_change is not None:
            self.on_change()
        self._reading.pop(tenant, None)
        async with self.db.acquire() as conn:
            self._publish(budget, await repo.spend(conn, tenant, utcnow()))
        return budget

    async def get(self, tenant: str) -> TenantBudget | None:
        return await self.db.run(lambda conn: repo.get(conn, tenant))

    async def status(self, tenant: str, now: datetime | None = None) -> BudgetStatus:
        now = now or utcnow()
        async with self.db.acquire() as conn:
            budget = await repo.get(conn, tenant)
            day, month = await repo.spend(conn, tenant, now)
        daily = budget.daily_usd if budget else None
        monthly = budget.monthly_usd if budget else None
        return BudgetStatus(
            tenant=tenant,
            daily_limit_usd=daily,
            monthly_limit_usd=monthly,
            daily_spent_usd=day,
            monthly_spent_usd=month,
            daily_remaining_usd=remaining(daily, day),
            monthly_remaining_usd=remaining(monthly, month),
            as_of=now,
            updated_at=budget.updated_at if budget else None,
        )

    async def remaining(
        self, tenant: str, now: datetime | None = None
    ) -> tuple[Decimal | None, Decimal | None]:
        """(daily, monthly) USD left, never below 0; None for a period without a limit."""
        s = await self.status(tenant, now)
        return s.daily_remaining_usd, s.monthly_remaining_usd

    async def check(
        self,
        tenant: str,
        estimate_usd: Decimal | float | Callable[[], Decimal | float],
        now: datetime | None = None,
    ) -> None:
        """Raise :class:`BudgetExceeded` if ``spent + estimate`` would pass either limit.

        A tenant without a budget passes without a query while its (absent) limits are cached.
        ``estimate_usd`` may be a callable, evaluated only when the tenant has a limit.
        """
        now = now or utcnow()
        limits = await self._limits_of(tenant)
        if limits is None:
            return
        async with self.db.acquire() as conn:
            day, month = await repo.spend(conn, tenant, now)
        raw = estimate_usd() if callable(estimate_usd) else estimate_usd
        estimate = as_money(raw) or Decimal(0)
        for period, limit, spent in (
            ("daily", limits[0], day),
            ("monthly", limits[1], month),
        ):
            if limit is not None and spent + estimate > limit:
                raise BudgetExceeded(tenant, period, Decimal(limit), spent, estimate)

    # -- key budgets (gateway traffic; enforced by budgets.holds) -----------------------------
    async def set_key(
        self,
        key_id: str,
        daily: Decimal | float | None,
        monthly: Decimal | float | None,
    ) -> tuple[str, KeyBudget]:
        """Set an API key's limits; returns (the key's tenant, the budget). 404 for no such key."""
        async with self.db.transaction() as conn:
            tenant = await _key_tenant(conn, key_id, None)
            budget = await repo.upsert_key(conn, key_id, as_money(daily), as_money(monthly))
        if self.on_change is not None:
            self.on_change()
        return tenant, budget

    async def key_status(
        self, key_id: str, tenant: str | None = None, now: datetime | None = None
    ) -> KeyBudgetStatus:
        """An API key's limits and spend. ``tenant`` (the caller's, None for all tenants) turns
        another tenant's key into not found."""
        now = now or utcnow()
        async with self.db.acquire() as conn:
            owner = await _key_tenant(conn, key_id, tenant)
            budget = await repo.get_key(conn, key_id)
            day, month = await repo.key_spend(conn, key_id, now)
        daily = budget.daily_usd if budget else None
        monthly = budget.monthly_usd if budget else None
        return KeyBudgetStatus(
            key_id=key_id,
            tenant=owner,
            daily_limit_usd=daily,
            monthly_limit_usd=monthly,
            daily_spent_usd=day,
            monthly_spent_usd=month,
            daily_remaining_usd=remaining(daily, day),
            monthly_remaining_usd=remaining(monthly, month),
            as_of=now,
            updated_at=budget.updated_at if budget else None,
        )

    async def refresh_metrics(self, now: datetime | None = None) -> None:
        """Mirror every budgeted tenant's limits and remaining USD into the gauges."""
        now = now or utcnow()
        async with self.db.acquire() as conn:
            budgets = await repo.list_all(conn)
            spends = [await repo.spend(conn, b.tenant, now) for b in budgets]
        for budget, spent in zip(budgets, spends, strict=True):
            self._publish(budget, spent)

    def _publish(self, budget: TenantBudget, spent: tuple[Decimal, Decimal] | None) -> None:
        tenant = metrics.bounded(budget.tenant)
        for i, (period, limit) in enumerate(
            (("daily", budget.daily_usd), ("monthly", budget.monthly_usd))
        ):
            if limit is None:
                _remove(metrics.BUDGET_LIMIT, tenant, period)
                _remove(metrics.BUDGET_REMAINING, tenant, period)
                continue
            metrics.BUDGET_LIMIT.labels(tenant, period).set(float(limit))
            if spent is not None:
                left = remaining(limit, spent[i]) or Decimal(0)
                metrics.BUDGET_REMAINING.labels(tenant, period).set(float(left))


async def _key_tenant(conn: asyncpg.Connection, key_id: str, tenant: str | None) -> str:
    """The tenant of API key ``key_id``; NotFound when there is no such key or ``tenant`` (not
    None) is another one: whether another tenant's key exists is not the caller's business."""
    record = await keys.get_key(conn, key_id)
    if record is None or (tenant is not None and record.tenant != tenant):
        raise NotFound(f"API key {key_id} not found")
    return record.tenant


def _remove(gauge: Gauge, tenant: str, period: str) -> None:
    try:
        gauge.remove(tenant, period)
    except KeyError:
        pass
