"""Agent-configuration canaries end to end: real workers run simulated runs on the embedded
Postgres, submission routes a share of them to the candidate, and the rollout controller judges
how the two arms' runs ended.

The controller and the service share a fake clock (so a 1-minute step passes when the test
says), while the runs are real: a candidate capped at 3 turns fails the simulated scripts that
need 4 to 6 (the stable arm's limit is 50), and a candidate on a cheaper model succeeds as
often at a fraction of the cost. Durations are not judged here (``max_duration_increase`` is
wide): with a zero-latency provider they are scheduling noise, not the configuration.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from quarterdeck.exceptions import Conflict, ValidationFailed
from quarterdeck.health.leader import LeaderElector
from quarterdeck.kit.clock import FakeClock
from quarterdeck.rollouts.controller import RolloutController, TrafficActuator
from quarterdeck.rollouts.models import CanaryCreate
from quarterdeck.rollouts.service import RolloutService
from quarterdeck.rollouts.wiring import ROLLOUTS_KEY
from quarterdeck.runs.models import Run, RunCreate, RunStatus
from quarterdeck.runtime import Runtime
from tests.support.elections import leading
from tests.support.ui import browser_of

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def rt(make_settings: Any) -> AsyncIterator[Runtime]:
    settings = make_settings(
        health_monitor_enabled=False, maintenance_enabled=False, worker_concurrency=20
    )
    runtime = Runtime(settings)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


@pytest.fixture
async def elector(db_url: str) -> AsyncIterator[LeaderElector]:
    async with leading(db_url, ROLLOUTS_KEY, "rollouts") as e:
        yield e


def parts(
    rt: Runtime, elector: LeaderElector
) -> tuple[RolloutService, RolloutController, FakeClock]:
    clock = FakeClock(wall=datetime.now(UTC))
    service = RolloutService(
        rt.db, catalog=rt.agent_catalog, router=rt.canary_routes, clock=clock.wall
    )

    async def no_cluster(spec: Any) -> TrafficActuator:
        raise AssertionError("an agent-configuration canary touches no cluster")

    controller = RolloutController(
        rt.db, elector, no_cluster, rt.incidents, prometheus=None, clock=clock.wall
    )
    return service, controller, clock


def canary(**changes: Any) -> CanaryCreate:
    return CanaryCreate(
        agent_type="coder",
        set=changes,
        steps="30,100",
        pauses="1m",
        min_runs=12,
        analysis_interval_s=30,
        max_duration_increase=100.0,
        max_turns_increase=1.0,
    )


async def run_batch(rt: Runtime, n: int) -> list[Run]:
    submitted = [(await rt.runs.submit(RunCreate(prompt=f"task {i}")))[0] for i in range(n)]
    return [await rt.runs.wait(r.id, 60) for r in submitted]


async def incidents_of(rt: Runtime, rollout_id: str) -> int:
    async with rt.db.acquire() as conn:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM incidents WHERE dedup_key = $1", f"rollout:{rollout_id}"
            )
        )


async def test_a_candidate_that_fails_more_runs_is_rolled_back(
    rt: Runtime, elector: LeaderElector
) -> None:
    service, controller, _ = parts(rt, elector)
    started = await service.start_canary(canary(max_turns=3), by="test")
    assert started.kind == "agent-config" and started.traffic == "runs"
    spec = started.spec
    assert spec["settings"] == {"max_turns": 3} and spec["base"] == {}
    with pytest.raises(Conflict):  # one live canary per agent type
        await service.start_canary(canary(max_turns=4), by="test")

    runs = await run_batch(rt, 90)
    arms = {arm: [r for r in runs if r.canary_arm == arm] for arm in ("stable", "candidate")}
    assert all(r.canary_id == started.id for r in runs)
    assert 12 <= len(arms["candidate"]) <= 45, len(arms["candidate"])  # ~30 % of 90
    # Each run records the configuration it ran with, and the candidate's really applied.
    assert {r.config_version for r in arms["candidate"]} == {spec["version"]}
    assert {r.config_version for r in arms["stable"]} == {spec["stable_version"]}
    assert all(r.status is RunStatus.succeeded for r in arms["stable"])
    assert any(r.status is RunStatus.max_turns for r in arms["candidate"])
    assert all(r.turns <= 3 for r in arms["candidate"])

    await controller.tick()  # judged before the step's pause is over: failure does not wait
    detail = await service.get(started.id)
    assert detail.phase == "rolled_back", detail.last_analysis
    assert "success-rate" in (detail.pause_reason or "")
    assert await incidents_of(rt, started.id) == 1
    await controller.tick()
    assert await incidents_of(rt, started.id) == 1  # once

    # Within the routes' refresh, every new run of the type gets the stable configuration
    # again, outside any canary.
    await asyncio.sleep(rt.canary_routes.ttl_s)
    after = await run_batch(rt, 10)
    assert {r.config_version for r in after} == {spec["stable_version"]}
    assert all(r.canary_id is None and "agent_config" not in r.params for r in after)

    # The dashboard's rollout page shows both arms as the analysis counted them.
    async with browser_of(rt, "") as ui:  # authentication off: signing in needs no key
        page = await ui.get(f"/ui/rollouts/{started.id}")
    assert page.status_code == 200 and 'id="canary-arms"' in page.text
    row = page.text.split('data-arm="candidate"', 1)[1].split("</tr>", 1)[0]
    assert f'<td class="num">{len(arms["candidate"])}</td>' in row


async def test_a_cheaper_candidate_at_the_same_success_rate_is_promoted(
    rt: Runtime, elector: LeaderElector
) -> None:
    service, controller, clock = parts(rt, elector)
    started = await service.start_canary(canary(model="claude-haiku-4-5"), by="test")
    stable_model = rt.runs.resolve_model(None, "coder")
    runs = await run_batch(rt, 60)
    candidates = [r for r in runs if r.canary_arm == "candidate"]
    assert {r.model for r in candidates} == {"simulated-claude-haiku-4-5"} != {stable_model}
    assert all(r.status is RunStatus.succeeded for r in runs)

    await controller.tick()
    assert (await service.get(started.id)).phase == "progressing"  # a pass never cuts a pause
    clock.advance(61)
    await controller.tick()
    step2 = await service.get(started.id)
    assert (step2.step_index, step2.weight) == (1, 100), step2.last_analysis
    measured = {m["name"]: m for m in (step2.last_analysis or {})["measurements"]}
    assert measured["cost-per-success"]["verdict"] == "pass"

    await asyncio.sleep(rt.canary_routes.ttl_s)  # the routes other replicas read, re-read
    await run_batch(rt, 12)
    clock.advance(61)
    await controller.tick()  # the last step passes: promoted; no soak for a configuration
    await controller.tick()
    done = await service.get(started.id)
    assert done.phase == "completed", [e.message for e in done.events]
    assert await incidents_of(rt, started.id) == 0

    await asyncio.sleep(rt.canary_routes.ttl_s)
    after = await run_batch(rt, 5)
    assert {r.model for r in after} == {"simulated-claude-haiku-4-5"}
    assert all(r.canary_id is None for r in after)
    assert {r.config_version for r in after} == {started.spec["version"]}

    # The next canary builds on what is in force: its stable arm is the promoted candidate.
    nxt = await service.start_canary(canary(max_turns=40), by="test")
    assert nxt.spec["base"] == {"model": "claude-haiku-4-5"}
    assert nxt.spec["settings"] == {"model": "claude-haiku-4-5", "max_turns": 40}
    assert nxt.spec["stable_version"] == started.spec["version"]


async def test_bad_canary_requests_name_the_field(rt: Runtime, elector: LeaderElector) -> None:
    service, _, _ = parts(rt, elector)
    cases = [
        (canary(tools="run_command"), "set.tools"),
        (canary(thinking_budget=999_999), "set.thinking_budget"),
        (canary(max_turns=0), "set.max_turns"),
        (CanaryCreate(agent_type="nope", set={"max_turns": 3}), "agent_type"),
        (CanaryCreate(agent_type="coder", set={"max_turns": 3}, steps="50,20"), "steps"),
    ]
    for body, field in cases:
        with pytest.raises(ValidationFailed) as caught:
            await service.start_canary(body, by="test")
        fields = [e["field"] for e in caught.value.extra.get("errors", [])]
        assert any(f.startswith(field) for f in fields), (field, caught.value.detail, fields)
