"""The health monitor's emergency scale-up through the scaler (scaling/emergency.py), on a real
Postgres and the fake Kubernetes API server with the real client: one bounded step written to
the Deployment's scale, not stacked within the cooldown, held by the scaler's next ticks, stored
as a scaler decision; refused (with its reason) under an HPA, in dry-run or off; handed over
by a follower to the scaler's leader through Postgres, acted on once, or expired when stale.

Time is a :class:`FakeClock` and ticks are called one by one: no test sleeps for the policy.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from quarterdeck.config import Settings, load_settings
from quarterdeck.health.checks import AgentResponsivenessCheck
from quarterdeck.health.leader import LeaderElector
from quarterdeck.health.recovery import AgentRecovery, ScaleAnswer
from quarterdeck.kit.clock import FakeClock
from quarterdeck.kit.ids import new_id
from quarterdeck.metrics import REGISTRY
from quarterdeck.runs.models import RunCreate
from quarterdeck.runs.service import RunService
from quarterdeck.runs.store import PostgresRunStore
from quarterdeck.scaling.emergency import EmergencyScaleUp, ScalerOff, emergency_requester
from quarterdeck.scaling.gauges import CURRENT, DESIRED
from quarterdeck.scaling.handover import HANDED_OVER, HandOver
from quarterdeck.scaling.kube import kubernetes_scale_target
from quarterdeck.scaling.models import ScalerMode
from quarterdeck.scaling.observe import Observer
from quarterdeck.scaling.policy import ScalerConfig
from quarterdeck.scaling.scaler import Scaler
from quarterdeck.scaling.service import ScalingService
from quarterdeck.scaling.wiring import SCALER_KEY
from quarterdeck.store.pool import Database
from tests.support.elections import leading
from tests.support.fake_kubernetes import FakeKubernetes

NS, WORKER = "qd", "claude-agent-worker"
LABELS = {"app": "claude-agent", "tier": "worker"}
# One run per worker (2 x 0.5); a 120 s scale-down window, a 30 s cooldown, +3 per step at most.
CONFIG = ScalerConfig(
    min_replicas=1,
    max_replicas=10,
    concurrency_per_worker=2,
    target_utilization=0.5,
    scale_down_stabilization_s=120.0,
    cooldown_s=30.0,
    max_scale_up_step=3,
)
WHY = "agent_responsiveness"


@pytest.fixture(autouse=True)
def no_gauges_left() -> Iterator[None]:
    """A leading scaler exports the replica gauges until it steps down; these tests never stop
    theirs, so the gauges are cleared for the tests that run next in this process."""
    yield
    DESIRED.clear()
    CURRENT.clear()


@pytest.fixture
def settings(data_dir: Any) -> Settings:
    return load_settings(None, data_dir=data_dir)


@pytest.fixture
async def elector(db_url: str) -> AsyncIterator[LeaderElector]:
    async with leading(db_url, SCALER_KEY, "scaler") as e:
        yield e


@pytest.fixture
def k8s(fake_k8s: FakeKubernetes) -> FakeKubernetes:
    fake_k8s.reset()
    fake_k8s.add_deployment(NS, WORKER, 2, LABELS)
    for pod in ("pod-a", "pod-b"):
        fake_k8s.add_pod(NS, pod, LABELS)
    return fake_k8s


def make_scaler(
    db: Database,
    elector: LeaderElector,
    clock: FakeClock,
    mode: ScalerMode,
    k8s: FakeKubernetes | None = None,
) -> Scaler:
    target = kubernetes_scale_target(k8s.base_url, NS, WORKER) if k8s is not None else None
    return Scaler(
        db,
        Observer(PostgresRunStore(db)),
        elector,
        mode=mode,
        policy="quarterdeck",
        config=CONFIG,
        interval_s=15.0,
        target_name=WORKER,
        target=target,
        clock=clock.wall,
        monotonic=clock.now,
    )


async def submit(settings: Settings, db: Database, n: int) -> None:
    await RunService(settings, PostgresRunStore(db)).submit_batch(
        [RunCreate(prompt=f"p{i}") for i in range(n)]
    )


async def decisions(db: Database, clock: FakeClock) -> list[Any]:
    svc = ScalingService(
        db,
        mode="kubernetes",
        policy="quarterdeck",
        target=WORKER,
        interval_s=15.0,
        config=CONFIG,
        clock=clock.wall,
    )
    return list((await svc.decisions(limit=50)).items)


async def requests(db: Database) -> list[Any]:
    async with db.acquire() as conn:
        return list(await conn.fetch("SELECT * FROM scaling_requests ORDER BY id"))


def scale_patches(k8s: FakeKubernetes) -> int:
    return len([r for r in k8s.requests if r.method == "PATCH" and r.path.endswith("/scale")])


async def test_a_request_steps_up_once_per_cooldown_and_the_next_ticks_keep_it(
    db: Database, elector: LeaderElector, settings: Settings, k8s: FakeKubernetes
) -> None:
    clock = FakeClock()
    scaler = make_scaler(db, elector, clock, "kubernetes", k8s)
    requester = emergency_requester(scaler)
    assert isinstance(requester, EmergencyScaleUp)
    await submit(settings, db, 2)  # 2 runs: the 2 workers fit them
    first = await scaler.tick()
    assert first is not None and (first.direction, first.desired) == ("hold", 2)

    clock.advance(5)
    answer = await requester.request_scale_up(WHY, {"requeued": 1})
    # The old-backlog step: 2 runs arrived in the last 60 s, and one more backlog age (60 s) of
    # them needs ceil(2/60 * 60 / 1) = 2 workers: 2 -> 4, not the maximum of 10.
    assert isinstance(answer, ScaleAnswer) and answer.accepted, answer.reason
    assert "2→4" in answer.reason
    assert k8s.replicas_of(NS, WORKER) == 4

    clock.advance(10)  # within the 30 s cooldown: the monitor asks again, nothing stacks
    again = await requester.request_scale_up(WHY, {"requeued": 1})
    assert not again and "do not stack" in again.reason
    assert k8s.replicas_of(NS, WORKER) == 4 and scale_patches(k8s) == 1

    for _ in range(7):  # 15..120 s later: the policy wants 2, the floor holds 4
        clock.advance(15)
        tick = await scaler.tick()
        assert tick is not None and (tick.current, tick.desired, tick.direction) == (4, 4, "hold")
        assert tick.factors["emergency_floor"] == 4
    assert k8s.replicas_of(NS, WORKER) == 4

    clock.advance(15)  # 125 s after the request: the hold is over, the policy's windows rule
    down = await scaler.tick()
    assert down is not None and (down.current, down.desired, down.applied) == (4, 2, 2)
    assert k8s.replicas_of(NS, WORKER) == 2

    stored = await decisions(db, clock)
    emergency = [d for d in stored if d.reason.startswith(f"health monitor: {WHY}:")]
    assert [(d.direction, d.current, d.desired, d.applied) for d in emergency] == [
        ("hold", 4, 4, None),  # the stacked request, newest first
        ("up", 2, 4, 4),
    ]
    assert emergency[1].factors["emergency"] is True and emergency[1].factors["step"] == 2
    assert emergency[1].mode == "kubernetes" and emergency[1].error is None


async def test_an_hpa_on_the_deployment_makes_the_request_refuse(
    db: Database, elector: LeaderElector, settings: Settings, k8s: FakeKubernetes
) -> None:
    clock = FakeClock()
    k8s.add_hpa(NS, "claude-agent-worker-hpa", "Deployment", WORKER)
    scaler = make_scaler(db, elector, clock, "kubernetes", k8s)
    await submit(settings, db, 3)
    answer = await EmergencyScaleUp(scaler).request_scale_up(WHY, {})
    assert not answer and "another autoscaler" in answer.reason
    assert "claude-agent-worker-hpa" in answer.reason
    assert k8s.replicas_of(NS, WORKER) == 2 and scale_patches(k8s) == 0
    (refused,) = await decisions(db, clock)
    assert refused.reason.startswith(f"health monitor: {WHY}: not scaled")
    assert refused.error is not None and "claude-agent-worker-hpa" in refused.error
    assert (refused.direction, refused.applied) == ("hold", None)
    with k8s._lock:
        k8s.hpas.clear()  # the HPA is gone: no cooldown was left behind by the refusal
    assert (await EmergencyScaleUp(scaler).request_scale_up(WHY, {})).accepted
    assert k8s.replicas_of(NS, WORKER) > 2


async def test_modes_that_do_not_act_say_why_and_a_follower_hands_over(
    db: Database, db_url: str, elector: LeaderElector, settings: Settings
) -> None:
    clock = FakeClock()
    dry = await EmergencyScaleUp(make_scaler(db, elector, clock, "dry-run")).request_scale_up(
        WHY, {}
    )
    assert not dry and "dry-run" in dry.reason
    (stored,) = await decisions(db, clock)
    assert stored.reason.startswith(f"health monitor: {WHY}:") and stored.direction == "hold"

    off_requester = emergency_requester(None)
    assert isinstance(off_requester, ScalerOff)
    off = await off_requester.request_scale_up(WHY, {})
    assert not off and "scaler is off" in off.reason

    follower_elector = LeaderElector(db_url, key=SCALER_KEY, retry_s=0.2, role="scaler")
    try:
        await follower_elector._step()
        assert not follower_elector.is_leader
        follower = make_scaler(db, follower_elector, clock, "metric")
        answer = await EmergencyScaleUp(follower).request_scale_up(WHY, {})
        assert not answer and answer.reason.startswith(HANDED_OVER), answer.reason
    finally:
        await follower_elector.stop()
    # A process with the mode on but no scaler loop hands over the same way.
    alone = emergency_requester(HandOver(db, interval_s=15.0, clock=clock.wall))
    assert isinstance(alone, EmergencyScaleUp)
    assert (await alone.request_scale_up(WHY, {})).reason.startswith(HANDED_OVER)
    assert len(await decisions(db, clock)) == 1, "a follower decides nothing"
    assert [(r["status"], r["reason"]) for r in await requests(db)] == [("pending", WHY)] * 2


async def test_metric_mode_exports_the_step_as_the_desired_count(
    db: Database, elector: LeaderElector, settings: Settings
) -> None:
    clock = FakeClock()
    scaler = make_scaler(db, elector, clock, "metric")
    assert (await scaler.tick()).desired == 1  # type: ignore[union-attr]  # idle: the minimum
    answer = await EmergencyScaleUp(scaler).request_scale_up(WHY, {})
    assert answer.accepted and "1→2" in answer.reason  # nothing arrived: the step is one
    assert REGISTRY.get_sample_value("claude_agent_scaler_desired_replicas") == 2
    clock.advance(15)
    kept = await scaler.tick()
    assert kept is not None and (kept.current, kept.desired) == (2, 2)
    assert REGISTRY.get_sample_value("claude_agent_scaler_desired_replicas") == 2


async def test_the_agent_recovery_reports_the_scale_up_it_got(
    db: Database, elector: LeaderElector, k8s: FakeKubernetes
) -> None:
    """The health monitor's own strategy, with a run nobody drives, asks through the scaler.

    The run is an orphan (its job is gone), repaired under its own lock: the lapsed-run repair's
    advisory lock key is the scaler leader's (0x51D0003), so it finds nothing while the scaler
    in this test leads (reported to the lead; runs/read_repository.py is not this test's).
    """
    run_id = new_id("run")
    async with db.acquire() as conn:
        await conn.execute(
            """
            INSERT INTO runs (id, agent_type, operation, prompt, model, status, attempts,
                              started_at, heartbeat_at, worker_id)
            VALUES ($1, 'coder', 'task', 'p', 'm', 'running', 1, now() - interval '5 minutes',
                    now() - interval '5 minutes', 'gone-worker')
            """,
            run_id,
        )
    scaler = make_scaler(db, elector, FakeClock(), "kubernetes", k8s)
    check = AgentResponsivenessCheck(db, stale_after_s=30)
    failing = await check.check()
    assert not failing.healthy
    result = await AgentRecovery(check, emergency_requester(scaler)).recover(failing, 0)
    assert result.details["requeued"] == [run_id], result.message
    assert result.details["scale_up_accepted"] is True
    assert "requested an emergency scale-up (scale up 2→3" in result.message
    assert k8s.replicas_of(NS, WORKER) == 3


async def test_a_followers_request_is_acted_on_once_by_the_leaders_next_tick_or_expires(
    db: Database, db_url: str, elector: LeaderElector, settings: Settings, k8s: FakeKubernetes
) -> None:
    """Two scalers on one Postgres, as two replicas: the health monitor's leader is the
    scaler's follower, so its request goes through the table to the other process."""
    clock = FakeClock()
    leader = make_scaler(db, elector, clock, "kubernetes", k8s)
    follower_elector = LeaderElector(db_url, key=SCALER_KEY, retry_s=0.2, role="scaler")
    try:
        await follower_elector._step()
        assert not follower_elector.is_leader
        follower = make_scaler(db, follower_elector, clock, "kubernetes", k8s)
        await submit(settings, db, 2)
        assert (await leader.tick()).desired == 2  # type: ignore[union-attr]

        clock.advance(5)
        answer = await EmergencyScaleUp(follower).request_scale_up(WHY, {"requeued": 1})
        assert not answer.accepted and answer.reason.startswith(HANDED_OVER), answer.reason
        assert "drops it after 60 s" in answer.reason  # max(2 x 15 s, 60 s)
        assert k8s.replicas_of(NS, WORKER) == 2 and scale_patches(k8s) == 0
        assert await follower.tick() is None  # a follower takes nothing
        (pending,) = await requests(db)
        assert (pending["status"], pending["reason"], pending["answer"]) == ("pending", WHY, None)

        clock.advance(10)  # the leader's next tick: the request first, then its own decision
        tick = await leader.tick()
        assert tick is not None and (tick.current, tick.desired) == (4, 4)
        assert tick.factors["emergency_floor"] == 4
        assert k8s.replicas_of(NS, WORKER) == 4 and scale_patches(k8s) == 1
        clock.advance(15)
        assert (await leader.tick()).desired == 4  # type: ignore[union-attr]
        assert scale_patches(k8s) == 1, "a taken request is acted on once"
        (taken,) = await requests(db)
        assert taken["status"] == "taken" and taken["answer"].startswith("scaled: scale up 2→4")
        emergency = [d for d in await decisions(db, clock) if "emergency" in d.factors]
        assert len(emergency) == 1 and emergency[0].factors["request"] == pending["id"]
        assert emergency[0].reason.startswith(f"health monitor: {WHY}: scale up 2→4")
        assert f"handed over by a follower as request {pending['id']}" in emergency[0].reason

        # A request the leader did not reach in time (60 s) is expired, not acted on late.
        clock.advance(20)  # past the 30 s cooldown: acted on, it would step up again
        assert not await EmergencyScaleUp(follower).request_scale_up(WHY, {})
        clock.advance(61)  # 111 s after the step: its floor (120 s) still holds the pool at 4
        assert (await leader.tick()).desired == 4  # type: ignore[union-attr]
        assert k8s.replicas_of(NS, WORKER) == 4 and scale_patches(k8s) == 1
        stale = (await requests(db))[1]
        assert stale["status"] == "expired" and "within 60 s" in stale["answer"]
        after = [d for d in await decisions(db, clock) if "emergency" in d.factors]
        assert len(after) == 1
    finally:
        await follower_elector.stop()


async def test_two_takers_at_once_never_take_the_same_request(db: Database) -> None:
    clock = FakeClock()
    one, two = (HandOver(db, interval_s=15.0, clock=clock.wall) for _ in range(2))
    for i in range(30):
        await one.emergency_scale_up(f"check-{i}")
    first, second = await asyncio.gather(one.take(), two.take())
    ids = [r.id for r in first] + [r.id for r in second]
    assert len(ids) == len(set(ids)) == 30  # 20 at most each (TAKE_LIMIT); none twice
    assert await one.take() == [] and await two.take() == []
    assert {r["status"] for r in await requests(db)} == {"taken"}
