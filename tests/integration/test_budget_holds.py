"""Budget holds against a real Postgres: concurrent reservations never overspend, every scope
(tenant, key, run) is enforced, expired holds are ignored, and a check that cannot finish fails
closed (or open, when told to)."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from quarterdeck import metrics
from quarterdeck.budgets import repository as repo
from quarterdeck.budgets.holds import BudgetHolds
from quarterdeck.budgets.models import BudgetExceeded
from quarterdeck.budgets.service import BudgetService
from quarterdeck.exceptions import Unavailable
from quarterdeck.store.pool import Database
from tests.conftest import free_port

NOW = datetime(2025, 3, 15, 12, 0, tzinfo=UTC)
CENT5 = Decimal("0.05")


def clock_at(now: datetime = NOW):  # type: ignore[no-untyped-def]
    return lambda: now


async def add_call(
    db: Database,
    cost: str,
    *,
    tenant: str = "acme",
    key_id: str | None = None,
    run_id: str | None = None,
    at: datetime = NOW,
) -> None:
    """A gateway call as the gateway recorder writes it."""
    async with db.acquire() as conn:
        await add_call_on(conn, cost, tenant=tenant, key_id=key_id, run_id=run_id, at=at)


async def add_call_on(
    conn: asyncpg.Connection,
    cost: str | Decimal,
    *,
    tenant: str = "acme",
    key_id: str | None = None,
    run_id: str | None = None,
    at: datetime = NOW,
) -> None:
    await conn.execute(
        "INSERT INTO gateway_calls (id, created_at, tenant, key_id, run_id, model, stream,"
        " status, cost_usd) VALUES ($1, $2, $3, $4, $5, 'm', false, 200, $6::numeric)",
        f"call_{random.getrandbits(64):x}",
        at,
        tenant,
        key_id,
        run_id,
        str(cost),
    )


async def add_run(
    db: Database, run_id: str, *, tenant: str = "acme", budget: str | None, cost: str = "0"
) -> None:
    async with db.acquire() as conn:
        await conn.execute(
            "INSERT INTO runs (id, tenant, agent_type, operation, prompt, model, budget_usd,"
            " cost_usd) VALUES ($1, $2, 'coder', 'task', 'p', 'm', $3::numeric, $4::numeric)",
            run_id,
            tenant,
            budget,
            cost,
        )


async def held(db: Database, tenant: str = "acme") -> Decimal:
    async with db.acquire() as conn:
        value = await conn.fetchval(
            "SELECT coalesce(sum(amount_usd), 0) FROM budget_holds WHERE tenant = $1", tenant
        )
    return Decimal(value)


async def set_key_budget(db: Database, key_id: str, daily: str | None, monthly: str | None) -> None:
    async with db.acquire() as conn:
        await repo.upsert_key(
            conn,
            key_id,
            Decimal(daily) if daily else None,
            Decimal(monthly) if monthly else None,
        )


async def test_a_turn_settled_after_the_clock_was_read_still_counts(db: Database) -> None:
    """Another process settles a $0.90 turn (its hold deleted, its cost stamped with its own
    transaction time) just after this reservation read its clock: with $1.00 a day, a $0.20
    reservation must see that spend and be refused, not slip into the gap between the two."""
    await BudgetService(db).set("acme", Decimal("1.00"), None)
    await add_run(db, "r_late", budget=None)
    async with db.acquire() as conn:
        await conn.execute(
            "INSERT INTO run_turns (run_id, turn, messages, model, cost_usd, created_at)"
            " VALUES ('r_late', 1, '[]'::jsonb, 'm', 0.90, $1)",
            NOW + timedelta(milliseconds=50),
        )
    holds = BudgetHolds(db, clock=clock_at())
    with pytest.raises(BudgetExceeded) as refused:
        await holds.reserve(tenant="acme", key_id=None, run_id=None, amount=Decimal("0.20"))
    assert refused.value.scope == "tenant"
    assert await held(db) == 0


async def test_no_budget_writes_nothing(db: Database) -> None:
    holds = BudgetHolds(db, clock=clock_at())
    assert await holds.reserve(tenant="acme", key_id="k1", run_id="r1", amount=CENT5) is None
    await add_run(db, "r_nob", budget=None)
    assert await holds.reserve(tenant="acme", key_id=None, run_id="r_nob", amount=CENT5) is None
    assert await held(db) == 0


async def test_concurrent_reservations_never_pass_the_tenant_budget(db: Database) -> None:
    """$1.00 for the tenant, 50 reservations of $0.05 at once from 10 keys, each on its own
    pool connection: exactly 20 are admitted, the other 30 refused, and the holds sum to $1."""
    await BudgetService(db).set("acme", Decimal("1.00"), None)
    pool = Database(db.url, min_size=50, max_size=50)
    await pool.open()
    try:
        holds = BudgetHolds(pool, clock=clock_at(), timeout_s=30)

        async def one(i: int) -> str | BudgetExceeded:
            try:
                hold = await holds.reserve(
                    tenant="acme", key_id=f"key{i % 10}", run_id=None, amount=CENT5
                )
            except BudgetExceeded as exc:
                return exc
            assert hold is not None
            return hold

        results = await asyncio.gather(*(one(i) for i in range(50)))
    finally:
        await pool.close()
    admitted = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    assert len(admitted) == 20 and len(set(admitted)) == 20
    assert len(refused) == 30
    assert await held(db) == Decimal("1.00")
    first = refused[0]
    assert first.scope == "tenant" and first.period == "daily" and first.status == 402
    assert first.limit == Decimal("1.00") and first.estimate == CENT5
    assert first.retry_after_s == 12 * 3600  # NOW is noon UTC: the day resets in 12 h
    assert first.extra["scope"] == "tenant" and first.extra["retry_after_s"] == 43200


async def test_settling_interleaved_with_reservations_never_overspends(db: Database) -> None:
    """Reservations race with the recorder settling earlier holds (the call's real cost recorded
    and its hold deleted in one transaction): spend + holds never passes the limit, and a
    settled call's unused worst case is free again for later reservations."""
    limit = Decimal("1.00")
    await BudgetService(db).set("acme", limit, limit)
    pool = Database(db.url, min_size=20, max_size=30)
    await pool.open()
    rng = random.Random(7)
    admitted: list[str] = []
    settled: list[Decimal] = []
    worst_seen = Decimal(0)
    try:
        holds = BudgetHolds(pool, clock=clock_at(), timeout_s=30)

        async def reserve(i: int) -> None:
            try:
                hold = await holds.reserve(
                    tenant="acme", key_id=f"key{i % 10}", run_id=None, amount=CENT5
                )
            except BudgetExceeded:
                return
            assert hold is not None
            admitted.append(hold)

        async def settle() -> None:
            for _ in range(40):
                await asyncio.sleep(0.001)
                if not admitted:
                    continue
                hold = admitted.pop(rng.randrange(len(admitted)))
                cost = Decimal(rng.randrange(0, 501)) / Decimal(10_000)  # 0 .. $0.05
                async with pool.transaction() as conn:
                    await add_call_on(conn, cost, key_id="key0")
                    assert await repo.delete_holds(conn, [hold]) == 1
                settled.append(cost)

        async def watch() -> None:
            nonlocal worst_seen
            async with pool.acquire() as conn:
                for _ in range(60):
                    day, month = await repo.spend(conn, "acme", NOW)
                    worst_seen = max(worst_seen, day, month)
                    await asyncio.sleep(0.001)

        await asyncio.gather(settle(), watch(), *(reserve(i) for i in range(150)))
    finally:
        await pool.close()
    assert worst_seen <= limit
    async with db.acquire() as conn:
        day, month = await repo.spend(conn, "acme", NOW)
    assert day == month == sum(settled, Decimal(0)) + CENT5 * len(admitted)
    assert day <= limit
    # What settled calls did not use is free again: exactly as many more holds as now fit.
    room = int((limit - day) / CENT5)
    later = BudgetHolds(db, clock=clock_at())
    for _ in range(room):
        assert await later.reserve(tenant="acme", key_id="key1", run_id=None, amount=CENT5)
    with pytest.raises(BudgetExceeded):
        await later.reserve(tenant="acme", key_id="key1", run_id=None, amount=CENT5)


