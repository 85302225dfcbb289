"""Rollouts as a running service on a real Postgres: the table and its one-live-per-target rule,
the service (start, read, promote, abort), and the leader's controller loop applying actions,
measuring through a Prometheus-shaped HTTP server and deciding with the real state machine.

The Kubernetes side is an in-memory actuator (the real one is tested against the fake API
server in its own tests); Prometheus is a tiny local HTTP server answering ``/api/v1/query``
exactly as Prometheus does (a vector), from numbers computed from the weight the actuator was
last told. Time is a :class:`FakeClock`; ticks are called one by one, so nothing sleeps.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from quarterdeck.config import load_settings
from quarterdeck.exceptions import Conflict, InvalidState, NotFound, RolloutError, ValidationFailed
from quarterdeck.health.leader import LeaderElector
from quarterdeck.incidents.service import IncidentService
from quarterdeck.kit.clock import FakeClock
from quarterdeck.metrics import REGISTRY
from quarterdeck.rollouts.controller import RolloutController, TrafficActuator
from quarterdeck.rollouts.models import CheckIn, RolloutCreate
from quarterdeck.rollouts.prometheus import Prometheus
from quarterdeck.rollouts.service import RolloutService
from quarterdeck.rollouts.spec import RolloutSpec
from quarterdeck.rollouts.traffic import describe_split, effective_weight, replica_split
from quarterdeck.rollouts.wiring import ROLLOUTS_KEY, build_rollouts
from quarterdeck.store.pool import Database
from tests.support.elections import leading

Answer = Callable[[str], float | None]


class FakePrometheus:
    """``/api/v1/query`` answered by ``answer(query)``: a number is a one-sample vector, None an
    empty vector; ``down`` answers 503 like a Prometheus that is not ready."""

    def __init__(self) -> None:
        self.answer: Answer = lambda q: None
        self.down = False
        self.queries: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = parse_qs(url.query).get("query", [""])[0]
                outer.queries.append(query)
                if outer.down or url.path != "/api/v1/query":
                    self._send(503, {"status": "error", "error": "not ready"})
                    return
                value = outer.answer(query)
                result = [] if value is None else [{"metric": {}, "value": [1.0, str(value)]}]
                self._send(200, {"status": "success", "data": {"resultType": "vector", "result": result}})  # fmt: skip

            def _send(self, code: int, body: dict[str, Any]) -> None:
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class MemoryTraffic:
    """A :class:`TrafficActuator` that remembers what it was told; ``failing`` names the calls
    that raise as the Kubernetes API would."""

    def __init__(self, mode: str = "nginx", pods: int = 3) -> None:
        self.mode = mode
        self.pods = pods
        self.weight = 0
        self.calls: list[tuple[str, Any]] = []
        self.failing: set[str] = set()

    def _do(self, name: str, arg: Any = None) -> None:
        if name in self.failing:
            raise RolloutError(f"{name}: HTTP 500 the API server is on fire")
        self.calls.append((name, arg))

    async def prepare(self, spec: RolloutSpec) -> None:
        self._do("prepare", spec.image)

    async def set_weight(self, spec: RolloutSpec, weight: int) -> str:
        self._do("set_weight", weight)
        self.weight = weight
        return describe_split(self.mode, weight, self.pods)

    async def rollback(self, spec: RolloutSpec) -> None:
        self._do("rollback")
        self.weight = 0

    async def promote_fully(self, spec: RolloutSpec) -> None:
        self._do("promote_fully")
        self.weight = 100

    async def cleanup(self, spec: RolloutSpec) -> None:
        self._do("cleanup")

    def real_share(self) -> float:
        if self.mode == "nginx":
            return self.weight / 100.0
        return effective_weight(*replica_split(self.pods, self.weight)) / 100.0

    def weights(self) -> list[int]:
        return [arg for name, arg in self.calls if name == "set_weight"]


def traffic_of(traffic: MemoryTraffic, *, rps: float = 10.0, error_ratio: float = 0.0) -> Answer:
    """Prometheus's view of a service taking ``rps`` requests/s split as the actuator says."""

    def answer(query: str) -> float | None:
        share = traffic.real_share()
        rate = rps * (share if 'version="canary"' in query else 1.0 - share)
        window = float(re.search(r"\[(\d+)s\]", query).group(1)) if "[" in query else 60.0  # type: ignore[union-attr]
        if query.startswith("histogram_quantile"):
            return 0.2 if rate > 0 else None
        if query.startswith("sum(increase(") and 'status="error"' in query:
            return rate * window * error_ratio
        if query.startswith("sum(increase("):
            return rate * window
        if query.startswith("sum(rate("):
            return rate
        return 0.01  # the user check (queue depth, say)

    return answer


