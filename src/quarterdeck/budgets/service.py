"""Tenant budgets: daily and monthly USD limits checked before every provider call.

Spend is computed, not counted: the sum of ``run_turns.cost_usd`` for the tenant's runs in the
current UTC day or month. ``run_turns`` is the billing record (one row per completed turn, in
the same statement that bills the run), so a resumed or retried run is never counted twice and
the budget cannot drift from reality. Turns of models with unknown prices add nothing (their
cost is NULL), like the cost counter.

:meth:`BudgetService.check` compares ``spent + estimate`` with each limit, where the estimate is
the executor's worst case for the next call, so a tenant stops *before* the call that would
cross the line rather than after it. Periods are UTC calendar days and months.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from quarterdeck import metrics
from quarterdeck.exceptions import QuarterdeckError
from quarterdeck.kit.clock import utcnow
from quarterdeck.store.pool import Database

TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$"
PERIODS = ("daily", "monthly")
Money = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]
"""Exact in Python (numeric in Postgres), a plain number in JSON."""


class BudgetExceeded(QuarterdeckError):
    status = 402
    type_slug = "budget-exceeded"
    title = "Tenant budget exceeded"

    def __init__(
        self,
        tenant: str,
        period: str,
        limit: Decimal,
        spent: Decimal,
        estimate: Decimal,
    ) -> None:
        when = "today (UTC)" if period == "daily" else "this month (UTC)"
        super().__init__(
            f"tenant {tenant!r} {period} budget exceeded: ${spent:.4f} spent of ${limit:.4f} "
            f"{when}, and the next call could cost up to ${estimate:.4f}",
            extra={
                "tenant": tenant,
                "period": period,
                "limit_usd": float(limit),
                "spent_usd": float(spent),
                "estimate_usd": float(estimate),
            },
        )
        self.tenant, self.period = tenant, period
        self.limit, self.spent, self.estimate = limit, spent, estimate


class TenantBudget(BaseModel):
    tenant: str
    daily_usd: Money | None
    monthly_usd: Money | None
    updated_at: datetime


class BudgetUpdate(BaseModel):
    """Body of ``PUT /v1/tenants/{tenant}/budget``; a null limit means "no limit"."""

    model_config = ConfigDict(extra="forbid")

    daily_usd: Money | None = Field(default=None, ge=0, le=10_000_000)
    monthly_usd: Money | None = Field(default=None, ge=0, le=100_000_000)


class BudgetStatus(BaseModel):
    tenant: str
    daily_limit_usd: Money | None
    monthly_limit_usd: Money | None
    daily_spent_usd: Money
    monthly_spent_usd: Money
    daily_remaining_usd: Money | None
    monthly_remaining_usd: Money | None
    as_of: datetime
    updated_at: datetime | None


def period_starts(now: datetime) -> tuple[datetime, datetime]:
    """Start of the UTC day and month containing ``now``."""
    now = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return day, day.replace(day=1)


def _remaining(limit: Decimal | None, spent: Decimal) -> Decimal | None:
    return None if limit is None else max(Decimal(0), limit - spent)


async def spend(conn: asyncpg.Connection, tenant: str, now: datetime) -> tuple[Decimal, Decimal]:
    """(spent today, spent this month) in USD, UTC periods, up to ``now``."""
    day, month = period_starts(now)
    row = await conn.fetchrow(
        """
        SELECT coalesce(sum(t.cost_usd) FILTER (WHERE t.created_at >= $2), 0) AS day,
               coalesce(sum(t.cost_usd), 0) AS month
          FROM run_turns t JOIN runs r ON r.id = t.run_id
         WHERE r.tenant = $1 AND t.created_at >= $3 AND t.created_at < $4
        """,
        tenant,
        day,
        month,
        now + timedelta(microseconds=1),
    )
    assert row is not None
    return Decimal(row["day"]), Decimal(row["month"])


class BudgetService:
    """Budget use-cases.

    :meth:`check` runs before every provider call, so the tenant's *limits* are cached for
    ``limits_ttl_s`` (spend never is): a tenant without a budget then costs no query at all. A
    limit set through this service applies at once in this process, and within the TTL on other
    replicas.
    """

    def __init__(self, db: Database, *, limits_ttl_s: float = 2.0) -> None:
        self.db = db
        self.limits_ttl_s = limits_ttl_s
        self._limits: dict[str, tuple[float, tuple[Any, Any] | None]] = {}
        self._reading: dict[str, asyncio.Future[tuple[Any, Any] | None]] = {}

    async def _limits_of(self, tenant: str) -> tuple[Any, Any] | None:
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

    async def _read_limits(self, tenant: str) -> tuple[Any, Any] | None:
        async with self.db.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT daily_usd, monthly_usd FROM tenant_budgets WHERE tenant = $1", tenant
            )
        limits = None if row is None else (row["daily_usd"], row["monthly_usd"])
        if limits == (None, None):
            limits = None
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
        row = await self.db.run(
            lambda conn: conn.fetchrow(
                """
                INSERT INTO tenant_budgets (tenant, daily_usd, monthly_usd) VALUES ($1, $2, $3)
                ON CONFLICT (tenant) DO UPDATE
                   SET daily_usd = excluded.daily_usd, monthly_usd = excluded.monthly_usd,
                       updated_at = now()
                RETURNING *
                """,
                tenant,
                _money(daily),
                _money(monthly),
            )
        )
        assert row is not None  # INSERT ... RETURNING always returns the row
        self._limits.pop(tenant, None)
        self._reading.pop(tenant, None)
        budget = TenantBudget.model_validate(dict(row))
        async with self.db.acquire() as conn:
            self._publish(budget, await spend(conn, tenant, utcnow()))
        return budget

    async def get(self, tenant: str) -> TenantBudget | None:
        row = await self.db.run(
            lambda conn: conn.fetchrow("SELECT * FROM tenant_budgets WHERE tenant = $1", tenant)
        )
        return TenantBudget.model_validate(dict(row)) if row else None

    async def status(self, tenant: str, now: datetime | None = None) -> BudgetStatus:
        now = now or utcnow()
        async with self.db.acquire() as conn:
            row = await conn.fetchrow("SELECT * FROM tenant_budgets WHERE tenant = $1", tenant)
            day, month = await spend(conn, tenant, now)
        budget = TenantBudget.model_validate(dict(row)) if row else None
        daily = budget.daily_usd if budget else None
        monthly = budget.monthly_usd if budget else None
        return BudgetStatus(
            tenant=tenant,
            daily_limit_usd=daily,
            monthly_limit_usd=monthly,
            daily_spent_usd=day,
            monthly_spent_usd=month,
            daily_remaining_usd=_remaining(daily, day),
            monthly_remaining_usd=_remaining(monthly, month),
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
            day, month = await spend(conn, tenant, now)
        raw = estimate_usd() if callable(estimate_usd) else estimate_usd
        estimate = _money(raw) or Decimal(0)
        for period, limit, spent in (
            ("daily", limits[0], day),
            ("monthly", limits[1], month),
        ):
            if limit is not None and spent + estimate > limit:
                raise BudgetExceeded(tenant, period, Decimal(limit), spent, estimate)

    async def refresh_metrics(self, now: datetime | None = None) -> None:
        """Mirror every budgeted tenant's limits and remaining USD into the gauges."""
        now = now or utcnow()
        async with self.db.acquire() as conn:
            rows = await conn.fetch("SELECT * FROM tenant_budgets ORDER BY tenant")
            spends = {r["tenant"]: await spend(conn, r["tenant"], now) for r in rows}
        for r in rows:
            self._publish(TenantBudget.model_validate(dict(r)), spends[r["tenant"]])

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
                left = _remaining(limit, spent[i]) or Decimal(0)
                metrics.BUDGET_REMAINING.labels(tenant, period).set(float(left))


def _remove(gauge: Any, tenant: str, period: str) -> None:
    try:
        gauge.remove(tenant, period)
    except KeyError:
        pass


def _money(value: Decimal | float | None) -> Decimal | None:
    if value is None:
        return None
    return value if isinstance(value, Decimal) else Decimal(str(value))
