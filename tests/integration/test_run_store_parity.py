"""One scenario against both run stores: the in-memory twin must behave like Postgres."""

from __future__ import annotations

from typing import Any

import pytest

from quarterdeck.runs import transitions
from quarterdeck.runs.memory import InMemoryRunStore
from quarterdeck.runs.models import RunStatus
from quarterdeck.runs.store import Finish, PostgresRunStore, Requeue, RunStore
from quarterdeck.store.pool import Database
from tests.unit.test_run_store import row, turn

pytestmark = pytest.mark.asyncio


async def scenario(store: RunStore, suffix: str) -> dict[str, Any]:
    """Everything a run goes through, with the answers the callers above the store rely on."""
    a, b = f"run_{suffix}_a", f"run_{suffix}_b"
    seen: dict[str, Any] = {}
    await store.create([(row(a, key=f"k{suffix}"), b"tar"), (row(b), None)])
    seen["replay"] = (await store.find_by_idempotency_key("default", f"k{suffix}")) is not None
    first = await store.claim(a, "w1")
    seen["first"] = first and (first[0].status, first[0].attempts, first[1])
    await store.save_turn(turn(a, 1))
    seen["moved"] = await store.requeue([Requeue(a, "drain"), Requeue(b, "drain")], expect=None)
    seen["only_running"] = await store.requeue(
        [Requeue(b, "x")], expect=frozenset({RunStatus.running})
    )
    again = await store.claim(a, "w2")
    seen["again"] = again and (again[0].attempts, again[1])
    checkpoint = await store.last_checkpoint(a)
    seen["checkpoint"] = checkpoint and checkpoint[0]
    done = await store.finish(Finish(a, RunStatus.succeeded, result="ok"))
    seen["done"] = done and (done.status, done.turns, done.input_tokens, done.cost_usd)
    seen["late_finish"] = await store.finish(Finish(a, RunStatus.failed))
    seen["late_claim"] = await store.claim(a, "w3")
    seen["terminal_requeue"] = await store.requeue([Requeue(a, "x")])
    cancelled = await store.cancel(b, None)
    seen["cancelled"] = cancelled and (cancelled.status, cancelled.error)
    with pytest.raises(transitions.IllegalTransition):
        await store.cancel(b, None)
    seen["events"] = [(e.type, e.turn, e.data.get("status")) for e in await store.events(a)]
    seen["events_b"] = [(e.type, e.data.get("status")) for e in await store.events(b)]
    seen["archive"] = await store.load_archive(a)
    return seen


async def test_the_twin_and_postgres_agree(db: Database) -> None:
    postgres = PostgresRunStore(db)
    try:
        real = await scenario(postgres, "pg")
    finally:
        await postgres.aclose()
    twin = await scenario(InMemoryRunStore(), "pg")
    assert real == twin
    assert real["moved"] == ["run_pg_a", "run_pg_b"]
    assert real["events"][-1] == ("status", None, "succeeded")
