"""Run budgets with holds and fenced turn writes, against a real Postgres.

The run store's turn statement settles a turn's hold and refuses a lost attempt's turn while its
neighbours in the same group commit go in; the executor reserves before each call (the gateway's
``BudgetHolds``) and releases the hold when the call fails or the attempt is lost. The executor
tests use the in-memory run store with the real holds: the hold is the part under test there.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from quarterdeck.budgets.holds import BudgetHolds
from quarterdeck.budgets.service import BudgetService
from quarterdeck.config import Settings, load_settings
from quarterdeck.exceptions import Fenced, ProviderError
from quarterdeck.providers.types import ModelRequest, ModelResponse, Usage
from quarterdeck.runs.executor import ExecutorConfig, RunExecutor
from quarterdeck.runs.memory import InMemoryRunStore
from quarterdeck.runs.models import RunStatus
from quarterdeck.runs.store import PostgresRunStore
from quarterdeck.store.pool import Database
from tests.integration.test_budget_holds import add_run
from tests.unit.test_run_store import turn
from tests.unit.test_worker_logic import Plain, ScriptedProvider, submitted

pytestmark = pytest.mark.asyncio


async def live_holds(db: Database) -> list[str]:
    async with db.acquire() as conn:
        return [r["id"] for r in await conn.fetch("SELECT id FROM budget_holds ORDER BY id")]


async def claim_as(db: Database, run_id: str, attempts: int) -> None:
    async with db.acquire() as conn:
        await conn.execute(
            "UPDATE runs SET status = 'running', attempts = $2 WHERE id = $1", run_id, attempts
        )


async def test_a_fenced_turn_is_refused_while_its_batch_neighbour_commits(db: Database) -> None:
    for run_id in ("run_lost", "run_kept"):
        await add_run(db, run_id, budget="10", tenant="acme")
        await claim_as(db, run_id, 1)
    await claim_as(db, "run_lost", 2)  # its job was picked up again: attempt 2 holds it
    holds = BudgetHolds(db)
    h_lost = await holds.reserve(tenant="acme", key_id=None, run_id="run_lost", amount=Decimal(1))
    h_kept = await holds.reserve(tenant="acme", key_id=None, run_id="run_kept", amount=Decimal(1))
    assert h_lost and h_kept and len(await live_holds(db)) == 2
    store = PostgresRunStore(db)
    try:
        batches = store.writer._turns.batches
        results = await asyncio.gather(
            store.save_turn(_with_hold(turn("run_lost", 1), h_lost), epoch=1),
            store.save_turn(_with_hold(turn("run_kept", 1), h_kept), epoch=1),
            return_exceptions=True,
        )
        assert store.writer._turns.batches == batches + 1, "one group commit"
    finally:
        await store.aclose()
    assert isinstance(results[0], Fenced) and results[1] is None
    assert await live_holds(db) == [], "settled (kept) and released (lost) in the statement"
    lost, kept = await store.get("run_lost"), await store.get("run_kept")
    assert lost is not None and lost.turns == 0 and lost.cost_usd == 0
    assert kept is not None and kept.turns == 1 and kept.cost_usd == pytest.approx(0.01)
    assert await store.last_checkpoint("run_lost") is None
    assert [e.type for e in await store.events("run_lost")] == []
    assert [e.type for e in await store.events("run_kept")] == ["turn"]


def _with_hold(record, hold):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    return replace(record, hold_id=hold)


# -- the executor's holds ------------------------------------------------------------------------
def price(model: str, usage: Usage) -> Decimal:
    """$1 per 1,000 tokens of any class (the worst case is all output and cache writes)."""
    return Decimal(usage.total_tokens) / 1000


class FailingProvider(ScriptedProvider):
    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.calls.append((request.metadata["run_id"], 0))
        raise ProviderError("bad request", status_code=400, retryable=False)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(None, data_dir=tmp_path)


async def test_a_failed_call_releases_its_hold(db: Database, settings: Settings) -> None:
    await BudgetService(db).set("default", daily=Decimal(100), monthly=None)
    store, provider = InMemoryRunStore(), FailingProvider()
    executor = RunExecutor(store, provider, Plain(), price, ExecutorConfig(), holds=BudgetHolds(db))
    run = await submitted(settings, store)
    claimed = await store.claim(run.id, "w1")
    assert claimed is not None
    outcome = await executor.execute(claimed[0])
    assert outcome.status is RunStatus.failed and provider.calls == [(run.id, 0)]
    assert await live_holds(db) == []


async def test_a_fenced_call_releases_its_hold_and_a_settled_one_rides_on_its_turn(
    db: Database, settings: Settings
) -> None:
    await BudgetService(db).set("default", daily=Decimal(100), monthly=None)
    store, provider = InMemoryRunStore(), ScriptedProvider(turns=3)
    provider.hold = 2
    executor = RunExecutor(store, provider, Plain(), price, ExecutorConfig(), holds=BudgetHolds(db))
    run = await submitted(settings, store)
    claimed = await store.claim(run.id, "w1")
    assert claimed is not None
    work = asyncio.create_task(executor.execute(claimed[0]))
    await asyncio.wait_for(provider.reached.wait(), 10)
    pending = await live_holds(db)
    assert len(pending) == 2, "turn 1's hold (settled by the twin, not Postgres) and turn 2's"
    assert store.settled_holds == [pending[0]] or store.settled_holds == [pending[1]]
    await store.claim(run.id, "w2")
    provider.release.set()
    with pytest.raises(Fenced):
        await work
    # Turn 2's hold went to the twin's turn write (refused) and was released by the executor.
    assert await live_holds(db) == store.settled_holds[:1]
    assert len(store.settled_holds) == 2


async def test_a_refused_reservation_ends_the_run_before_any_call(
    db: Database, settings: Settings
) -> None:
    await BudgetService(db).set("default", daily=Decimal("0.0001"), monthly=None)
    store, provider = InMemoryRunStore(), ScriptedProvider(turns=3)
    executor = RunExecutor(store, provider, Plain(), price, ExecutorConfig(), holds=BudgetHolds(db))
    run = await submitted(settings, store)
    claimed = await store.claim(run.id, "w1")
    assert claimed is not None
    outcome = await executor.execute(claimed[0])
    assert outcome.status is RunStatus.budget_exceeded
    assert outcome.error_type == "tenant_budget_exceeded"
    assert "stopped before turn 1: tenant 'default' daily budget" in (outcome.error or "")
    assert provider.calls == [] and await live_holds(db) == []


async def test_a_stale_and_a_current_turn_of_one_run_in_one_batch(db: Database) -> None:
    """Both attempts' turn 1 in the same group commit: only the holder's is recorded."""
    await add_run(db, "run_x", budget=None, tenant="acme")
    await claim_as(db, "run_x", 2)
    store = PostgresRunStore(db)
    try:
        stale, current = turn("run_x", 2, cost=Decimal("5")), turn("run_x", 1)
        results = await asyncio.gather(
            store.save_turn(stale, epoch=1),
            store.save_turn(current, epoch=2),
            return_exceptions=True,
        )
    finally:
        await store.aclose()
    assert isinstance(results[0], Fenced) and results[1] is None
    run = await store.get("run_x")
    assert run is not None and run.turns == 1 and run.cost_usd == pytest.approx(0.01)
    assert [e.turn for e in await store.events("run_x")] == [1]


async def test_the_submitting_keys_budget_holds_the_run_too(
    db: Database, settings: Settings
) -> None:
    from quarterdeck.runs.models import RunCreate
    from quarterdeck.runs.service import RunService
    from quarterdeck.security.trail import RequestContext
    from tests.integration.test_budget_holds import set_key_budget

    await set_key_budget(db, "key1", "0.0001", None)  # the tenant itself has no budget
    store, provider = InMemoryRunStore(), ScriptedProvider(turns=3)
    executor = RunExecutor(store, provider, Plain(), price, ExecutorConfig(), holds=BudgetHolds(db))
    run, _ = await RunService(settings, store).submit(
        RunCreate(prompt="p"), context=RequestContext(actor="key:key1")
    )
    assert run.key_id == "key1"
    claimed = await store.claim(run.id, "w1")
    assert claimed is not None
    outcome = await executor.execute(claimed[0])
    assert outcome.status is RunStatus.budget_exceeded
    assert outcome.error_type == "key_budget_exceeded", outcome.error
    assert provider.calls == [] and await live_holds(db) == []
