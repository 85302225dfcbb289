"""Fencing of run attempts against the in-memory twin: a worker that lost its run records nothing.

The twin keeps the Postgres store's rule (the parity test runs the same writes against both), so
these drive the real worker and executor through the moments a run can be lost: while a model
call is in flight, and between calls.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from quarterdeck.config import Settings
from quarterdeck.exceptions import Fenced
from quarterdeck.providers.types import Message, ModelRequest, TextBlock, ToolSpec, Usage
from quarterdeck.runs.executor import ExecutorConfig, RunExecutor
from quarterdeck.runs.memory import InMemoryRunStore
from quarterdeck.runs.models import RunStatus
from quarterdeck.runs.precall import worst_case_usage
from tests.unit.test_worker_logic import (
    Plain,
    ScriptedProvider,
    pool,
    price,
    run_next,
    settings,
    submitted,
)

__all__ = ["settings"]  # the fixture, shared with the worker logic tests


async def test_a_run_lost_during_a_call_records_nothing_and_says_the_call_was_paid(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    store = InMemoryRunStore()
    provider = ScriptedProvider(turns=4)
    provider.hold = 2  # turn 2's call is in flight when the run is lost
    stalled = pool(settings, store, provider)
    run = await submitted(settings, store)
    work = asyncio.create_task(run_next(stalled, store))
    await provider.reached.wait()
    # Its job is picked up again meanwhile: the new holder's claim starts attempt 2.
    claimed = await store.claim(run.id, "w2")
    assert claimed is not None and claimed[0].attempts == 2
    provider.release.set()
    await work

    assert provider.calls == [(run.id, 1), (run.id, 2)], "no call after the loss was noticed"
    held = await store.get(run.id)
    assert held is not None and held.status is RunStatus.running and held.attempts == 2
    assert held.turns == 1 and held.input_tokens == 100, "turn 2 of attempt 1 is not recorded"
    events = await store.events(run.id)
    assert [e.turn for e in events if e.type == "turn"] == [1]
    discarded = [e for e in events if e.type == "discarded_call"]
    assert len(discarded) == 1 and discarded[0].turn == 2
    assert discarded[0].data["attempt"] == 1
    assert discarded[0].data["usage"]["input_tokens"] == 100
    assert discarded[0].data["cost_usd"] == pytest.approx(0.1)
    # The stalled worker neither finished nor requeued it, and ran no finalizer.
    assert [e.data["status"] for e in events if e.type == "status"][-1] == "running"
    assert stalled.executor.planner.finalized == []  # type: ignore[attr-defined]
    assert not store.jobs


async def test_a_stale_attempt_stops_before_its_next_model_call(settings: Settings) -> None:
    store = InMemoryRunStore()
    provider = ScriptedProvider(turns=2)
    executor = RunExecutor(store, provider, Plain(), price, ExecutorConfig())
    run = await submitted(settings, store)
    first = await store.claim(run.id, "w1")
    assert first is not None
    await store.claim(run.id, "w2")  # attempt 2 took over before attempt 1 called the model
    with pytest.raises(Fenced):
        await executor.execute(first[0])
    assert provider.calls == []
    assert [e.type for e in await store.events(run.id)] == ["status", "status", "status"]


async def test_tool_events_of_a_lost_attempt_are_refused(settings: Settings) -> None:
    store = InMemoryRunStore()
    provider = ScriptedProvider(turns=3)
    provider.hold = 1
    worker = pool(settings, store, provider)
    run = await submitted(settings, store)
    work = asyncio.create_task(run_next(worker, store))
    await provider.reached.wait()
    provider.release.set()
    # Lost after the call answered but before its tools' events are written: the turn is
    # recorded (the statement ran first), the tool events and everything after are not.
    original = store.save_turn

    async def then_lose(turn, *, epoch):  # type: ignore[no-untyped-def]
        await original(turn, epoch=epoch)
        await store.claim(run.id, "w2")

    store.save_turn = then_lose  # type: ignore[method-assign]
    await work
    events = await store.events(run.id)
    assert [e.type for e in events if e.type in ("turn", "tool_call", "tool_results")] == ["turn"]
    assert provider.calls == [(run.id, 1)]


async def test_a_lost_heartbeat_marks_the_run_and_its_call_is_still_accounted(
    tmp_path: Path,
) -> None:
    from quarterdeck.config import load_settings

    settings = load_settings(None, data_dir=tmp_path, worker_heartbeat_timeout=0.05)
    store = InMemoryRunStore()
    provider = ScriptedProvider(turns=3)
    provider.hold = 1  # parked in its first call, as a stalled worker would be
    worker = pool(settings, store, provider)
    run = await submitted(settings, store)
    beats = asyncio.create_task(worker._heartbeat_loop())
    try:
        work = asyncio.create_task(run_next(worker, store))
        await provider.reached.wait()
        await store.claim(run.id, "w2")
        for _ in range(100):  # the heartbeat notices the loss
            if worker.inflight[run.id].fenced:
                break
            await asyncio.sleep(0.01)
        assert worker.inflight[run.id].fenced
        provider.release.set()
        await asyncio.wait_for(work, 5)
    finally:
        beats.cancel()
    events = await store.events(run.id)
    assert [e.data["status"] for e in events if e.type == "status"][-1] == "running"
    assert [e.type for e in events if e.type in ("turn", "discarded_call")] == ["discarded_call"]


def test_the_worst_case_counts_system_prompt_tools_and_max_tokens() -> None:
    messages = [Message(role="user", content=[TextBlock("x" * 300)])]
    bare = worst_case_usage(ModelRequest(model="m", messages=messages, max_tokens=100))
    schema = {"type": "object", "properties": {"path": {"type": "string"}}}
    full = worst_case_usage(
        ModelRequest(
            model="m",
            messages=messages,
            system="s" * 3000,
            tools=[ToolSpec("read_file", "d" * 600, schema)],
            max_tokens=8000,
        )
    )
    assert full.output_tokens == 8000 and bare.output_tokens == 100
    assert bare.cache_creation_input_tokens > 100  # 300 characters of prompt and the framing
    # The system prompt (1,000 tokens) and the tool schema (200+) are in the input estimate.
    assert full.cache_creation_input_tokens >= bare.cache_creation_input_tokens + 1200
    # Priced as 1-hour cache writes, the dearest input class: never below the metered cost.
    assert full.cache_creation_1h_tokens == full.cache_creation_input_tokens
    assert full.input_tokens == 0 and isinstance(full, Usage)


def test_the_hold_covers_the_dearest_model_of_the_fallback_chain() -> None:
    from decimal import Decimal

    from quarterdeck.providers.pricing import PriceTable, Pricing
    from quarterdeck.resilience.calls import ResilientCaller
    from quarterdeck.runs.precall import CallGuard

    pricing = Pricing(PriceTable.load(None))
    caller = ResilientCaller(
        object(),  # type: ignore[arg-type]  # never called: only the chain is read
        cost_of=pricing.cost,
        fallbacks={"claude-haiku-4-5": ["claude-sonnet-4-5"]},
        context_fallbacks={"claude-sonnet-4-5": ["claude-opus-4-1"]},
    )
    assert caller.models_for("claude-haiku-4-5") == [
        "claude-haiku-4-5",
        "claude-sonnet-4-5",
        "claude-opus-4-1",
    ]
    request = ModelRequest(model="claude-haiku-4-5", messages=[], max_tokens=1000)
    alone = CallGuard(InMemoryRunStore(), pricing.cost, None).worst_case(request)
    chained = CallGuard(
        InMemoryRunStore(), pricing.cost, None, models_for=caller.models_for
    ).worst_case(request)
    opus = pricing.cost("claude-opus-4-1", worst_case_usage(request))
    assert alone < chained == opus > Decimal(0)
