"""The scaler as a running service, on a real Postgres: its decisions table (repository and the
read side every replica serves), the leader's loop in each mode (dry-run, metric, kubernetes
against the fake API server with the real client), the refusal when an HPA owns the Deployment,
leadership (two scalers on one database: one acts), and the hold when the queue cannot be read.

Time is a :class:`FakeClock` and ticks are called one by one, so no test sleeps for the policy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from quarterdeck.config import Settings, load_settings
from quarterdeck.exceptions import ValidationFailed
from quarterdeck.health.leader import LeaderElector
from quarterdeck.kit.clock import FakeClock
from quarterdeck.metrics import REGISTRY
from quarterdeck.runs.models import RunCreate
from quarterdeck.runs.service import RunService
from quarterdeck.runs.store import PostgresRunStore
from quarterdeck.scaling import repository as repo
from quarterdeck.scaling.kube import DELETION_COST, kubernetes_scale_target
from quarterdeck.scaling.models import ScalerMode
from quarterdeck.scaling.observe import Observer
from quarterdeck.scaling.policy import ScalerConfig
from quarterdeck.scaling.scaler import Scaler
from quarterdeck.scaling.service import ScalingService
from quarterdeck.scaling.wiring import SCALER_KEY, build_scaling
from quarterdeck.store.pool import Database
from tests.conftest import eventually
from tests.support.elections import leading
from tests.support.fake_kubernetes import FakeKubernetes

NS, WORKER = "qd", "claude-agent-worker"
LABELS = {"app": "claude-agent", "tier": "worker"}
# One run per worker (2 x 0.5), no windows or cooldown: each tick's answer is the work in flight.
CONFIG = ScalerConfig(
    min_replicas=1,
    max_replicas=10,
    concurrency_per_worker=2,
    target_utilization=0.5,
    scale_down_stabilization_s=0.0,
    cooldown_s=0.0,
)


def gauge(name: str, labels: dict[str, str] | None = None) -> float | None:
    return REGISTRY.get_sample_value(name, labels or {})


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
    fake_k8s.add_deployment(NS, WORKER, 1, LABELS)
    for pod in ("pod-a", "pod-b", "pod-c", "pod-d"):
        fake_k8s.add_pod(NS, pod, LABELS)
    return fake_k8s


def make_scaler(
    db: Database,
    elector: LeaderElector,
    clock: FakeClock,
    mode: ScalerMode,
    *,
    store: PostgresRunStore | None = None,
    k8s: FakeKubernetes | None = None,
) -> Scaler:
    target = kubernetes_scale_target(k8s.base_url, NS, WORKER) if k8s is not None else None
    return Scaler(
        db,
        Observer(store or PostgresRunStore(db)),
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


async def submit(settings: Settings, db: Database, n: int) -> list[str]:
    """Queued runs through the real submission path (runs and their jobs, one transaction)."""
    ids, _ = await RunService(settings, PostgresRunStore(db)).submit_batch(
        [RunCreate(prompt=f"p{i}") for i in range(n)]
    )
    return ids


def service(db: Database, clock: FakeClock, mode: ScalerMode = "dry-run") -> ScalingService:
    return ScalingService(
        db,
        mode=mode,
        policy="quarterdeck",
        target=WORKER,
        interval_s=15.0,
        config=CONFIG,
        clock=clock.wall,
    )


async def stored(db: Database, clock: FakeClock, mode: str, current: int, desired: int) -> int:
    """A decision as a (previous) leader stored it, without acting."""
    direction = "up" if desired > current else "down" if desired < current else "hold"
    async with db.acquire() as conn:
        return await repo.insert_decision(
            conn,
            at=clock.wall(),
            policy="quarterdeck",
            mode=mode,
            target=WORKER,
            current=current,
            desired=desired,
            applied=None,
            direction=direction,
            reason="r",
            factors={},
            error=None,
        )


# -- the decisions table and the read side -------------------------------------------------------
async def test_decisions_round_trip_page_newest_first_and_purge(db: Database) -> None:
    clock = FakeClock()
    t0 = clock.wall()
    async with db.acquire() as conn:
        ids = []
        for i, (cur, want) in enumerate([(3, 3), (3, 5), (5, 5), (5, 4), (4, 4)]):
            direction = "up" if want > cur else "down" if want < cur else "hold"
            ids.append(
                await repo.insert_decision(
                    conn,
                    at=t0 + timedelta(minutes=i),
                    policy="quarterdeck",
                    mode="kubernetes",
                    target=f"{NS}/{WORKER}",
                    current=cur,
                    desired=want,
                    applied=want if direction != "hold" else None,
                    direction=direction,
                    reason=f"decision {i}",
                    factors={"queued": i, "ratio": float("inf"), "hot": False, "why": None},
                    error="boom" if i == 3 else None,
                )
            )
        latest = await repo.latest_decision(conn)
    assert latest is not None and latest["id"] == ids[-1] == max(ids)
    svc = service(db, clock)
    page = await svc.decisions(limit=2)
    assert [d.id for d in page.items] == [ids[4], ids[3]]
    assert page.next_cursor == str(ids[3])
    down = page.items[1]
    assert (down.direction, down.current, down.desired, down.applied, down.error) == (
        "down",
        5,
        4,
        4,
        "boom",
    )
    # jsonb keeps the kinds; a non-finite float is stored as null (jsonb has no infinity).
    assert down.factors == {"queued": 3, "ratio": None, "hot": False, "why": None}
    rest = await svc.decisions(limit=2, cursor=page.next_cursor)
    assert [d.id for d in rest.items] == [ids[2], ids[1]]
    last = await svc.decisions(limit=2, cursor=rest.next_cursor)
    assert [d.id for d in last.items] == [ids[0]] and last.next_cursor is None
    holds = await svc.decisions(direction="hold")
    assert [d.id for d in holds.items] == [ids[4], ids[2], ids[0]]
    for bad in ("abc", "-1", "1e3", "9" * 19, ""):
        with pytest.raises(ValidationFailed) as info:
            await svc.decisions(cursor=bad)
        assert info.value.extra["errors"][0]["field"] == "cursor", bad
    # Purge: everything made before the cut goes, the rest stays.
    async with db.acquire() as conn:
        assert await repo.purge_decisions(conn, t0 + timedelta(minutes=2)) == 2
        left = await repo.list_decisions(conn, limit=10)
    assert [r["id"] for r in left] == [ids[4], ids[3], ids[2]]


async def test_status_reports_the_last_decision_its_age_and_staleness(db: Database) -> None:
    clock = FakeClock()
    svc = service(db, clock)
    empty = await svc.status()
    assert empty.last is None and empty.stale and not empty.leader
    assert empty.config["concurrency_per_worker"] == 2 and empty.config["min_replicas"] == 1
    off = service(db, clock, "off")
    assert not (await off.status()).stale  # nothing configured: nothing to be stale
    await stored(db, clock, "dry-run", 3, 3)
    clock.advance(40)
    fresh = await svc.status()
    assert fresh.last is not None and fresh.last_age_s == 40.0 and not fresh.stale
    clock.advance(10)  # 50 s > 3 intervals of 15 s
    assert (await svc.status()).stale


# -- the loop ------------------------------------------------------------------------------------
async def test_dry_run_records_holds_and_ups_without_acting(
    db: Database, elector: LeaderElector, settings: Settings
) -> None:
    clock = FakeClock()
    scaler = make_scaler(db, elector, clock, "dry-run")
    first = await scaler.tick()
    assert first is not None
    assert (first.direction, first.current, first.desired, first.applied) == ("hold", 1, 1, None)
    assert gauge("claude_agent_scaler_desired_replicas") is None  # dry-run exports no target
    assert gauge("claude_agent_scaler_current_replicas") == 1
    await submit(settings, db, 4)
    clock.advance(15)
    up = await scaler.tick()
    assert up is not None
    assert (up.direction, up.current, up.desired, up.applied) == ("up", 1, 4, None)
    assert up.factors["queued"] == 4 and up.factors["running"] == 0
    assert up.factors["arrivals_per_s"] == pytest.approx(4 / 60)  # 4 submitted in the last 60 s
    clock.advance(15)
    again = await scaler.tick()  # "current" continues from the last desired count
    assert again is not None and (again.direction, again.current) == ("hold", 4)
    page = await service(db, clock).decisions()
    assert [d.direction for d in page.items] == ["hold", "up", "hold"]
    assert all(d.mode == "dry-run" and d.applied is None for d in page.items)


async def test_metric_mode_exports_the_desired_count_only_while_leading(
    db: Database, elector: LeaderElector, settings: Settings
) -> None:
    clock = FakeClock()
    await stored(db, clock, "metric", 2, 3)  # a previous leader's last word: continue from 3
    scaler = make_scaler(db, elector, clock, "metric")
    await submit(settings, db, 6)
    ups = gauge("claude_agent_scaler_decisions_total", {"direction": "up"}) or 0.0
    decision = await scaler.tick()
    assert decision is not None and (decision.current, decision.desired) == (3, 6)
    assert gauge("claude_agent_scaler_desired_replicas") == 6
    assert gauge("claude_agent_scaler_current_replicas") == 3
    assert gauge("claude_agent_scaler_decisions_total", {"direction": "up"}) == ups + 1
    await elector.stop()  # leadership lost: a follower exports no replica gauges at all
    assert await scaler.tick() is None
    assert gauge("claude_agent_scaler_desired_replicas") is None
    assert gauge("claude_agent_scaler_current_replicas") is None


async def test_kubernetes_mode_scales_up_on_a_burst_and_down_marking_busy_pods(
    db: Database, elector: LeaderElector, settings: Settings, k8s: FakeKubernetes
) -> None:
    clock = FakeClock()
    store = PostgresRunStore(db)
    scaler = make_scaler(db, elector, clock, "kubernetes", store=store, k8s=k8s)
    ids = await submit(settings, db, 4)
    up = await scaler.tick()
    assert up is not None and (up.direction, up.current, up.desired, up.applied) == (
        "up",
        1,
        4,
        4,
    )
    assert up.target == f"{NS}/{WORKER}" and up.error is None
    assert k8s.replicas_of(NS, WORKER) == 4
    # The burst ends: one run is running on pod-c, the rest are cancelled.
    assert await store.claim(ids[0], "pod-c:41:abcdef") is not None
    for run_id in ids[1:]:
        await store.cancel(run_id, None)
    clock.advance(15)
    down = await scaler.tick()
    assert down is not None and (down.direction, down.current, down.desired, down.applied) == (
        "down",
        4,
        1,
        1,
    )
    assert k8s.replicas_of(NS, WORKER) == 1
    pods = ("pod-a", "pod-b", "pod-c", "pod-d")
    costs = {p: k8s.pods[(NS, p)]["metadata"]["annotations"].get(DELETION_COST) for p in pods}
    assert costs == {"pod-a": "0", "pod-b": "0", "pod-c": "100", "pod-d": "0"}
    patches = [r for r in k8s.requests if r.method == "PATCH"]
    assert patches[-1].path.endswith(f"/deployments/{WORKER}/scale"), "mark busy, then write"


async def test_kubernetes_mode_refuses_while_an_hpa_owns_the_deployment(
    db: Database, elector: LeaderElector, settings: Settings, k8s: FakeKubernetes
) -> None:
    clock = FakeClock()
    k8s.add_hpa(NS, "claude-agent-worker-hpa", "Deployment", WORKER)
    scaler = make_scaler(db, elector, clock, "kubernetes", k8s=k8s)
    await submit(settings, db, 5)
    errors = gauge("claude_agent_scaler_errors_total") or 0.0
    refused = await scaler.tick()
    assert refused is not None
    assert (refused.direction, refused.current, refused.desired, refused.applied) == (
        "hold",
        1,
        1,
        None,
    )
    assert refused.error is not None and "claude-agent-worker-hpa" in refused.error
    assert "refused" in refused.reason
    assert k8s.replicas_of(NS, WORKER) == 1
    assert not [r for r in k8s.requests if r.method == "PATCH"]
    assert gauge("claude_agent_scaler_errors_total") == errors + 1
    clock.advance(15)
    assert (await scaler.tick()).error is not None  # type: ignore[union-attr]  # still refusing
    with k8s._lock:
        k8s.hpas.clear()  # the operator removed the HPA: the next tick acts
    clock.advance(15)
    acted = await scaler.tick()
    assert acted is not None and acted.error is None and acted.applied == 5
    assert k8s.replicas_of(NS, WORKER) == 5
    # An HPA created while the scaler acts: the next change is refused too, before any write.
    k8s.add_hpa(NS, "keda-hpa-workers", "Deployment", WORKER)
    await submit(settings, db, 3)
    clock.advance(15)
    late = await scaler.tick()
    assert late is not None and (late.direction, late.desired, late.applied) == ("up", 8, None)
    assert late.error is not None and "keda-hpa-workers" in late.error
    assert k8s.replicas_of(NS, WORKER) == 5


async def test_only_the_leader_acts_and_a_follower_takes_over(
    db: Database, db_url: str, settings: Settings
) -> None:
    clock = FakeClock()
    one = LeaderElector(db_url, key=SCALER_KEY, retry_s=0.2, role="scaler")
    two = LeaderElector(db_url, key=SCALER_KEY, retry_s=0.2, role="scaler")
    try:
        await one._step()
        await two._step()
        assert one.is_leader and not two.is_leader
        first, second = (
            make_scaler(db, one, clock, "dry-run"),
            make_scaler(db, two, clock, "dry-run"),
        )
        await submit(settings, db, 3)
        for _ in range(3):
            assert await first.tick() is not None
            assert await second.tick() is None
            clock.advance(15)
        await one.stop()
        await two._step()
        assert two.is_leader
        took_over = await second.tick()
        assert await first.tick() is None
        # The new leader continues from the stored count, not from the minimum.
        assert took_over is not None and took_over.current == 3
        async with db.acquire() as conn:
            rows = await repo.list_decisions(conn, limit=10)
        assert len(rows) == 4
    finally:
        await one.stop()
        await two.stop()


async def test_a_queue_that_cannot_be_read_holds_instead_of_reading_zero(
    db: Database, db_url: str, elector: LeaderElector, settings: Settings
) -> None:
    clock = FakeClock()
    await submit(settings, db, 8)
    broken = Database(db_url, min_size=1, max_size=1)
    await broken.open()
    await broken.close()  # the run store's pool is gone: stats() fails
    scaler = make_scaler(db, elector, clock, "dry-run", store=PostgresRunStore(broken))
    decision = await scaler.tick()
    assert decision is not None
    assert (decision.direction, decision.current, decision.desired) == ("hold", 1, 1)
    assert decision.factors["queued"] is None and decision.factors["missing_metrics"]
    assert "missing" in decision.reason


# -- wiring: the runtime serves the status and runs the loop --------------------------------------
async def test_the_runtime_registers_the_service_and_runs_the_scaler(make_settings: Any) -> None:
    from quarterdeck.kit.wiring import Services
    from quarterdeck.runtime import Runtime

    rt = Runtime(
        make_settings(scaler_mode="metric", scaler_interval=0.1, scaler_min_replicas=2),
        with_workers=False,
    )
    await rt.start()
    try:
        registry = Services()
        rt.register(registry)
        svc = registry.get(ScalingService)
        assert svc is not None and rt.scaler is not None
        await eventually(lambda: rt.scaler is not None and rt.scaler.is_leader, timeout=10)

        async def decided() -> bool:
            return (await svc.decisions(limit=2)).next_cursor is not None

        await eventually(decided, timeout=10)
        status = await svc.status()
        assert status.mode == "metric" and status.leader and not status.stale
        assert status.last is not None and status.last.desired == 2
        # Its own election, apart from the health monitor's (which runs here too).
        assert gauge("claude_agent_leader", {"role": "scaler"}) == 1
        assert rt.leader is not None and rt.scaler.elector is not rt.leader
        assert gauge("claude_agent_scaler_desired_replicas") == 2
    finally:
        await rt.stop()
    assert gauge("claude_agent_scaler_desired_replicas") is None
    assert gauge("claude_agent_leader", {"role": "scaler"}) == 0  # released on stop


def test_off_builds_no_loop_and_a_status_that_is_never_stale(settings: Settings) -> None:
    svc, scaler = build_scaling(settings, Database("postgresql://x/y"), None, None, None)  # type: ignore[arg-type]
    assert scaler is None and svc.mode == "off" and svc.target is None