@pytest.fixture(scope="module")
def prom() -> Iterator[FakePrometheus]:
    server = FakePrometheus()
    yield server
    server.stop()


@pytest.fixture
async def elector(db_url: str) -> AsyncIterator[LeaderElector]:
    async with leading(db_url, ROLLOUTS_KEY, "rollouts") as e:
        yield e


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def traffic() -> MemoryTraffic:
    return MemoryTraffic()


@pytest.fixture
def service(db: Database, clock: FakeClock) -> RolloutService:
    return RolloutService(db, clock=clock.wall)


def controller(
    db: Database,
    elector: LeaderElector,
    traffic: TrafficActuator,
    clock: FakeClock,
    prom_url: str | None,
) -> RolloutController:
    async def actuators(spec: RolloutSpec) -> TrafficActuator:
        return traffic

    return RolloutController(
        db,
        elector,
        actuators,
        IncidentService(db, clock=clock.wall),
        prometheus=Prometheus(prom_url) if prom_url else None,
        interval_s=15.0,
        clock=clock.wall,
    )


def body(steps: str = "10,50,100", pauses: str | None = "1m", **kw: Any) -> RolloutCreate:
    return RolloutCreate(
        image="ghcr.io/acme/agent:v2",
        steps=steps,
        pauses=pauses,
        min_samples=50,
        analysis_interval_s=30,
        stable_soak_s=120,
        **kw,
    )


async def incidents(db: Database, rollout_id: str) -> int:
    async with db.acquire() as conn:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM incidents WHERE dedup_key = $1", f"rollout:{rollout_id}"
            )
        )


def kinds(detail: Any) -> list[str]:
    return [e.kind for e in detail.events]


async def test_good_canary_advances_through_every_step_and_completes(
    db: Database,
    elector: LeaderElector,
    clock: FakeClock,
    service: RolloutService,
    prom: FakePrometheus,
) -> None:
    traffic = MemoryTraffic(mode="replicas", pods=3)
    prom.down, prom.answer = False, traffic_of(traffic)
    ctl = controller(db, elector, traffic, clock, prom.url)
    started = await service.start(body(checks=[CheckIn(name="queue", query='q{v="{{version}}"}', success="result < 0.05")]), by="alice")  # fmt: skip
    assert started.phase == "progressing" and started.traffic == "auto" and started.steps == 3
    assert traffic.calls == []  # the service never talks to Kubernetes

    assert await ctl.tick() == 1
    assert traffic.calls[:2] == [("prepare", "ghcr.io/acme/agent:v2"), ("set_weight", 10)]
    now = await service.get(started.id)
    # 1 canary pod of 3 stable + 1: a "10 %" step is really 25 %, and the row says so.
    assert (now.traffic, now.weight, now.effective_weight) == ("replicas", 10, 25.0)
    assert now.split is not None and "really 25 %" in now.split
    assert now.remaining_pause_s == 60.0

    clock.advance(30)
    await ctl.tick()  # half-way: a pass never shortens a pause
    assert traffic.weights() == [10]
    clock.advance(31)
    await ctl.tick()
    assert traffic.weights() == [10, 50]
    assert any('q{v="canary"}' == q for q in prom.queries)  # the user check, on the canary
    clock.advance(61)
    await ctl.tick()
    assert traffic.weights() == [10, 50, 100]
    clock.advance(61)
    await ctl.tick()
    assert ("promote_fully", None) in traffic.calls
    assert (await service.get(started.id)).phase == "soaking"
    clock.advance(121)
    await ctl.tick()
    done = await service.get(started.id)
    assert done.phase == "completed" and traffic.calls[-1] == ("cleanup", None)
    assert done.last_analysis is not None and done.last_analysis["verdict"] == "pass"
    for kind in ("started", "action", "analysis", "step", "promoted", "completed"):
        assert kind in kinds(done)
    assert await ctl.tick() == 0  # finished and nothing pending: off the work list
    labels = {"target": "claude-agent-api", "phase": "completed"}
    assert REGISTRY.get_sample_value("claude_agent_rollout_phase", labels) == 1.0


