"""One scenario against both run stores: the in-memory twin must behave like Postgres."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from quarterdeck.exceptions import Fenced, InvalidState
from quarterdeck.runs import transitions
from quarterdeck.runs.memory import InMemoryRunStore
from quarterdeck.runs.models import RunFilter, RunStatus
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
    await store.save_turn(turn(a, 1), epoch=1)
    seen["moved"] = await store.requeue([Requeue(a, "drain"), Requeue(b, "drain")], expect=None)
    seen["only_running"] = await store.requeue(
        [Requeue(b, "x")], expect=frozenset({RunStatus.running})
    )
    again = await store.claim(a, "w2")
    seen["again"] = again and (again[0].attempts, again[1])
    checkpoint = await store.last_checkpoint(a)
    seen["checkpoint"] = checkpoint and checkpoint[0]
    seen["fenced"] = await fenced_writes(store, a)
    done = await store.finish(Finish(a, RunStatus.succeeded, result="ok"), epoch=3)
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


async def fenced_writes(store: RunStore, run_id: str) -> list[Any]:
    """Attempt 1 lost ``run_id`` to attempt 2: every write of attempt 1 is refused, attempt 2's
    are accepted, and the one unfenced write (a discarded call) is recorded."""
    refused = []
    writes = [
        store.save_turn(turn(run_id, 2), epoch=1),
        store.append_events(run_id, [("tool_call", 2, {"stale": True})], epoch=1),
        store.check_attempt(run_id, epoch=1),
        store.finish(Finish(run_id, RunStatus.failed, error="stale"), epoch=1),
        store.record_usage(run_id, {"turns": 99, "cost_usd": "9"}, epoch=1),
    ]
    for write in writes:
        with pytest.raises(Fenced, match="attempt 1 no longer holds it"):
            await write
        refused.append(True)
    await store.check_attempt(run_id, epoch=2)
    await store.append_events(run_id, [("tool_call", 1, {"fresh": True})], epoch=2)
    await store.discarded_call(run_id, {"turn": 2, "attempt": 1, "cost_usd": 0.01})
    # Totals metered elsewhere (a claude-code run's, by the gateway) set by the holder only.
    await store.record_usage(run_id, {"turns": 7, "output_tokens": 70, "cost_usd": "0.5"}, epoch=2)
    metered = await store.get(run_id)
    assert metered is not None
    usage = (metered.turns, metered.output_tokens, metered.cost_usd)
    lost = await store.heartbeat([run_id], epochs=[1])
    held = await store.heartbeat([run_id], epochs=[2])
    # A stale worker draining hands back nothing: its release is fenced too.
    stale_release = [Requeue(run_id, "released", epoch=1)]
    assert await store.requeue(stale_release, expect=frozenset({RunStatus.running})) == []
    # Attempt 2 goes silent and attempt 3 takes the run over while it is still running.
    await store.claim(run_id, "w3")
    took_over = (await store.events(run_id))[-1].data
    return [refused, lost, held, took_over, usage]


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
    assert real["fenced"][:3] == [[True] * 5, ["run_pg_a"], []]
    assert real["fenced"][4] == (7, 70, 0.5)
    assert real["fenced"][3] == {
        "status": "running",
        "attempt": 3,
        "worker": "w3",
        "resumed": True,
        "superseded": {"attempt": 2, "worker": "w2"},
    }
    stale = [e for e in real["events"] if e[0] in ("turn", "tool_call", "discarded_call")]
    assert stale == [("turn", 1, None), ("tool_call", 1, None), ("discarded_call", 2, None)]


async def retention_scenario(store: RunStore, suffix: str) -> dict[str, Any]:
    """Erasure and the retention purge: what each deletes, counts, and what each refuses."""
    ids = {n: f"run_{suffix}_{n}" for n in ("a1", "a2", "b1", "b2", "c1")}
    tenants = {"a1": "ta", "a2": "ta", "b1": "tb", "b2": "tb", "c1": "tc"}
    await store.create(
        [(row(ids[n], tenant=tenants[n]), b"tar" if n == "a1" else None) for n in ids]
    )
    for n in ("a1", "b1", "c1"):
        await store.claim(ids[n], "w")
        await store.save_turn(turn(ids[n], 1), epoch=1)
        await store.finish(Finish(ids[n], RunStatus.succeeded, result="ok"), epoch=1)
    seen: dict[str, Any] = {}
    await store.claim(ids["a2"], "w")  # ta has a running run: erasure refuses
    with pytest.raises(InvalidState):
        await store.erase_tenant("ta")
    seen["after_refusal"] = await store.get(ids["a1"]) is not None
    later = datetime.now(UTC) + timedelta(days=1)
    earlier = datetime.now(UTC) - timedelta(days=1)
    seen["nothing_old"] = await store.purge_finished(earlier)
    purged = await store.purge_finished(later, exclude={"tc"})  # tc keeps its runs longer
    seen["purged"] = (purged.run_ids, purged.counts, purged.by_tenant)
    seen["running_kept"] = (await store.get(ids["a2"])) is not None
    seen["queued_kept"] = (await store.get(ids["b2"])) is not None
    seen["events_gone"] = await store.events(ids["a1"])
    seen["archive_gone"] = await store.load_archive(ids["a1"])
    only_tc = await store.purge_finished(later, "tc")
    seen["only_tc"] = (only_tc.run_ids, only_tc.by_tenant)
    erased = await store.erase_tenant("tb")  # its queued run and that run's job go too
    seen["erased"] = (erased.run_ids, erased.counts, erased.by_tenant)
    seen["erased_again"] = await store.erase_tenant("tb")
    seen["left"] = sorted(r.id for r in await store.list_runs(None, RunFilter()))
    return seen


async def test_the_twin_and_postgres_agree_on_erasure_and_retention(db: Database) -> None:
    postgres = PostgresRunStore(db)
    try:
        real = await retention_scenario(postgres, "pg")
        async with db.acquire() as conn:
            jobs = await conn.fetchval(
                "SELECT count(*) FROM pgqueuer WHERE convert_from(payload, 'UTF8') = $1",
                "run_pg_b2",
            )
    finally:
        await postgres.aclose()
    twin = InMemoryRunStore()
    assert await retention_scenario(twin, "pg") == real
    assert jobs == 0 and "run_pg_b2" not in twin.jobs.values()
    assert real["purged"][0] == ("run_pg_a1", "run_pg_b1")
    assert real["purged"][1] == {
        **{"run_events": 8, "run_turns": 2, "run_archives": 1, "runs": 2},
        **{"run_workspace_files": 0, "run_workspaces": 0, "workspace_blobs": 0},
    }
    assert real["only_tc"] == (("run_pg_c1",), {"tc": 1})
    assert real["erased"][0] == ("run_pg_b2",) and real["left"] == ["run_pg_a2"]