async def test_spend_includes_gateway_calls_and_live_holds(db: Database) -> None:
    budgets = BudgetService(db)
    await add_call(db, "1.25")
    await add_call(db, "2", at=datetime(2025, 3, 2, tzinfo=UTC))  # this month, not today
    await add_call(db, "7", at=datetime(2025, 2, 28, 23, 59, tzinfo=UTC))  # last month
    await add_call(db, "9", tenant="other")
    await budgets.set("acme", 100, 100)
    holds = BudgetHolds(db, clock=clock_at())
    assert await holds.reserve(tenant="acme", key_id=None, run_id=None, amount=Decimal("0.5"))
    status = await budgets.status("acme", NOW)
    assert status.daily_spent_usd == Decimal("1.75")
    assert status.monthly_spent_usd == Decimal("3.75")
    await budgets.set("acme", Decimal("2"), None)
    with pytest.raises(BudgetExceeded):  # 1.75 spent + 0.5 held + 0.26 > 2
        await holds.reserve(tenant="acme", key_id=None, run_id=None, amount=Decimal("0.26"))


async def test_key_budget_is_enforced_per_key(db: Database) -> None:
    await set_key_budget(db, "key1", "0.10", "5")
    await add_call(db, "0.04", key_id="key1")
    await add_call(db, "3", key_id="key1", at=datetime(2025, 3, 1, tzinfo=UTC))
    holds = BudgetHolds(db, clock=clock_at())
    hold = await holds.reserve(tenant="acme", key_id="key1", run_id=None, amount=CENT5)
    assert hold is not None
    with pytest.raises(BudgetExceeded) as daily:
        await holds.reserve(tenant="acme", key_id="key1", run_id=None, amount=CENT5)
    exc = daily.value
    assert (exc.scope, exc.subject, exc.period) == ("key", "key1", "daily")
    assert exc.spent == Decimal("0.09") and exc.limit == Decimal("0.10")
    assert "key 'key1' daily budget exceeded" in exc.detail
    # another key of the same tenant is not held to key1's budget
    assert await holds.reserve(tenant="acme", key_id="key2", run_id=None, amount=CENT5) is None
    await set_key_budget(db, "key1", None, "3.10")
    with pytest.raises(BudgetExceeded) as monthly:
        await holds.reserve(tenant="acme", key_id="key1", run_id=None, amount=CENT5)
    assert monthly.value.period == "monthly"
    assert monthly.value.retry_after_s == (datetime(2025, 4, 1, tzinfo=UTC) - NOW).total_seconds()
    await holds.release(hold)
    assert await holds.reserve(tenant="acme", key_id="key1", run_id=None, amount=CENT5)


