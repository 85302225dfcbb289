"""The daily gateway spend rollup (migration 0011) always equals the sums over the calls it
stands for, however the calls come and go: the recorder's COPY batches, idempotent re-inserts,
tenant erasure; and the budget reservation refuses from it exactly as from the calls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from quarterdeck.budgets import repository as budgets_repo
from quarterdeck.budgets.service import BudgetService
from quarterdeck.gateway import repository
from quarterdeck.gateway.models import GatewayCall
from quarterdeck.gateway.recorder import CallRecorder
from quarterdeck.store.pool import Database

TODAY = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
_seq = iter(range(1, 1_000_000))


def call(tenant: str, key: str | None, cost: str, at: datetime = TODAY) -> GatewayCall:
    return GatewayCall(
        id=f"gwc_roll{next(_seq):06d}",
        created_at=at,
        tenant=tenant,
        key_id=key,
        model="claude-sonnet-4-5",
        stream=False,
        status=200,
        cost_usd=Decimal(cost),
    )


async def rollup(db: Database) -> dict[tuple[str, str, Any], tuple[Decimal, int]]:
    async with db.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM gateway_spend_daily")
    return {(r["scope_kind"], r["scope"], r["day"]): (r["cost_usd"], r["calls"]) for r in rows}


async def from_calls(db: Database) -> dict[tuple[str, str, Any], tuple[Decimal, int]]:
    """The same sums computed from the calls themselves."""
    async with db.acquire() as conn:
        rows = await conn.fetch(
            """
            SELECT 'tenant' AS k, tenant AS s, (created_at AT TIME ZONE 'UTC')::date AS d,
                   sum(cost_usd) AS c, count(*) AS n FROM gateway_calls GROUP BY 2, 3
            UNION ALL
            SELECT 'key', key_id, (created_at AT TIME ZONE 'UTC')::date, sum(cost_usd), count(*)
              FROM gateway_calls WHERE key_id IS NOT NULL GROUP BY 2, 3
            """
        )
    return {(r["k"], r["s"], r["d"]): (r["c"], r["n"]) for r in rows}


async def test_the_rollup_follows_the_calls(db: Database) -> None:
    recorder = CallRecorder(db, flush_interval_s=60)
    yesterday = TODAY - timedelta(days=1)
    batch = [
        call("acme", "key1", "0.10"),
        call("acme", "key1", "0.05"),
        call("acme", "key2", "0.01"),
        call("acme", None, "0.02"),
        call("acme", "key1", "1.00", at=yesterday),
        call("beta", "key3", "0.30"),
    ]
    for c in batch:
        recorder.record(c)
    await recorder.flush()  # one COPY batch
    got = await rollup(db)
    assert got == await from_calls(db)
    assert got[("tenant", "acme", TODAY.date())] == (Decimal("0.18"), 4)
    assert got[("key", "key1", TODAY.date())] == (Decimal("0.15"), 2)
    assert got[("key", "key1", yesterday.date())] == (Decimal("1.00"), 1)

    async with db.transaction() as conn:  # a retried batch: the stored ones are skipped
        await repository.insert_calls(
            conn, [batch[0], call("acme", "key1", "0.20")], idempotent=True
        )
    assert (await rollup(db))[("key", "key1", TODAY.date())] == (Decimal("0.35"), 3)
    assert await rollup(db) == await from_calls(db)

    async with db.transaction() as conn:  # tenant erasure leaves no row naming it
        await repository.delete_tenant(conn, "acme")
    left = await rollup(db)
    assert left == await from_calls(db)
    assert set(left) == {("tenant", "beta", TODAY.date()), ("key", "key3", TODAY.date())}
    await recorder.aclose()


async def test_the_reservation_reads_spend_from_the_rollup(db: Database) -> None:
    await BudgetService(db).set("acme", Decimal("1.00"), Decimal("5.00"))
    recorder = CallRecorder(db, flush_interval_s=60)
    # yesterday's spend counts for the month only; today's for both
    recorder.record(call("acme", "key1", "3.50", at=TODAY - timedelta(days=1)))
    recorder.record(call("acme", "key1", "0.70"))
    await recorder.flush()
    await recorder.aclose()

    async def reserve(amount: str, hold: str) -> budgets_repo.Reservation | None:
        async with db.acquire() as conn:
            return await budgets_repo.reserve_hold(
                conn,
                hold_id=hold,
                tenant="acme",
                key_id="key1",
                run_id=None,
                amount=Decimal(amount),
                now=datetime.now(UTC),
                expires_at=datetime.now(UTC) + timedelta(minutes=5),
                lock_timeout_ms=1000,
            )

    first = await reserve("0.30", "hold_a")
    assert first is not None and first.hold_id == "hold_a"
    if TODAY.day != 1:  # on the 1st yesterday is last month
        assert first.spent.tenant_month == Decimal("4.20")
    assert first.spent.tenant_day == Decimal("0.70")
    refused = await reserve("0.01", "hold_b")  # 0.70 spent + 0.30 held: the day is full
    assert refused is not None and refused.hold_id is None