async def test_bad_canary_rolls_back_at_once_with_exactly_one_incident(
    db: Database,
    elector: LeaderElector,
    clock: FakeClock,
    service: RolloutService,
    traffic: MemoryTraffic,
    prom: FakePrometheus,
) -> None:
    prom.down, prom.answer = False, traffic_of(traffic, error_ratio=0.5)
    ctl = controller(db, elector, traffic, clock, prom.url)
    started = await service.start(body(pauses="10m"), by=None)
    await ctl.tick()
    clock.advance(20)  # far from the end of the 10-minute step
    await ctl.tick()
    rolled = await service.get(started.id)
    assert rolled.phase == "rolled_back" and rolled.weight == 0
    assert rolled.pause_reason is not None and "error-rate" in rolled.pause_reason
    assert traffic.calls[-1] == ("rollback", None)
    assert await incidents(db, started.id) == 1
    for _ in range(3):
        clock.advance(15)
        await ctl.tick()
    assert await incidents(db, started.id) == 1
    assert [c for c in traffic.calls if c[0] == "rollback"] == [("rollback", None)]
    # A new rollout of the same target is allowed once the old one is finished.
    again = await service.start(body(), by=None)
    assert again.id != started.id


async def test_no_prometheus_extends_then_pauses_and_never_passes(
    db: Database,
    elector: LeaderElector,
    clock: FakeClock,
    service: RolloutService,
    traffic: MemoryTraffic,
    prom: FakePrometheus,
) -> None:
    prom.down = True
    ctl = controller(db, elector, traffic, clock, prom.url)
    started = await service.start(body(max_extensions=2), by=None)
    await ctl.tick()
    clock.advance(61)
    await ctl.tick()
    clock.advance(31)
    await ctl.tick()
    assert (await service.get(started.id)).phase == "progressing"  # extended twice
    clock.advance(31)
    await ctl.tick()
    paused = await service.get(started.id)
    assert paused.phase == "inconclusive" and paused.weight == 10
    assert paused.pause_reason is not None and "after 2 extension(s)" in paused.pause_reason
    assert traffic.weights() == [10]  # never advanced, never rolled back
    analyses = [e for e in paused.events if e.kind == "analysis"]
    assert analyses and all(e.data["verdict"] is None for e in analyses)
    assert "PrometheusUnavailable" in analyses[-1].data["error"]
    prom.down = False


async def test_promote_and_abort_are_applied_by_the_controller(
    db: Database,
    elector: LeaderElector,
    clock: FakeClock,
    service: RolloutService,
    traffic: MemoryTraffic,
    prom: FakePrometheus,
) -> None:
    prom.down, prom.answer = False, traffic_of(traffic)
    ctl = controller(db, elector, traffic, clock, prom.url)
    started = await service.start(body(steps="10,50,100", pauses="manual"), by="alice")
    await ctl.tick()
    assert (await service.get(started.id)).phase == "paused"
    promoted = await service.promote(started.id, full=False, by="bob")
    assert promoted.step_index == 1 and traffic.weights() == [10]  # pending, not applied yet
    await ctl.tick()
    assert traffic.weights() == [10, 50]
    aborted = await service.abort(started.id, reason="wrong image", by="bob")
    assert aborted.phase == "aborted"
    await ctl.tick()
    assert traffic.calls[-1] == ("rollback", None)
    assert await incidents(db, started.id) == 0  # a person decided: no incident
    with pytest.raises(InvalidState):
        await service.promote(started.id, full=True, by="bob")
    with pytest.raises(NotFound):
        await service.get("ro_nope")
    detail = await service.get(started.id)
    assert {"promoted", "aborted"} <= set(kinds(detail))
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT pending FROM rollouts WHERE id = $1", started.id) == []


