"""Tenant and key budgets: daily and monthly USD limits, their status and their metrics.

Spend is computed, not counted: the sum of ``run_turns.cost_usd`` for the tenant's runs plus
``gateway_calls.cost_usd`` for its gateway traffic in the current UTC day or month, plus the
holds of calls still in flight. ``run_turns`` and ``gateway_calls`` are the billing records (one
row per completed turn or relayed call), so a resumed or retried run is never counted twice and
the budget cannot drift from reality. Unpriced models are charged at the fallback price
(``providers.pricing.Pricing``), never as free.

Enforcement is not here: every model call, a run's or the gateway's, first reserves its worst
case in :mod:`.holds` (one atomic statement against the tenant, key and run budgets), so
concurrent calls cannot together pass a limit. Periods are UTC calendar days and months.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

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


def _figures(
    budget: TenantBudget | KeyBudget | None, day: Decimal, month: Decimal, now: datetime
) -> dict[str, Any]:
    """A budget status's limits, spend and remaining USD (no limit: None), tenant's or key's."""
    daily = budget.daily_usd if budget else None
    monthly = budget.monthly_usd if budget else None
    return {
        "daily_limit_usd": daily,
        "monthly_limit_usd": monthly,
        "daily_spent_usd": day,
        "monthly_spent_usd": month,
        "daily_remaining_usd": remaining(daily, day),
        "monthly_remaining_usd": remaining(monthly, month),
        "as_of": now,
        "updated_at": budget.updated_at if budget else None,
    }


class BudgetService:
    """Budget use-cases: set limits and read status. Enforcement is :mod:`.holds` (every model
    call, run or gateway, reserves its worst case there first)."""

    def __init__(
        self,
        db: Database,
        *,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        """``on_change`` runs after a limit is set here: the gateway's holds stop trusting
        what they remembered as unlimited, so the new limit applies at once in this process."""
        self.db = db
        self.on_change = on_change

    async def set(
        self,
        tenant: str,
        daily: Decimal | float | None,
        monthly: Decimal | float | None,
    ) -> TenantBudget:
        budget = await self.db.run(
            lambda conn: repo.upsert(conn, tenant, as_money(daily), as_money(monthly))
        )
        if self.on_change is not None:
            self.on_change()
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
        return BudgetStatus(tenant=tenant, **_figures(budget, day, month, now))

    async def remaining(
        self, tenant: str, now: datetime | None = None
    ) -> tuple[Decimal | None, Decimal | None]:
        """(daily, monthly) USD left, never below 0; None for a period without a limit."""
        s = await self.status(tenant, now)
        return s.daily_remaining_usd, s.monthly_remaining_usd

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
        return KeyBudgetStatus(key_id=key_id, tenant=owner, **_figures(budget, day, month, now))

    # -- listings (the dashboard's budgets page) ----------------------------------------------
    async def list_tenants(
        self, tenant: str | None = None, now: datetime | None = None
    ) -> list[BudgetStatus]:
        """The status of every tenant that has a budget (``tenant``: only that one, if it has
        one), by tenant; spend is computed as :meth:`status` computes it."""
        now = now or utcnow()
        async with self.db.acquire() as conn:
            budgets = [b for b in await repo.list_all(conn) if tenant in (None, b.tenant)]
            spends = [await repo.spend(conn, b.tenant, now) for b in budgets]
        return [
            BudgetStatus(tenant=b.tenant, **_figures(b, day, month, now))
            for b, (day, month) in zip(budgets, spends, strict=True)
        ]

    async def list_keys(
        self, tenant: str | None = None, now: datetime | None = None
    ) -> list[KeyBudgetStatus]:
        """The status of every API key that has a budget, of ``tenant``'s keys (None: every
        tenant's), by tenant and key id; spend as :meth:`key_status` computes it."""
        now = now or utcnow()
        async with self.db.acquire() as conn:
            budgets = await repo.list_keys(conn, tenant)
            spends = [await repo.key_spend(conn, b.key_id, now) for _, b in budgets]
        return [
            KeyBudgetStatus(key_id=b.key_id, tenant=owner, **_figures(b, day, month, now))
            for (owner, b), (day, month) in zip(budgets, spends, strict=True)
        ]

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
