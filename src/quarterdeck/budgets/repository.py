"""Budgets' SQL: limits in ``tenant_budgets`` and ``key_budgets``, holds in ``budget_holds``, and
spend summed from the billing records (``run_turns`` for runs, ``gateway_calls`` for gateway
traffic, ``runs.cost_usd`` for one run's own turns).

Spend is computed, never counted, so it cannot drift from what was billed. A hold that has not
expired counts as spent for every scope it names (its tenant, key and run): it is a call in
flight whose cost is not recorded yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import asyncpg

from quarterdeck.budgets.models import KeyBudget, TenantBudget, period_starts

_TENANT_SPEND = """
SELECT t.day + g.day + h.held AS day, t.month + g.month + h.held AS month
  FROM (SELECT coalesce(sum(t.cost_usd) FILTER (WHERE t.created_at >= $2), 0) AS day,
               coalesce(sum(t.cost_usd), 0) AS month
          FROM run_turns t JOIN runs r ON r.id = t.run_id
         WHERE r.tenant = $1 AND t.created_at >= $3 AND t.created_at < $4) t,
       (SELECT coalesce(sum(cost_usd) FILTER (WHERE created_at >= $2), 0) AS day,
               coalesce(sum(cost_usd), 0) AS month
          FROM gateway_calls
         WHERE tenant = $1 AND created_at >= $3 AND created_at < $4) g,
       (SELECT coalesce(sum(amount_usd), 0) AS held
          FROM budget_holds WHERE tenant = $1 AND expires_at > $5) h
"""

_KEY_SPEND = """
SELECT g.day + h.held AS day, g.month + h.held AS month
  FROM (SELECT coalesce(sum(cost_usd) FILTER (WHERE created_at >= $2), 0) AS day,
               coalesce(sum(cost_usd), 0) AS month
          FROM gateway_calls
         WHERE key_id = $1 AND created_at >= $3 AND created_at < $4) g,
       (SELECT coalesce(sum(amount_usd), 0) AS held
          FROM budget_holds WHERE key_id = $1 AND expires_at > $5) h
