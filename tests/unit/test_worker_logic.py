"""Worker, executor and submission logic against the in-memory run store: no Postgres.

The scripted provider answers with a tool call until the run's last turn, and can hold a turn
until the test lets it go, so a drain or a cancel lands mid-run.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest

from quarterdeck.config import Settings, load_settings
from quarterdeck.exceptions import IdempotencyConflict
from quarterdeck.providers.types import (
    Message,
    ModelRequest,
    ModelResponse,
    TextBlock,
    ToolUseBlock,
    Usage,
)
from quarterdeck.runs.executor import ExecutorConfig, Outcome, RunExecutor, RunPlan, SimulatedTools
from quarterdeck.runs.memory import InMemoryRunStore
from quarterdeck.runs.models import Run, RunCreate, RunStatus
from quarterdeck.runs.service import RunService
from quarterdeck.runs.worker import RELEASED, WorkerPool, after_claim, settle


class ScriptedProvider:
    """``turns`` turns per run: tool calls, then a final answer. ``hold`` parks a turn."""

    name = "scripted"

    def __init__(self, turns: int = 3) -> None:
        self.turns = turns
        self.calls: list[tuple[str, int]] = []
        self.hold: int | None = None
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def complete(self, request: ModelRequest) -> ModelResponse:
        turn = sum(1 for m in request.messages if m.role == "assistant") + 1
        self.calls.append((request.metadata["run_id"], turn))
        if turn == self.hold:
            self.reached.set()
            await self.release.wait()
        if turn < self.turns:
            content: list[Any] = [ToolUseBlock(id=f"t{turn}", name="bash", input={})]
            stop = "tool_use"
        else:
            content, stop = [TextBlock("done")], "end_turn"
        return ModelResponse(
            id=f"r{turn}",
            model=request.model,
            message=Message(role="assistant", content=content),
            stop_reason=stop,  # type: ignore[arg-type]
            usage=Usage(input_tokens=100, output_tokens=10),
        )

    def stream(self, request: ModelRequest) -> Any:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


class Plain:
    """A planner with the stand-in tools and fixed limits."""

    def __init__(self, max_turns: int = 10) -> None:
        self.max_turns = max_turns
        self.finalized: list[RunStatus] = []

    async def plan(self, run: Run) -> RunPlan:
        return RunPlan("be careful", SimulatedTools(), self.max_turns, 3600.0)

    async def finalize(self, run: Run, outcome: Outcome) -> None:
        self.finalized.append(outcome.status)


class Ctx:
    def __init__(self) -> None:
        self.cancellation = anyio.CancelScope()


def price(model: str, usage: Usage) -> Decimal | None:
    return Decimal(usage.input_tokens) / 1000


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(None, data_dir=tmp_path, max_attempts=3)


def pool(
    settings: Settings, store: InMemoryRunStore, provider: ScriptedProvider, max_turns: int = 10
) -> WorkerPool:
    executor = RunExecutor(store, provider, Plain(max_turns), price, ExecutorConfig())
    return WorkerPool(settings, store, executor, database_url="postgresql://unused")


async def submitted(settings: Settings, store: InMemoryRunStore, prompt: str = "p") -> Run:
    service = RunService(settings, store)
    run, created = await service.submit(RunCreate(prompt=prompt))
    assert created
    return run


async def run_next(worker: WorkerPool, store: InMemoryRunStore, ctx: Ctx | None = None) -> str:
    job = store.next_job()
    assert job is not None, "a job is queued"
    await worker.handle(job[1], ctx or Ctx())
    return job[1]


def statuses(events: list[Any]) -> list[str]:
    return [e.data["status"] for e in events if e.type == "status"]


# -- pure decisions ---------------------------------------------------------------------------
def test_decisions_after_a_claim_and_after_execution() -> None:
    run = Run.model_construct(attempts=4, max_attempts=3)
    assert after_claim(run, accepting=True) == "give_up"
    run = Run.model_construct(attempts=1, max_attempts=3)
    assert after_claim(run, accepting=True) == "execute"
    assert after_claim(run, accepting=False) == "release"
    done = Outcome(RunStatus.succeeded)
    assert settle(done, release=True) is done
    assert settle(None, release=True) is None
    cancelled = settle(None, release=False)
    assert cancelled is not None and cancelled.status is RunStatus.cancelled


# -- submission -------------------------------------------------------------------------------
async def test_submission_replays_a_key_and_refuses_another_body(settings: Settings) -> None:
    store = InMemoryRunStore()
    service = RunService(settings, store)
    first, created = await service.submit(RunCreate(prompt="a"), idempotency_key="k")
    again, replayed = await service.submit(RunCreate(prompt="a"), idempotency_key="k")
    assert created and not replayed and again.id == first.id
    with pytest.raises(IdempotencyConflict):
        await service.submit(RunCreate(prompt="b"), idempotency_key="k")
    ids, created = await service.submit_batch([RunCreate(prompt="x"), RunCreate(prompt="y")])
    assert created and len(ids) == 2 and len(store.jobs) == 3


# -- the worker and the executor --------------------------------------------------------------
async def test_a_run_executes_to_success_with_its_events_in_order(settings: Settings) -> None:
    store, provider = InMemoryRunStore(), ScriptedProvider(turns=2)
    run = await submitted(settings, store)
    await run_next(pool(settings, store, provider), store)
    done = await store.get(run.id)
    assert done is not None and done.status is RunStatus.succeeded and done.result == "done"
    assert done.attempts == 1 and done.turns == 2 and done.cost_usd == pytest.approx(0.2)
    events = await store.events(run.id)
    assert [e.type for e in events] == [
        "status",
        "status",
        "turn",
        "tool_call",
        "tool_results",
        "turn",
        "status",
    ]
    assert statuses(events) == ["queued", "running", "succeeded"]


async def test_a_drained_run_is_released_and_resumes_from_its_checkpoint(
    settings: Settings,
) -> None:
    store, provider = InMemoryRunStore(), ScriptedProvider(turns=3)
    provider.hold = 2
    run = await submitted(settings, store)
    first = pool(settings, store, provider)
    task = asyncio.create_task(run_next(first, store))
    await provider.reached.wait()
    await first.drain(grace=0)
    await task
    released = await store.get(run.id)
    assert released is not None and released.status is RunStatus.queued and released.turns == 1
    assert (await store.events(run.id))[-1].data["reason"] == RELEASED
    provider.hold = None
    await run_next(pool(settings, store, provider), store)
    done = await store.get(run.id)
    assert done is not None and done.status is RunStatus.succeeded
    assert done.attempts == 2 and done.turns == 3
    assert provider.calls.count((run.id, 1)) == 1, "a checkpointed turn is never called again"
    assert statuses(await store.events(run.id)) == [
        "queued",
        "running",
        "queued",
        "running",
        "succeeded",
    ]


async def test_a_cancel_request_stops_a_running_run(settings: Settings) -> None:
    store, provider = InMemoryRunStore(), ScriptedProvider(turns=3)
    provider.hold = 2
    run = await submitted(settings, store)
    ctx = Ctx()
    task = asyncio.create_task(run_next(pool(settings, store, provider), store, ctx))
    await provider.reached.wait()
    service = RunService(settings, store)
    assert (await service.cancel(run.id)).status is RunStatus.running
    ctx.cancellation.cancel()  # what pgqueuer does when the job is marked cancelled
    await task
    done = await store.get(run.id)
    assert done is not None and done.status is RunStatus.cancelled
    assert done.error == "cancelled by request"
    assert [e.type for e in await store.events(run.id)][-2:] == ["cancel_requested", "status"]


async def test_a_queued_run_is_cancelled_at_once_and_its_job_finds_it_ended(
    settings: Settings,
) -> None:
    store, provider = InMemoryRunStore(), ScriptedProvider()
    run = await submitted(settings, store)
    job = store.rows[run.id].job_id
    cancelled = await RunService(settings, store).cancel(run.id)
    assert cancelled.status is RunStatus.cancelled and job in store.cancelled_jobs
    await pool(settings, store, provider).handle(run.id, Ctx())  # a stale delivery
    assert provider.calls == [] and (await store.get(run.id)).attempts == 0  # type: ignore[union-attr]


async def test_a_run_past_its_attempts_is_given_up(settings: Settings) -> None:
    store, provider = InMemoryRunStore(), ScriptedProvider()
    run = await submitted(settings, store)
    for _ in range(3):  # three workers died holding it
        await store.claim(run.id, "lost")
    await run_next(pool(settings, store, provider), store)
    done = await store.get(run.id)
    assert done is not None and done.status is RunStatus.failed and done.attempts == 4
    assert "gave up after 3 attempts" in (done.error or "") and provider.calls == []


async def test_a_draining_worker_hands_a_new_run_straight_back(settings: Settings) -> None:
    store, provider = InMemoryRunStore(), ScriptedProvider()
    run = await submitted(settings, store)
    worker = pool(settings, store, provider)
    await worker.drain(grace=0)
    await run_next(worker, store)
    back = await store.get(run.id)
    assert back is not None and back.status is RunStatus.queued and provider.calls == []
    assert run.id in store.jobs.values()


async def test_max_turns_ends_the_run_with_its_last_answer(settings: Settings) -> None:
    store, provider = InMemoryRunStore(), ScriptedProvider(turns=5)
    run = await submitted(settings, store)
    await run_next(pool(settings, store, provider, max_turns=2), store)
    done = await store.get(run.id)
    assert done is not None and done.status is RunStatus.max_turns and done.turns == 2
    assert (await store.events(run.id))[-1].data["error_type"] == "max_turns"