async def test_run_budget_counts_turns_gateway_calls_and_holds(db: Database) -> None:
    await add_run(db, "run_a", budget="1.00", cost="0.61")
    await add_call(db, "0.30", run_id="run_a", at=datetime(2024, 1, 1, tzinfo=UTC))  # any time
    await add_call(db, "5", run_id="run_b")
    holds = BudgetHolds(db, clock=clock_at())
    assert await holds.reserve(tenant="acme", key_id=None, run_id="run_a", amount=CENT5)
    with pytest.raises(BudgetExceeded) as run:
        await holds.reserve(tenant="acme", key_id=None, run_id="run_a", amount=CENT5)
    exc = run.value
    assert (exc.scope, exc.subject, exc.period) == ("run", "run_a", "total")
    assert exc.spent == Decimal("0.96") and exc.retry_after_s is None
    assert "run 'run_a' budget exceeded" in exc.detail
    # another tenant naming the run is not held to (nor does it lock) that run's budget
    assert await holds.reserve(tenant="other", key_id=None, run_id="run_a", amount=CENT5) is None


async def test_another_tenant_naming_a_run_cannot_spend_its_budget(db: Database) -> None:
    """x-quarterdeck-run is the client's word: calls and holds of another tenant that name a run
    are recorded with it, but never count against that run's budget."""
    await add_run(db, "run_c", budget="0.10")
    await add_call(db, "5", tenant="intruder", run_id="run_c")
    intruder = BudgetHolds(db, clock=clock_at())
    await intruder.reserve(tenant="intruder", key_id=None, run_id="run_c", amount=CENT5)
    async with db.acquire() as conn:  # a live hold of the intruder's naming the run, as if
        await conn.execute(  # the intruder's tenant had a budget of its own
            "INSERT INTO budget_holds (id, tenant, run_id, amount_usd, expires_at)"
            " VALUES ('hold_x', 'intruder', 'run_c', 5, now() + interval '1 hour')"
        )
    owner = BudgetHolds(db, clock=clock_at())
    assert await owner.reserve(tenant="acme", key_id=None, run_id="run_c", amount=CENT5)


