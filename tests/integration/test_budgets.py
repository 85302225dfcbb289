"""Tenant budgets against a real Postgres: limits, spend from run_turns, the pre-call check,
the gauges and the HTTP endpoints."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI

from quarterdeck import metrics
from quarterdeck.budgets import api as budgets_api
from quarterdeck.budgets.holds import BudgetHolds
from quarterdeck.budgets.service import BudgetExceeded, BudgetService, period_starts
from quarterdeck.kit.wiring import services
from quarterdeck.store.pool import Database

NOW = datetime(2025, 3, 15, 12, 0, tzinfo=UTC)


async def add_turn(
    db: Database, tenant: str, cost: str | None, at: datetime, run_id: str | None = None
) -> None:
    async with db.acquire() as conn:
        rid = run_id or f"run_{tenant}_{at:%m%d%H%M%S}_{cost}"
        await conn.execute(
            "INSERT INTO runs (id, tenant, agent_type, operation, prompt, model)"
            " VALUES ($1, $2, 'coder', 'task', 'p', 'm') ON CONFLICT (id) DO NOTHING",
            rid,
            tenant,
        )
        turn = await conn.fetchval(
            "SELECT coalesce(max(turn), 0) + 1 FROM run_turns WHERE run_id = $1", rid
        )
        await conn.execute(
            "INSERT INTO run_turns (run_id, turn, messages, model, cost_usd, created_at)"
            " VALUES ($1, $2, '[]'::jsonb, 'm', $3::numeric, $4)",
            rid,
            turn,
            cost,
            at,
        )


@pytest.fixture
async def spent(db: Database) -> BudgetService:
    """acme spent 3.75 on NOW's day and 7.75 in NOW's month (plus noise that must not count)."""
    await add_turn(db, "acme", "1.5", datetime(2025, 3, 15, 1, 0, tzinfo=UTC))
    await add_turn(db, "acme", "2.25", datetime(2025, 3, 15, 11, 59, tzinfo=UTC))
    await add_turn(db, "acme", "4.0", datetime(2025, 3, 1, 0, 0, tzinfo=UTC))
    await add_turn(db, "acme", None, datetime(2025, 3, 15, 2, 0, tzinfo=UTC))  # unpriced
    await add_turn(db, "acme", "100", datetime(2025, 2, 28, 23, 59, tzinfo=UTC))  # last month
    await add_turn(db, "acme", "9", datetime(2025, 3, 15, 12, 1, tzinfo=UTC))  # after NOW
    await add_turn(db, "other", "50", datetime(2025, 3, 15, 3, 0, tzinfo=UTC))  # other tenant
    return BudgetService(db)


def test_periods_are_utc_day_and_month() -> None:
    day, month = period_starts(datetime(2025, 3, 15, 23, 30, tzinfo=UTC))
    assert day == datetime(2025, 3, 15, tzinfo=UTC) and month == datetime(2025, 3, 1, tzinfo=UTC)


async def test_set_and_get(db: Database) -> None:
    service = BudgetService(db)
    assert await service.get("acme") is None
    first = await service.set("acme", 10, 200)
    assert first.daily_usd == Decimal(10) and first.monthly_usd == Decimal(200)
    again = await service.set("acme", None, Decimal("150.5"))
    got = await service.get("acme")
    assert got is not None and got.daily_usd is None and got.monthly_usd == Decimal("150.5")
    assert again.updated_at >= first.updated_at


async def test_spend_and_remaining_come_from_run_turns(spent: BudgetService) -> None:
    await spent.set("acme", 10, 20)
    status = await spent.status("acme", NOW)
    assert status.daily_spent_usd == Decimal("3.75")
    assert status.monthly_spent_usd == Decimal("7.75")
    assert await spent.remaining("acme", NOW) == (Decimal("6.25"), Decimal("12.25"))
    await spent.set("acme", None, 5)
    assert await spent.remaining("acme", NOW) == (None, Decimal(0)), "never below zero"
    assert await spent.remaining("nobody", NOW) == (None, None)


async def test_a_hold_is_refused_when_spend_plus_estimate_passes_a_limit(
    spent: BudgetService,
) -> None:
    holds = BudgetHolds(spent.db, clock=lambda: NOW)
    spent.on_change = holds.forget
    # A reservation counts spend stamped after its own clock (a turn settled while it waited:
    # test_budget_holds.py), so the fixture's turn "after NOW" goes; the report test keeps it.
    async with spent.db.acquire() as conn:
        await conn.execute("DELETE FROM run_turns WHERE created_at > $1", NOW)

    async def reserve(tenant: str, amount: str) -> str | None:
        return await holds.reserve(tenant=tenant, key_id=None, run_id=None, amount=Decimal(amount))

    assert await reserve("acme", "1000") is None  # no budget row: no limit, nothing held
    await spent.set("acme", 10, 20)
    held = await reserve("acme", "6.25")  # exactly at the daily limit is allowed
    assert held is not None
    await holds.release(held)
    with pytest.raises(BudgetExceeded) as daily:
        await reserve("acme", "6.26")
    assert daily.value.period == "daily" and daily.value.status == 402
    assert "'acme' daily budget exceeded: $3.7500 spent of $10.0000 today (UTC)" in str(daily.value)
    assert "$6.2600" in daily.value.detail
    await spent.set("acme", None, 8)
    with pytest.raises(BudgetExceeded) as monthly:
        await reserve("acme", "0.5")
    assert monthly.value.period == "monthly" and monthly.value.extra["spent_usd"] == 7.75
    assert await reserve("other", "0") is None


async def test_refresh_metrics_sets_limit_and_remaining(spent: BudgetService) -> None:
    await spent.set("acme", 10, 20)
    await spent.set("other", None, 60)
    await spent.refresh_metrics(NOW)

    def sample(name: str, tenant: str, period: str) -> float | None:
        labels = {"tenant": tenant, "period": period}
        return metrics.REGISTRY.get_sample_value(name, labels)

    assert sample("claude_agent_budget_limit_usd", "acme", "daily") == 10
    assert sample("claude_agent_budget_remaining_usd", "acme", "daily") == 6.25
    assert sample("claude_agent_budget_remaining_usd", "acme", "monthly") == 12.25
    assert sample("claude_agent_budget_remaining_usd", "other", "monthly") == 10
    assert sample("claude_agent_budget_limit_usd", "other", "daily") is None
    await spent.set("acme", None, 20)
    assert sample("claude_agent_budget_limit_usd", "acme", "daily") is None


async def test_budget_endpoints(db: Database) -> None:
    app = FastAPI()
    services(app).add(BudgetService, BudgetService(db))
    app.include_router(budgets_api.router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://qd") as client:
        empty = (await client.get("/v1/tenants/acme/budget")).json()
        assert empty["daily_limit_usd"] is None and empty["daily_spent_usd"] == 0
        await add_turn(db, "acme", "1.25", datetime.now(UTC))
        put = await client.put("/v1/tenants/acme/budget", json={"daily_usd": 5, "monthly_usd": 100})
        assert put.status_code == 200, put.text
        body = put.json()
        assert body["daily_limit_usd"] == 5 and body["daily_remaining_usd"] == 3.75
        assert body["monthly_spent_usd"] == 1.25
        bad = await client.put("/v1/tenants/acme/budget", json={"daily_usd": -1})
        assert bad.status_code == 422
        assert (await client.put("/v1/tenants/acme/budget", json={"x": 1})).status_code == 422
        assert (await client.get("/v1/tenants/bad%20name/budget")).status_code == 422
        got = (await client.get("/v1/tenants/acme/budget")).json()
        assert got["monthly_limit_usd"] == 100