async def test_second_live_rollout_of_a_target_is_a_conflict_and_bad_input_is_422(
    service: RolloutService,
) -> None:
    first = await service.start(body(), by=None)
    with pytest.raises(Conflict) as caught:
        await service.start(body(), by=None)
    assert caught.value.status == 409 and first.id in caught.value.detail
    other = await service.start(body(target="other-api"), by=None)
    page = await service.list(live_only=True)
    assert {r.id for r in page.items} == {first.id, other.id}
    with pytest.raises(ValidationFailed) as bad:
        await service.start(body(steps="10,50", target="third"), by=None)
    assert "steps" in bad.value.detail  # the last step must be 100 %
    with pytest.raises(ValidationFailed) as cond:
        bad_check = CheckIn(name="q", query="up", failure="result >>> 1")
        await service.start(body(target="third", checks=[bad_check]), by=None)
    assert "checks[0].failure" in cond.value.detail
    assert "kind: Rollout" in service.export_argo(first)


async def test_a_new_controller_continues_from_the_stored_step_and_pause(
    db: Database,
    elector: LeaderElector,
    clock: FakeClock,
    service: RolloutService,
    traffic: MemoryTraffic,
    prom: FakePrometheus,
) -> None:
    prom.down, prom.answer = False, traffic_of(traffic)
    first = controller(db, elector, traffic, clock, prom.url)
    started = await service.start(body(), by=None)
    await first.tick()
    clock.advance(61)
    traffic.failing.add("set_weight")  # decides step 2, then dies before Kubernetes hears it
    await first.tick()
    stuck = await service.get(started.id)
    assert stuck.step_index == 1 and traffic.weights() == [10]
    assert "error" in kinds(stuck)
    del first

    traffic.failing.clear()
    second = controller(db, elector, traffic, clock, prom.url)
    clock.advance(20)
    await second.tick()  # the pending weight, applied by the new controller
    assert traffic.weights() == [10, 50]
    again = await service.get(started.id)
    assert again.step_index == 1 and again.remaining_pause_s == pytest.approx(40.0)
    clock.advance(41)  # the pause counts from when step 2 was decided, not from the restart
    await second.tick()
    assert traffic.weights() == [10, 50, 100]


async def test_only_the_leader_acts(
    db: Database,
    db_url: str,
    elector: LeaderElector,
    clock: FakeClock,
    service: RolloutService,
    traffic: MemoryTraffic,
    prom: FakePrometheus,
) -> None:
    follower_elector = LeaderElector(db_url, key=ROLLOUTS_KEY, retry_s=0.2, role="rollouts")
    await follower_elector._step()
    try:
        assert not follower_elector.is_leader
        follower_traffic = MemoryTraffic()
        follower = controller(db, follower_elector, follower_traffic, clock, prom.url)
        await service.start(body(), by=None)
        assert await follower.tick() == 0
        assert follower_traffic.calls == []
        leader = controller(db, elector, traffic, clock, prom.url)
        assert await leader.tick() == 1 and traffic.weights() == [10]
    finally:
        await follower_elector.stop()


async def test_wiring_builds_the_controller_only_when_enabled(
    db: Database, data_dir: Any, elector: LeaderElector, traffic: MemoryTraffic
) -> None:
    off = load_settings(None, data_dir=data_dir)
    assert off.rollouts_enabled is False and off.rollouts_interval == 15.0
    service, ctl = build_rollouts(off, db, IncidentService(db))
    assert isinstance(service, RolloutService) and ctl is None

    async def actuators(spec: RolloutSpec) -> TrafficActuator:
        return traffic

    on = load_settings(None, data_dir=data_dir, rollouts_enabled=True, rollouts_interval="5s")
    _, ctl = build_rollouts(on, db, IncidentService(db), elector, actuators=actuators)
    assert ctl is not None and ctl.interval_s == 5.0 and ctl.prometheus is None