async def test_first_limit_failing_is_reported_in_order(db: Database) -> None:
    """Tenant before key before run, so the reported limit does not depend on timing."""
    await BudgetService(db).set("acme", Decimal("0.01"), None)
    await set_key_budget(db, "key1", "0.01", None)
    await add_run(db, "run_a", budget="0.01")
    holds = BudgetHolds(db, clock=clock_at())
    with pytest.raises(BudgetExceeded) as exc:
        await holds.reserve(tenant="acme", key_id="key1", run_id="run_a", amount=CENT5)
    assert exc.value.scope == "tenant"
    await BudgetService(db).set("acme", None, None)
    with pytest.raises(BudgetExceeded) as exc:
        await holds.reserve(tenant="acme", key_id="key1", run_id="run_a", amount=CENT5)
    assert exc.value.scope == "key"
    assert await held(db) == 0


async def test_expired_holds_are_ignored_and_purged(db: Database) -> None:
    await BudgetService(db).set("acme", Decimal("0.10"), None)
    early = BudgetHolds(db, ttl_s=60, clock=clock_at(NOW - timedelta(minutes=2)))
    assert await early.reserve(tenant="acme", key_id=None, run_id=None, amount=Decimal("0.10"))
    holds = BudgetHolds(db, ttl_s=60, clock=clock_at())
    hold = await holds.reserve(tenant="acme", key_id=None, run_id=None, amount=Decimal("0.10"))
    assert hold is not None, "the hold from 2 minutes ago expired after 60 s"
    assert await held(db) == Decimal("0.20")
    assert await holds.purge_expired() == 1
    assert await held(db) == Decimal("0.10")


async def test_fails_closed_when_the_budget_row_stays_locked(db: Database) -> None:
    await BudgetService(db).set("acme", Decimal("10"), None)
    holds = BudgetHolds(db, timeout_s=0.3, clock=clock_at())
    refused = metrics.REGISTRY.get_sample_value(
        "claude_agent_budget_check_failures_total", {"outcome": "refused"}
    )
    async with db.transaction() as blocker:
        await blocker.execute("SELECT 1 FROM tenant_budgets WHERE tenant = 'acme' FOR UPDATE")
        started = asyncio.get_running_loop().time()
        with pytest.raises(Unavailable) as exc:
            await holds.reserve(tenant="acme", key_id=None, run_id=None, amount=CENT5)
        waited = asyncio.get_running_loop().time() - started
    assert exc.value.detail.startswith("budget check unavailable: it did not finish within 0.3 s")
    assert exc.value.status == 503
    assert 0.25 < waited < 1.5
    after = metrics.REGISTRY.get_sample_value(
        "claude_agent_budget_check_failures_total", {"outcome": "refused"}
    )
    assert (after or 0) == (refused or 0) + 1
    assert await held(db) == 0
    # the connection went back to the pool usable, and the lock is free again
    assert await holds.reserve(tenant="acme", key_id=None, run_id=None, amount=CENT5)


