"""The chaos suite: each production fault, with real Postgres, Redis and the SDK on the wire.

Each test runs one scenario of :mod:`quarterdeck.chaos` against a fresh local deployment (two
``quarterdeck up`` replicas and a ``quarterdeck worker`` on one embedded Postgres, a real
``redis-server``, the fault-injectable Messages API) with short timings (``fast``), and asserts
what the issue demands: every run terminal, none lost, no turn billed twice, the expected incident
opened and resolved with one notification per kind at a local webhook receiver, and metrics and
breakers that agree with what happened. Detection and recovery times are measured and printed,
never asserted: they depend on the machine's load.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from quarterdeck.chaos import SCENARIOS, Result, Runner
from quarterdeck.chaos.measure import TERMINAL
from quarterdeck.chaos.messages_api import Notification
from tests.support.receivers import Receivers
from tests.support.redis_server import redis_server_binary

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.chaos,
    pytest.mark.skipif(redis_server_binary() is None, reason="redis-server is not installed"),
]
RUNS = 60


@pytest.fixture(scope="module")
def receivers() -> Iterator[Receivers]:
    rec = Receivers()
    rec.start()
    yield rec
    rec.stop()


@pytest.fixture(scope="module")
def runner(receivers: Receivers) -> Iterator[Runner]:
    def received() -> list[Notification]:
        out = []
        for r in receivers.requests("webhook", ok_only=True):
            body = r.json
            incident = body.get("incident") or {}
            out.append(
                Notification(
                    body["event"],
                    incident["id"],
                    incident["service"],
                    int(body["delivery_id"]),
                    r.at,
                )
            )
        return out

    chaos = Runner(runs=RUNS, fast=True, notifications=(receivers.url("webhook"), received))
    yield chaos
    chaos.close()


def _check(result: Result, expect_incident: str | None) -> None:
    print(f"\n{result.scenario}: {result.to_dict()}")  # the measured figures, for the report
    assert result.submitted == RUNS
    assert sum(result.outcomes.values()) == RUNS, result.outcomes
    assert set(result.outcomes) <= TERMINAL, result.outcomes
    assert not result.lost, result.lost
    assert not result.duplicated, result.duplicated
    for name, ok in result.checks.items():
        assert ok, f"{name} failed: {result.to_dict()}"
    assert result.checks["no notification delivered twice"]
    assert result.checks["outcome counters match runs"]
    if expect_incident is not None:
        assert result.checks[f"{expect_incident} incident opened"]
        assert result.checks[f"{expect_incident} incident resolved"]
        mine = [i for i in result.incidents if i["service"] == expect_incident]
        for incident in mine:
            kinds = result.notifications.get(incident["id"], {})
            assert kinds.get("trigger") == 1, kinds
            assert kinds.get("resolve") == 1, kinds


def test_provider_429_and_529_then_recovery(runner: Runner) -> None:
    result = runner.run(SCENARIOS["provider-errors"])
    _check(result, "anthropic_api")


def test_primary_model_down_fallback_serves(runner: Runner) -> None:
    result = runner.run(SCENARIOS["primary-down"])
    _check(result, "anthropic_api")
    assert result.observed["primary_breaker_peak"] == 2  # claude_agent_circuit_state: open
    assert result.observed["fallbacks_counted"] > 0


def test_redis_killed_then_restarted(runner: Runner) -> None:
    _check(runner.run(SCENARIOS["redis-kill"]), "redis")


def test_postgres_restarted(runner: Runner) -> None:
    _check(runner.run(SCENARIOS["postgres-restart"]), "database")


def test_worker_sigkilled(runner: Runner) -> None:
    result = runner.run(SCENARIOS["worker-kill"])
    _check(result, None)
    assert result.detection_s is None  # handled by pgqueuer re-pick, not an incident


def test_leader_replica_sigkilled(runner: Runner) -> None:
    result = runner.run(SCENARIOS["leader-kill"])
    _check(result, None)
    assert result.checks["new leader elected"]
