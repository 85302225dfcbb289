"""Worker durability against a real Postgres: attempt caps, drain and release, resume, billing."""

from __future__ import annotations

import asyncpg
import pytest

from quarterdeck.runs.models import RunCreate
from quarterdeck.runtime import Runtime
from tests.conftest import eventually

pytestmark = pytest.mark.asyncio


async def _turn_totals(url: str, run_id: str) -> tuple[int, int, float, list[int]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT * FROM run_turns WHERE run_id = $1 ORDER BY turn", run_id)
    finally:
        await conn.close()
    return (
        sum(r["input_tokens"] for r in rows),
        sum(r["output_tokens"] for r in rows),
        float(sum(r["cost_usd"] or 0 for r in rows)),
        [r["turn"] for r in rows],
    )


async def test_a_run_past_its_attempt_cap_fails_with_the_reason(make_settings, db_url):
    api_only = Runtime(make_settings(max_attempts=3), with_workers=False)
    await api_only.start()
    run, _ = await api_only.runs.submit(RunCreate(prompt="p"))
    await api_only.stop()
    # As if three workers had died while holding it: the next pickup is attempt 4.
    conn = await asyncpg.connect(db_url)
    await conn.execute("UPDATE runs SET attempts = 3, status = 'running' WHERE id = $1", run.id)
    await conn.close()
    rt = Runtime(make_settings(max_attempts=3))
    await rt.start()
    try:
        done = await rt.runs.wait(run.id, 30)
        assert done.status == "failed"
        assert "gave up after 3 attempts" in (done.error or "")
        assert done.turns == 0
    finally:
        await rt.stop()


async def test_drain_releases_in_flight_runs_and_another_worker_resumes_without_rebilling(
    make_settings, db_url
):
    settings = make_settings(simulated_latency="400ms", simulated_turns=6, drain_timeout=0.1)
    first = Runtime(settings)
    await first.start()
    run, _ = await first.runs.submit(RunCreate(prompt="six turns"))

    async def two_turns_done() -> bool:
        return (await first.runs.get(run.id)).turns >= 2

    await eventually(two_turns_done, timeout=30)
    await first.drain()
    released = await first.runs.get(run.id)
    assert released.status == "queued"
    events = await first.runs.events(run.id)
    assert any(e.data.get("reason") == "released by a draining worker" for e in events)
    turns_at_release = released.turns
    await first.stop()

    second = Runtime(make_settings(simulated_latency="0", simulated_turns=6))
    await second.start()
    try:
        done = await second.runs.wait(run.id, 30)
        assert done.status == "succeeded"
        assert done.turns == 6 and done.attempts == 2
        inp, out, cost, turns = await _turn_totals(db_url, run.id)
        assert turns == [1, 2, 3, 4, 5, 6]
        assert (done.input_tokens, done.output_tokens) == (inp, out)
        assert done.cost_usd is not None and done.cost_usd == pytest.approx(cost)
        resumed = [
            e
            for e in await second.runs.events(run.id)
            if e.type == "status" and e.data.get("resumed")
        ]
        assert len(resumed) == 1 and turns_at_release >= 2
        # An uninterrupted run of the same script (same run id) bills exactly the same tokens.
        from quarterdeck.kit.latency import parse_latency
        from quarterdeck.providers.simulated import SimulatedProvider
        from quarterdeck.providers.types import Message, ModelRequest, TextBlock

        sim = SimulatedProvider(parse_latency("0"), 0.0, 6)
        expected_in = expected_out = 0
        for t in range(6):
            resp = await sim.complete(
                ModelRequest(
                    model=done.model,
                    messages=[Message("user", [TextBlock("six turns")])],
                    cache_ttl="5m",  # the default agent type caches its prompt
                    metadata={"run_id": run.id, "turn": str(t)},
                )
            )
            expected_in += resp.usage.input_tokens
            expected_out += resp.usage.output_tokens
        assert (done.input_tokens, done.output_tokens) == (expected_in, expected_out)
    finally:
        await second.stop()


async def test_turn_costs_add_up_to_the_run_cost(runtime, db_url):
    ids = [(await runtime.runs.submit(RunCreate(prompt=f"task {i}")))[0].id for i in range(5)]
    for run_id in ids:
        done = await runtime.runs.wait(run_id, 30)
        assert done.status == "succeeded"
        inp, out, cost, turns = await _turn_totals(db_url, run_id)
        assert turns == list(range(1, done.turns + 1))
        assert (done.input_tokens, done.output_tokens) == (inp, out)
        if done.cost_usd is not None:
            assert done.cost_usd == pytest.approx(cost)


async def test_run_events_are_append_only(runtime, db_url):
    run, _ = await runtime.runs.submit(RunCreate(prompt="x"))
    conn = await asyncpg.connect(db_url)
    try:
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute("UPDATE run_events SET type = 'forged' WHERE run_id = $1", run.id)
    finally:
        await conn.close()


async def test_provider_errors_are_retried_and_counted(make_settings):
    from quarterdeck.metrics import REGISTRY

    def counted(name: str) -> float:
        total = 0.0
        for metric in REGISTRY.collect():
            if metric.name == name:
                total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
        return total

    def errors() -> float:
        return counted("claude_agent_errors")

    before, retries_before = errors(), counted("claude_agent_provider_retries")
    # The guide's 1/5/15/30 s schedule and 60 s breaker are the defaults (unit-tested on their
    # own, with a fake clock); short ones of the same shape keep this test about retries, not
    # about waiting (73 s -> ~5 s).
    rt = Runtime(
        make_settings(
            simulated_error_rate=0.6,
            simulated_turns=2,
            retry_schedule=[0.05, 0.25, 0.75, 1.5],
            breaker_open_for=1.0,
        )
    )
    await rt.start()
    try:
        runs = [(await rt.runs.submit(RunCreate(prompt=f"flaky {i}")))[0] for i in range(4)]
        finals = [await rt.runs.wait(r.id, 120) for r in runs]
        assert all(f.status.terminal for f in finals)
        events = [e for f in finals for e in await rt.runs.events(f.id)]
        turns = [e.data for e in events if e.type == "turn"]
        retried = sum(t["attempts"] - 1 for t in turns)
        seen = [(f.status, f.error, f.turns) for f in finals]
        # Retries show in the turns that succeeded, and (for calls that failed for good, which
        # write no turn) in the retry counter: which runs fail is drawn per run id.
        assert retried > 0 or counted("claude_agent_provider_retries") > retries_before, (
            f"no call was retried: {seen}"
        )
        # Attempts include waits on an open breaker, which are not provider errors.
        assert errors() > before, (errors(), before, retried, seen)
    finally:
        await rt.stop()


async def test_a_run_stops_before_a_call_that_could_exceed_its_budget(runtime):
    from quarterdeck.runs.models import RunStatus

    generous, _ = await runtime.runs.submit(RunCreate(prompt="plenty", budget_usd=100.0))
    tight, _ = await runtime.runs.submit(RunCreate(prompt="tight", budget_usd=0.05))
    tiny, _ = await runtime.runs.submit(RunCreate(prompt="tiny", budget_usd=0.0001))
    done = await runtime.runs.wait(generous.id, 30)
    assert done.status == RunStatus.succeeded and done.budget_usd == 100.0
    stopped = await runtime.runs.wait(tight.id, 30)
    assert stopped.status in (RunStatus.budget_exceeded, RunStatus.succeeded)
    assert stopped.cost_usd is not None and stopped.cost_usd <= 0.05
    none = await runtime.runs.wait(tiny.id, 30)
    assert none.status == RunStatus.budget_exceeded
    assert none.turns == 0 and none.cost_usd == 0
    assert "budget" in (none.error or "") and "before turn 1" in (none.error or "")


async def test_a_tenant_budget_stops_runs_before_they_overspend(runtime):
    from quarterdeck.metrics import REGISTRY
    from quarterdeck.runs.models import RunStatus

    await runtime.budgets.set("default", daily=0.0001, monthly=None)
    run, _ = await runtime.runs.submit(RunCreate(prompt="over budget"))
    done = await runtime.runs.wait(run.id, 30)
    assert done.status == RunStatus.budget_exceeded
    assert "tenant 'default' daily budget" in (done.error or "")
    assert done.turns == 0
    await runtime.budgets.refresh_metrics()
    assert (
        REGISTRY.get_sample_value(
            "claude_agent_budget_limit_usd", {"tenant": "default", "period": "daily"}
        )
        == 0.0001
    )