async def test_fails_open_when_told_to(db: Database) -> None:
    await BudgetService(db).set("acme", Decimal("10"), None)
    await set_key_budget(db, "key1", "1", None)
    holds = BudgetHolds(db, timeout_s=0.3, fail_open=True, clock=clock_at())
    async with db.transaction() as blocker:
        await blocker.execute("SELECT 1 FROM key_budgets WHERE key_id = 'key1' FOR UPDATE")
        assert await holds.reserve(tenant="acme", key_id="key1", run_id=None, amount=CENT5) is None
    assert await held(db) == 0
    # a refusal is not a failure: fail_open never admits a call over its budget
    with pytest.raises(BudgetExceeded):
        await holds.reserve(tenant="acme", key_id="key1", run_id=None, amount=Decimal(2))


async def test_fails_closed_when_postgres_is_unreachable(db: Database) -> None:
    gone = Database(f"postgresql://postgres@127.0.0.1:{free_port()}/qd", min_size=0, max_size=1)
    await gone.open()  # connects lazily: every acquire fails (nothing listens on that port)
    with pytest.raises(Unavailable) as exc:
        await BudgetHolds(gone).reserve(tenant="acme", key_id=None, run_id=None, amount=CENT5)
    assert "Postgres is unreachable" in exc.value.detail
    opened = BudgetHolds(gone, fail_open=True)
    assert await opened.reserve(tenant="acme", key_id=None, run_id=None, amount=CENT5) is None
    await gone.close()


async def test_concurrent_reservations_with_tenant_key_and_run_budgets(db: Database) -> None:
    """All three rows locked by every reservation, from 40 calls at once over 4 keys: no
    deadlock, no error but refusals, and every limit holds (the run's $0.45 binds first)."""
    await BudgetService(db).set("acme", Decimal("0.60"), None)
    for i in range(4):
        await set_key_budget(db, f"key{i}", "0.20", None)
    await add_run(db, "run_a", budget="0.45")
    pool = Database(db.url, min_size=40, max_size=40)
    await pool.open()
    try:
        holds = BudgetHolds(pool, clock=clock_at(), timeout_s=30)

        async def one(i: int) -> tuple[str, str | None]:
            key = f"key{i % 4}"
            try:
                return key, await holds.reserve(
                    tenant="acme", key_id=key, run_id="run_a", amount=CENT5
                )
            except BudgetExceeded:
                return key, None

        results = await asyncio.gather(*(one(i) for i in range(40)))
    finally:
        await pool.close()
    admitted = [key for key, hold in results if hold is not None]
    assert len(admitted) == 9
    assert all(admitted.count(f"key{i}") <= 4 for i in range(4))
    assert await held(db) == Decimal("0.45")


