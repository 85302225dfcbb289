"""The run store's rules without Postgres: the transition table and the in-memory twin."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from quarterdeck.exceptions import InvalidState, NotFound
from quarterdeck.runs import transitions
from quarterdeck.runs.memory import InMemoryRunStore
from quarterdeck.runs.models import TERMINAL, RunStatus
from quarterdeck.runs.store import Finish, KeyTaken, Requeue, RunStore, TurnRecord

Q, R = RunStatus.queued, RunStatus.running


def row(run_id: str, key: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": run_id,
        "tenant": "default",
        "agent_type": "coder",
        "operation": "task",
        "prompt": "p",
        "model": "simulated-m",
        "max_attempts": 3,
        "idempotency_key": key,
        "request_hash": "h" if key else None,
        "job_id": 0,
        "params": extra.pop("params", {}),
        "budget_usd": None,
        "key_id": None,
        **extra,
    }


def turn(run_id: str, n: int, cost: Decimal | None = Decimal("0.01")) -> TurnRecord:
    usage = {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    messages = [{"role": "user", "content": [{"type": "text", "text": f"turn {n}"}]}]
    return TurnRecord(run_id, n, messages, "simulated-m", usage, cost, "tool_use", {"n": n})


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def created(store: InMemoryRunStore, *ids: str) -> None:
    await store.create([(row(i), None) for i in ids])


# -- the table --------------------------------------------------------------------------------
def test_the_table_allows_the_lifecycle_and_nothing_out_of_a_terminal_status() -> None:
    for source, target in [(Q, R), (R, R), (R, Q), (Q, Q), (R, RunStatus.succeeded)]:
        assert transitions.allowed(source, target)
        transitions.check(source, target)
    for end in TERMINAL:
        assert transitions.allowed(Q, end) and transitions.allowed(R, end)
        for target in RunStatus:
            assert not transitions.allowed(end, target)
            with pytest.raises(transitions.IllegalTransition, match="cannot become"):
                transitions.check(end, target)


def test_the_sql_guards_are_derived_from_the_table() -> None:
    assert transitions.CLAIMABLE == {Q, R}
    assert transitions.REQUEUEABLE == {Q, R}
    assert transitions.ENDABLE == {Q, R}
    assert transitions.guard(RunStatus.running) == ["queued", "running"]
    assert transitions.sources(RunStatus.succeeded) == {Q, R}


def test_an_illegal_transition_is_a_quarterdeck_error() -> None:
    assert issubclass(transitions.IllegalTransition, InvalidState)
    with pytest.raises(transitions.IllegalTransition):
        transitions.require_end(RunStatus.queued)


# -- the twin ---------------------------------------------------------------------------------
def test_the_twin_satisfies_the_protocol() -> None:
    store: RunStore = InMemoryRunStore()
    assert store is not None


async def test_create_enqueues_a_job_and_records_queued() -> None:
    store = InMemoryRunStore()
    r1, r2 = row("run_1"), row("run_2")
    runs = await store.create([(r1, b"tar"), (r2, None)])
    assert [r.id for r in runs] == ["run_1", "run_2"]
    assert r1["job_id"] and r2["job_id"] and r1["job_id"] != r2["job_id"]
    assert store.next_job() == (r1["job_id"], "run_1")
    assert await store.load_archive("run_1") == b"tar"
    events = await store.events("run_1")
    assert [(e.type, e.data) for e in events] == [("status", {"status": "queued"})]


async def test_a_taken_idempotency_key_writes_nothing() -> None:
    store = InMemoryRunStore()
    await store.create([(row("run_1", key="k"), None)])
    with pytest.raises(KeyTaken):
        await store.create([(row("run_2"), None), (row("run_3", key="k"), None)])
    assert await store.get("run_2") is None
    assert await store.find_by_idempotency_keys("default", ["k", "x"]) == {"k": ("run_1", "h")}


async def test_claim_counts_attempts_and_refuses_terminal_runs() -> None:
    store = InMemoryRunStore()
    await created(store, "run_1")
    claimed = await store.claim("run_1", "w1")
    assert claimed is not None and claimed[1] is True and claimed[0].attempts == 1
    again = await store.claim("run_1", "w2")  # re-delivered after w1 was lost
    assert again is not None and again[1] is False and again[0].attempts == 2
    done = await store.finish(Finish("run_1", RunStatus.succeeded, result="ok"))
    assert done is not None and done.status is RunStatus.succeeded and done.finished_at
    assert await store.claim("run_1", "w3") is None, "a stale job for a finished run"
    assert await store.finish(Finish("run_1", RunStatus.failed)) is None, "a lost race"
    assert (await store.get("run_1")).status is RunStatus.succeeded  # type: ignore[union-attr]
    statuses = [e.data["status"] for e in await store.events("run_1")]
    assert statuses == ["queued", "running", "running", "succeeded"]


async def test_finishing_with_a_non_terminal_status_is_refused() -> None:
    store = InMemoryRunStore()
    await created(store, "run_1")
    with pytest.raises(transitions.IllegalTransition):
        await store.finish(Finish("run_1", RunStatus.running))


async def test_checkpoints_add_usage_and_resume_from_the_last_one() -> None:
    store = InMemoryRunStore()
    await created(store, "run_1")
    await store.claim("run_1", "w")
    assert await store.last_checkpoint("run_1") is None
    await store.save_turn(turn("run_1", 1), epoch=1)
    await store.save_turn(turn("run_1", 2, cost=None), epoch=1)
    last = await store.last_checkpoint("run_1")
    assert last is not None and last[0] == 2
    run = await store.get("run_1")
    assert run is not None and run.turns == 2 and run.input_tokens == 20
    assert run.cost_usd is None, "one unpriced turn makes the cost unknown"
    with pytest.raises(ValueError, match="already checkpointed"):
        await store.save_turn(turn("run_1", 2), epoch=1)


async def test_requeue_is_one_operation_with_a_new_job_and_a_status_event() -> None:
    store = InMemoryRunStore()
    await created(store, "run_1", "run_2")
    while store.next_job():
        pass
    await store.claim("run_1", "w")
    moved = await store.requeue(
        [Requeue("run_1", "drain", {"worker": "w"}), Requeue("run_2", "drain")],
        expect=frozenset({R}),
    )
    assert moved == ["run_1"], "run_2 is queued, not running: left alone"
    job = store.next_job()
    assert job is not None and job[1] == "run_1" and store.next_job() is None
    last = (await store.events("run_1"))[-1]
    assert last.data == {"status": "queued", "reason": "drain", "worker": "w"}
    await store.finish(Finish("run_1", RunStatus.cancelled))
    assert await store.requeue([Requeue("run_1", "x")]) == [], "a terminal run stays ended"


async def test_requeue_refuses_a_source_the_table_does_not_allow() -> None:
    store = InMemoryRunStore()
    with pytest.raises(transitions.IllegalTransition):
        await store.requeue([], expect=frozenset({RunStatus.failed}))


async def test_lapsed_runs_are_requeued_and_their_old_job_dropped() -> None:
    clock = Clock()
    store = InMemoryRunStore(clock=clock)
    await created(store, "run_1", "run_2")
    old = store.rows["run_1"].job_id
    await store.claim("run_1", "gone")
    await store.claim("run_2", "alive")
    clock.now += 60
    assert await store.heartbeat(["run_2", "run_1"], epochs=[1, 0]) == ["run_1"]
    assert await store.lapsed(30) == ["run_1"]
    assert await store.requeue_lapsed(30) == ["run_1"]
    assert old not in store.jobs and store.rows["run_1"].job_id in store.jobs
    assert "requeued by the health monitor" in (await store.events("run_1"))[-1].data["reason"]
    assert (await store.get("run_2")).status is R  # type: ignore[union-attr]


async def test_orphans_get_a_new_job_only_when_theirs_is_gone_and_they_are_silent() -> None:
    clock = Clock()
    store = InMemoryRunStore(clock=clock)
    await created(store, "run_1", "run_2")
    store.lose_job("run_1")
    assert await store.requeue_orphans(30) == [], "not silent long enough yet"
    clock.now += 60
    assert await store.requeue_orphans(30) == ["run_1"], "run_2 still has its job"
    assert "run_1" in store.jobs.values()


async def test_cancel_ends_a_queued_run_and_asks_a_running_one_to_stop() -> None:
    store = InMemoryRunStore()
    await created(store, "run_1", "run_2")
    queued_job = store.rows["run_1"].job_id
    done = await store.cancel("run_1", "default")
    assert done is not None and done.status is RunStatus.cancelled
    assert done.error == "cancelled before it started" and queued_job in store.cancelled_jobs
    await store.claim("run_2", "w")
    assert await store.cancel("run_2", "default") is None
    assert store.rows["run_2"].cancel_requested
    assert (await store.events("run_2"))[-1].type == "cancel_requested"
    with pytest.raises(transitions.IllegalTransition, match="already cancelled"):
        await store.cancel("run_1", "default")
    with pytest.raises(NotFound):
        await store.cancel("run_2", "other-tenant")


async def test_time_out_ends_overdue_runs_and_cancels_their_jobs() -> None:
    clock = Clock()
    store = InMemoryRunStore(clock=clock)
    await store.create([(row("run_1", params={"timeout_s": 600}), None)])
    await store.claim("run_1", "w")
    clock.now += 1000
    assert await store.overdue(3600, 300) == ["run_1"]
    assert await store.time_out(["run_1"], 3600) == ["run_1"]
    run = await store.get("run_1")
    assert run is not None and run.status is RunStatus.timed_out and "600s" in (run.error or "")
    assert store.rows["run_1"].job_id in store.cancelled_jobs
    assert await store.time_out(["run_1"], 3600) == [], "already ended"


async def test_events_keep_their_order_and_page_by_id() -> None:
    store = InMemoryRunStore()
    await created(store, "run_1")
    await store.claim("run_1", "w")
    await store.append_events(
        "run_1", [("tool_call", 1, {"a": 1}), ("tool_results", 1, {})], epoch=1
    )
    events = await store.events("run_1")
    assert [e.type for e in events] == ["status", "status", "tool_call", "tool_results"]
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert [e.type for e in await store.events("run_1", after=events[1].id, limit=1)] == [
        "tool_call"
    ]


async def test_stats_count_unfinished_runs() -> None:
    store = InMemoryRunStore()
    await created(store, "run_1", "run_2")
    await store.claim("run_1", "w")
    stats = await store.stats()
    assert stats.queued == {"coder": 1} and stats.states == {"running": 1, "queued": 1}