"""


async def spend(conn: asyncpg.Connection, tenant: str, now: datetime) -> tuple[Decimal, Decimal]:
    """(spent today, spent this month) in USD, UTC periods, up to ``now``: the tenant's run
    turns, its gateway calls, and its holds still live at ``now``."""
    day, month = period_starts(now)
    row = await conn.fetchrow(
        _TENANT_SPEND, tenant, day, month, now + timedelta(microseconds=1), now
    )
    assert row is not None  # aggregates always return one row
    return Decimal(row["day"]), Decimal(row["month"])


async def key_spend(
    conn: asyncpg.Connection, key_id: str, now: datetime
) -> tuple[Decimal, Decimal]:
    """(today, this month) for one API key: its gateway calls and live holds."""
    day, month = period_starts(now)
    row = await conn.fetchrow(_KEY_SPEND, key_id, day, month, now + timedelta(microseconds=1), now)
    assert row is not None
    return Decimal(row["day"]), Decimal(row["month"])


async def read_limits(
    conn: asyncpg.Connection, tenant: str
) -> tuple[Decimal | None, Decimal | None]:
    """(daily, monthly) limits; (None, None) for a tenant without a budget row."""
    row = await conn.fetchrow(
        "SELECT daily_usd, monthly_usd FROM tenant_budgets WHERE tenant = $1", tenant
    )
    return (None, None) if row is None else (row["daily_usd"], row["monthly_usd"])


async def upsert(
    conn: asyncpg.Connection, tenant: str, daily: Decimal | None, monthly: Decimal | None
) -> TenantBudget:
    row = await conn.fetchrow(
        """
        INSERT INTO tenant_budgets (tenant, daily_usd, monthly_usd) VALUES ($1, $2, $3)
        ON CONFLICT (tenant) DO UPDATE
           SET daily_usd = excluded.daily_usd, monthly_usd = excluded.monthly_usd,
               updated_at = now()
        RETURNING *
        """,
        tenant,
        daily,
        monthly,
    )
    assert row is not None  # INSERT ... RETURNING always returns the row
    return TenantBudget.model_validate(dict(row))


async def get(conn: asyncpg.Connection, tenant: str) -> TenantBudget | None:
    row = await conn.fetchrow("SELECT * FROM tenant_budgets WHERE tenant = $1", tenant)
    return TenantBudget.model_validate(dict(row)) if row else None


async def list_all(conn: asyncpg.Connection) -> list[TenantBudget]:
    rows = await conn.fetch("SELECT * FROM tenant_budgets ORDER BY tenant")
    return [TenantBudget.model_validate(dict(r)) for r in rows]


# -- key budgets ---------------------------------------------------------------------------------
async def upsert_key(
    conn: asyncpg.Connection, key_id: str, daily: Decimal | None, monthly: Decimal | None
) -> KeyBudget:
    row = await conn.fetchrow(
        """
        INSERT INTO key_budgets (key_id, daily_usd, monthly_usd) VALUES ($1, $2, $3)
        ON CONFLICT (key_id) DO UPDATE
           SET daily_usd = excluded.daily_usd, monthly_usd = excluded.monthly_usd,
               updated_at = now()
        RETURNING *
        """,
        key_id,
        daily,
        monthly,
    )
    assert row is not None
    return KeyBudget.model_validate(dict(row))


async def get_key(conn: asyncpg.Connection, key_id: str) -> KeyBudget | None:
    row = await conn.fetchrow("SELECT * FROM key_budgets WHERE key_id = $1", key_id)
    return KeyBudget.model_validate(dict(row)) if row else None


async def list_keys(conn: asyncpg.Connection, tenant: str | None) -> list[tuple[str, KeyBudget]]:
    """Every key budget with its key's tenant (``tenant`` None: every tenant's), by tenant and
    key id. A budget whose key no longer exists (an erased tenant's) is left out."""
    rows = await conn.fetch(
        """
        SELECT b.key_id, b.daily_usd, b.monthly_usd, b.updated_at, k.tenant
          FROM key_budgets b JOIN api_keys k ON k.id = b.key_id
         WHERE $1::text IS NULL OR k.tenant = $1
         ORDER BY k.tenant, b.key_id
        """,
        tenant,
    )
    return [(r["tenant"], KeyBudget.model_validate(dict(r))) for r in rows]


# -- holds ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AppliedLimits:
    """The limits that apply to one call, as the reservation read (and locked) them."""

    tenant_daily: Decimal | None
    tenant_monthly: Decimal | None
    key_daily: Decimal | None
    key_monthly: Decimal | None
    run_total: Decimal | None


@dataclass(frozen=True, slots=True)
class Spent:
    """Spend plus live holds per limited scope, as the reservation saw it (0 where unlimited)."""

    tenant_day: Decimal
    tenant_month: Decimal
    key_day: Decimal
    key_month: Decimal
    run_total: Decimal


@dataclass(frozen=True, slots=True)
class Reservation:
    """What one reservation found: the limits, the spend, and the hold (None: refused)."""

    hold_id: str | None
    limits: AppliedLimits
    spent: Spent


# The reservation is one call of the server-side function ``qd_reserve_budget`` (migration
# 0010_gateway.sql says why it is a function and not one statement): the row locks are held only
# while Postgres executes it, never across a round trip to a busy client.

RESERVE_HORIZON = timedelta(days=1)
"""How far past ``now`` a reservation counts settled spend (see :func:`reserve_hold`)."""

_RESERVE = "SELECT * FROM qd_reserve_budget($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"


async def reserve_hold(
    conn: asyncpg.Connection,
    *,
    hold_id: str,
    tenant: str,
    key_id: str | None,
    run_id: str | None,
    amount: Decimal,
    now: datetime,
    expires_at: datetime,
    lock_timeout_ms: int,
) -> Reservation | None:
    """Hold ``amount`` if ``spend + holds + amount`` stays within every limit that applies
    (see ``qd_reserve_budget`` in migration 0010): one round trip, its own transaction when
    called outside one.
    None when no limit applies; a :class:`Reservation` with ``hold_id`` None when refused."""
    day, month = period_starts(now)
    # No upper bound that could hide spend: a turn another process settles after ``now`` was
    # read (while this call waited for a pool connection or the budget row's lock) has its
    # hold deleted and its cost stamped with its own, later, transaction time. Bounded at
    # ``now``, that cost was in neither sum, and concurrent runs overspent their tenant's
    # budget (seen with 100 runs on two worker processes). Counting up to a day ahead is
    # conservative: nothing is dated later but by clock skew, which should count too.
    end = now + RESERVE_HORIZON
    args = (
        hold_id,
        tenant,
        key_id,
        run_id,
        amount,
        day,
        month,
        end,
        now,
        expires_at,
        lock_timeout_ms,
    )
    row = await conn.fetchrow(_RESERVE, *args)
    if row is None:
        return None
    limits = AppliedLimits(
        row["o_t_daily"], row["o_t_monthly"], row["o_k_daily"], row["o_k_monthly"], row["o_r_total"]
    )
    spent = Spent(
        row["o_t_day"], row["o_t_month"], row["o_k_day"], row["o_k_month"], row["o_r_spent"]
    )
    return Reservation(row["o_hold"], limits, spent)


async def delete_holds(conn: asyncpg.Connection, ids: list[str]) -> int:
    """Delete holds by id (settled or released); ids already gone are ignored. Returns how many
    were deleted. The gateway recorder calls it in the transaction that records the calls'
    costs, so a call's hold and its cost are never both counted, nor neither."""
    if not ids:
        return 0
    result = await conn.execute("DELETE FROM budget_holds WHERE id = ANY($1::text[])", ids)
    return int(result.rsplit(" ", 1)[-1])


async def purge_expired_holds(conn: asyncpg.Connection, now: datetime) -> int:
    """Delete holds that expired before ``now`` (they are already ignored; this frees space)."""
    result = await conn.execute("DELETE FROM budget_holds WHERE expires_at <= $1", now)
    return int(result.rsplit(" ", 1)[-1])