async def test_scopes_without_a_limit_are_not_scanned(db: Database) -> None:
    """Only the key has a budget: the reservation reads the key's daily spend and holds and
    never run_turns, runs' costs or the calls themselves, whatever is in them. Counted with the
    per-transaction table statistics of the transaction the reservation runs in."""
    await set_key_budget(db, "key1", "1", None)
    await add_run(db, "run_a", budget=None)
    await add_call(db, "0.01", key_id="key1")
    await add_call(db, "0.01", run_id="run_a")
    async with db.acquire() as conn, conn.transaction():
        found = await repo.reserve_hold(
            conn,
            hold_id="h1",
            tenant="acme",
            key_id="key1",
            run_id="run_a",
            amount=CENT5,
            now=NOW,
            expires_at=NOW + timedelta(minutes=5),
            lock_timeout_ms=1000,
        )
        assert found is not None and found.hold_id == "h1"
        assert found.spent.key_day == Decimal("0.01") and found.spent.tenant_day == 0
        tables = {
            r["relname"]: r["seq_scan"] + r["idx_scan"]
            for r in await conn.fetch(
                "SELECT relname, seq_scan, coalesce(idx_scan, 0) AS idx_scan"
                " FROM pg_stat_xact_user_tables"
            )
        }
        indexes = {
            r["relname"]: r["scans"]
            for r in await conn.fetch(
                "SELECT relname, pg_stat_get_xact_numscans(oid) AS scans FROM pg_class"
                " WHERE relkind = 'i' AND pg_stat_get_xact_numscans(oid) > 0"
            )
        }
    assert tables.get("run_turns", 0) == 0, tables
    # The key's spend comes from its daily rollup rows (migration 0011), not its calls.
    assert indexes.get("gateway_spend_daily_pkey", 0) >= 1, indexes
    assert tables.get("gateway_calls", 0) == 0, tables


async def test_a_call_without_a_budget_takes_no_lock(db: Database) -> None:
    """The common case costs one read: a budget row without limits that another transaction
    holds locked does not make a call that no budget applies to wait."""
    await BudgetService(db).set("acme", None, None)
    holds = BudgetHolds(db, timeout_s=0.3, clock=clock_at())
    async with db.transaction() as blocker:
        await blocker.execute("SELECT 1 FROM tenant_budgets WHERE tenant = 'acme' FOR UPDATE")
        assert await holds.reserve(tenant="acme", key_id="k", run_id=None, amount=CENT5) is None


async def test_the_lock_wait_is_bounded_in_postgres_too(db: Database) -> None:
    """The function sets its own lock_timeout, so a waiting reservation gives its connection
    back promptly even without the client-side deadline (e.g. once a client was cancelled)."""
    await BudgetService(db).set("acme", Decimal("10"), None)
    async with db.transaction() as blocker:
        await blocker.execute("SELECT 1 FROM tenant_budgets WHERE tenant = 'acme' FOR UPDATE")
        async with db.acquire() as conn:
            with pytest.raises(asyncpg.exceptions.LockNotAvailableError):
                async with asyncio.timeout(5):  # would end as TimeoutError, failing the test
                    await repo.reserve_hold(
                        conn,
                        hold_id="h1",
                        tenant="acme",
                        key_id=None,
                        run_id=None,
                        amount=CENT5,
                        now=NOW,
                        expires_at=NOW + timedelta(minutes=5),
                        lock_timeout_ms=200,
                    )
    assert await held(db) == 0


async def test_unlimited_is_remembered_briefly_and_a_limit_set_here_applies_at_once(
    db: Database,
) -> None:
    holds = BudgetHolds(db, clock=clock_at(), unlimited_ttl_s=60)
    budgets = BudgetService(db, on_change=holds.forget)
    assert await holds.reserve(tenant="acme", key_id="k1", run_id=None, amount=CENT5) is None
    # Another replica sets a limit: this one keeps trusting "unlimited" until the TTL ends...
    async with db.acquire() as conn:
        await conn.execute(
            "INSERT INTO tenant_budgets (tenant, daily_usd) VALUES ('acme', 0.01)"
            " ON CONFLICT (tenant) DO UPDATE SET daily_usd = 0.01"
        )
    assert await holds.reserve(tenant="acme", key_id="k1", run_id=None, amount=CENT5) is None
    # ...but a limit set through this process's service applies at once.
    await budgets.set("acme", Decimal("0.01"), None)
    with pytest.raises(BudgetExceeded):
        await holds.reserve(tenant="acme", key_id="k1", run_id=None, amount=CENT5)
    # Limits are never cached: raising the limit admits the call straight away.
    await budgets.set("acme", Decimal("1.00"), None)
    assert await holds.reserve(tenant="acme", key_id="k1", run_id=None, amount=CENT5)
