"""Health checks, auto-recovery and leader election against real Postgres, Redis and sockets.

Faults are real: a closed port for a stopped database, a killed ``redis-server``, an immutable
directory, a run whose heartbeat lies in the past. Notifications go to the local receivers of
:mod:`tests.support.receivers`; incidents use inline delivery so assertions are deterministic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from quarterdeck import metrics
from quarterdeck.chaos.messages_api import MessagesAPIServer
from quarterdeck.health import api as health_api
from quarterdeck.health.checks import (
    AgentResponsivenessCheck,
    DatabaseCheck,
    FilesystemCheck,
    RedisCheck,
    loop_lag_ms,
)
from quarterdeck.health.leader import LeaderElector
from quarterdeck.health.monitor import HealthMonitor
from quarterdeck.health.provider import ProviderCallWindow, ProviderCheck
from quarterdeck.health.recovery import (
    AgentRecovery,
    DatabaseRecovery,
    LoggingScaleRequester,
    ProviderRecovery,
    RecheckOnly,
    RedisRecovery,
)
from quarterdeck.incidents import (
    IncidentService,
    NotificationSettings,
    Notifier,
    Severity,
)
from quarterdeck.kit.clock import FakeClock
from quarterdeck.kit.ids import new_id
from quarterdeck.kit.wiring import services
from quarterdeck.resilience.breaker import BreakerConfig, Breakers
from quarterdeck.runs import queue
from quarterdeck.store import locks
from quarterdeck.store.pool import Database
from tests.conftest import eventually, free_port, world_readable_tmpdir
from tests.support.receivers import Receivers
from tests.support.redis_server import RedisServer, redis_server  # noqa: F401

# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
async def incidents(db: Database, receivers: Receivers) -> AsyncIterator[IncidentService]:
    """Slack takes triggers from medium up; the webhook only from critical, so a high incident
    that heals by itself reaches the webhook as an "auto-recovery completed" FYI."""
    ns = NotificationSettings.model_validate(
        {
            "slack_webhook_url": receivers.url("slack"),
            "webhook_url": receivers.url("webhook"),
            "min_severity": "medium",
            "retry_backoff_s": [0.01],
            "rate_limits": {},
            "request_timeout_s": 5.0,
        }
    )
    notifier = Notifier(ns, db)
    notifier.channels["webhook"].min_severity = Severity.critical
    service = IncidentService(db, notifier, inline_notifications=True)
    yield service
    await service.aclose()


@pytest.fixture
def closed_db_url() -> str:
    return f"postgresql://quarterdeck:x@127.0.0.1:{free_port()}/quarterdeck"


@pytest.fixture
async def stopped_db(closed_db_url: str) -> AsyncIterator[Database]:
    """A pool for a server that is not there (min_size=0 opens without connecting)."""
    database = Database(closed_db_url, min_size=0, max_size=1)
    await database.open()
    yield database
    await database.close()


@contextlib.contextmanager
def unwritable_dir() -> Iterator[Path]:
    """A directory nobody can create files in, root included (``chattr +i`` when root)."""
    path = world_readable_tmpdir("qd-test-ro-")
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.skip("running as root without chattr: cannot make a directory unwritable")
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"chattr +i unsupported here: {done.stderr.decode().strip()}")
        try:
            yield path
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=False)
            shutil.rmtree(path, ignore_errors=True)
    else:
        path.chmod(0o500)
        try:
            yield path
        finally:
            path.chmod(0o700)
            shutil.rmtree(path, ignore_errors=True)


async def make_run(
    db: Database,
    *,
    heartbeat_age_s: float,
    started_age_s: float | None = None,
    timeout_s: float | None = None,
) -> tuple[str, int]:
    """A ``running`` run with a queued job, its heartbeat ``heartbeat_age_s`` in the past."""
    run_id = new_id("run")
    params = {"timeout_s": timeout_s} if timeout_s else {}
    async with db.transaction() as conn:
        job_id = await queue.enqueue_run(conn, run_id)
        await conn.execute(
            """
            INSERT INTO runs (id, agent_type, operation, prompt, model, status, attempts,
                              started_at, heartbeat_at, job_id, worker_id, params)
            VALUES ($1, 'coder', 'task', 'p', 'm', 'running', 1,
                    now() - make_interval(secs => $2), now() - make_interval(secs => $3),
                    $4, 'gone-worker', $5)
            """,
            run_id,
            started_age_s if started_age_s is not None else heartbeat_age_s,
            heartbeat_age_s,
            job_id,
            params,
        )
    return run_id, job_id


async def run_row(db: Database, run_id: str) -> dict[str, Any]:
    async with db.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM runs WHERE id = $1", run_id)
    assert row is not None
    return dict(row)


async def job_exists(db: Database, job_id: int) -> bool:
    async with db.acquire() as conn:
        return bool(
            await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pgqueuer WHERE id = $1)", job_id)
        )


def webhook_events(receivers: Receivers, incident_id: str) -> list[dict[str, Any]]:
    return [r.json for r in receivers.delivered("webhook") if incident_id in json.dumps(r.json)]


# --- leader election ---------------------------------------------------------------------------
async def test_exactly_one_leader_and_hand_over_when_its_session_dies(db_url: str) -> None:
    key = 0x51D_7E57
    a = LeaderElector(db_url, key, retry_s=0.2, role="test")
    b = LeaderElector(db_url, key, retry_s=0.2, role="test")
    tasks = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
    try:
        await eventually(lambda: a.is_leader or b.is_leader, timeout=10)
        await asyncio.sleep(0.6)  # several retry rounds: the other must still be a follower
        assert [a.is_leader, b.is_leader].count(True) == 1
        leader = a if a.is_leader else b
        conn = await asyncpg.connect(db_url)
        try:
            held = await conn.fetch(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = $1",
                key,
            )
            assert [r["pid"] for r in held] == [leader.backend_pid]
            # The leader's session dies (what a crashed replica looks like to Postgres).
            killed = leader.backend_pid
            await conn.execute("SELECT pg_terminate_backend($1)", killed)
        finally:
            await conn.close()
        # Leadership moves to a live session: either replica may win the race for the lock
        # (the old one reconnects too), but never both, and never on the dead session.
        await eventually(
            lambda: (
                [a.is_leader, b.is_leader].count(True) == 1
                and next(e for e in (a, b) if e.is_leader).backend_pid != killed
            ),
            timeout=15,
        )
        await asyncio.sleep(0.6)  # several retry rounds: still exactly one leader
        assert [a.is_leader, b.is_leader].count(True) == 1
        leader, follower = (a, b) if a.is_leader else (b, a)
        # A clean stop releases at once and the other takes over.
        await leader.stop()
        assert await follower.wait_until(True, timeout=10)
    finally:
        for e in (a, b):
            await e.stop()
        for t in tasks:
            await asyncio.wait_for(t, timeout=5)


async def test_only_the_leader_monitor_runs_checks(
    db_url: str, db: Database, incidents: IncidentService, make_settings: Any
) -> None:
    settings = make_settings()
    electors = [LeaderElector(db_url, 0x51D_7E58, retry_s=0.2) for _ in range(2)]
    monitors = [
        HealthMonitor(
            settings, db, incidents, elector=e, checks=[DatabaseCheck(db)], interval_s=0.2
        )
        for e in electors
    ]
    tasks = [asyncio.create_task(x.run()) for x in (*electors, *monitors)]
    try:
        await eventually(lambda: any(m.last for m in monitors), timeout=10)
        await asyncio.sleep(0.5)
        ran = [bool(m.last) for m in monitors]
        assert ran.count(True) == 1, ran
        assert monitors[ran.index(True)].is_leader
    finally:
        for e in electors:
            await e.stop()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --- checks ------------------------------------------------------------------------------------
async def test_database_check_and_recovery(db: Database, stopped_db: Database) -> None:
    ok = await DatabaseCheck(db).check()
    assert ok.healthy and ok.name == "database" and ok.latency_ms >= 0
    down = await DatabaseCheck(stopped_db, timeout_s=3).check()
    assert not down.healthy and "unavailable" in down.reason.lower()
    recovery = await DatabaseRecovery(stopped_db, DatabaseCheck(stopped_db)).recover(down, 10)
    assert not recovery.success and "recycled the connection pool" in recovery.message
    healed = await DatabaseRecovery(db, DatabaseCheck(db)).recover(down, 10)
    assert healed.success and healed.recheck is not None and healed.recheck.healthy


async def test_redis_check_and_recovery(redis_server: RedisServer) -> None:  # noqa: F811
    assert (await RedisCheck(None).check()).reason == "not configured"
    check = RedisCheck(redis_server.url, timeout_s=0.5)
    try:
        assert (await check.check()).healthy
        redis_server.kill()
        down = await check.check()
        assert not down.healthy
        breakers = Breakers()
        patient = await RedisRecovery(check, breakers, give_up_after_s=300).recover(down, 10)
        assert patient.success, "within the grace period the in-process fallback carries on"
        assert "in-process state" in patient.message
        failed = await RedisRecovery(check, breakers, give_up_after_s=300).recover(down, 301)
        assert not failed.success
        redis_server.start()
        healed = await RedisRecovery(check, breakers).recover(down, 400)
        assert healed.success and healed.message.startswith("reconnected")
    finally:
        await check.aclose()


async def test_filesystem_check(data_dir: Path) -> None:
    ok = await FilesystemCheck(data_dir, min_free_bytes=1, min_free_ratio=0).check()
    assert ok.healthy and ok.details["writable"] and ok.details["free_bytes"] > 0
    leftovers = await asyncio.to_thread(lambda: list(data_dir.glob(".qd-health-*")))
    assert not leftovers, "the probe file is removed"
    full = await FilesystemCheck(data_dir, min_free_bytes=2**62).check()
    assert not full.healthy and "free on" in full.reason
    with unwritable_dir() as path:
        ro = await FilesystemCheck(path, min_free_bytes=1, min_free_ratio=0).check()
        assert not ro.healthy and "not writable" in ro.reason and not ro.details["writable"]
        missing = await FilesystemCheck(path / "nope", min_free_bytes=1).check()
        assert not missing.healthy


async def test_agent_responsiveness_requeues_lapsed_runs_and_ends_overdue_ones(
    db: Database,
) -> None:
    check = AgentResponsivenessCheck(db, stale_after_s=30, default_timeout_s=3600)
    assert (await check.check()).healthy
    lapsed, old_job = await make_run(db, heartbeat_age_s=120)
    fresh, _ = await make_run(db, heartbeat_age_s=1)
    overdue, _ = await make_run(db, heartbeat_age_s=1, started_age_s=7200, timeout_s=600)
    failing = await check.check()
    assert not failing.healthy
    assert failing.details["lapsed_runs"] == [lapsed]
    assert failing.details["overdue_runs"] == [overdue]
    scaler = LoggingScaleRequester()
    result = await AgentRecovery(check, scaler).recover(failing, 0)
    assert result.success, result.message
    assert result.details["requeued"] == [lapsed] and result.details["timed_out"] == [overdue]
    row = await run_row(db, lapsed)
    assert row["status"] == "queued" and row["worker_id"] is None
    assert row["job_id"] != old_job and await job_exists(db, row["job_id"])
    assert not await job_exists(db, old_job), "the run is never owned by two jobs"
    assert (await run_row(db, fresh))["status"] == "running", "a live run is left alone"
    ended = await run_row(db, overdue)
    assert ended["status"] == "timed_out" and "600s" in ended["error"]
    assert len(scaler.requests) == 1 and scaler.requests[0]["reason"] == "agent_responsiveness"
    async with db.acquire() as conn:
        reason = await conn.fetchval(
            "SELECT data->>'reason' FROM run_events WHERE run_id = $1 ORDER BY id DESC LIMIT 1",
            lapsed,
        )
    assert "requeued by the health monitor" in reason
    assert (await check.check()).healthy


@contextlib.asynccontextmanager
async def leaders_hold_their_locks(db_url: str) -> AsyncIterator[None]:
    """Every leader election's advisory lock held by another session, as in a deployment where
    each role has a leader (the health monitor's, the scaler's, the rollouts', the reports')."""
    conn = await asyncpg.connect(db_url)
    try:
        for key in (locks.HEALTH_MONITOR, locks.SCALER, locks.ROLLOUTS, locks.REPORTS):
            assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", key)
        yield
    finally:
        await conn.close()


async def test_runs_are_repaired_while_every_role_has_a_leader(db: Database, db_url: str) -> None:
    """The repairs' own locks once shared numbers with two elections, so with the health
    monitor's and the scaler's leaders holding theirs, no orphan or lapsed run was requeued."""
    assert len(set(locks.ALL.values())) == len(locks.ALL), locks.ALL
    check = AgentResponsivenessCheck(db, stale_after_s=30, default_timeout_s=3600)
    lapsed, _ = await make_run(db, heartbeat_age_s=120)
    orphan, orphan_job = await make_run(db, heartbeat_age_s=120)
    async with db.transaction() as conn:
        await conn.execute(
            "UPDATE runs SET status = 'queued', started_at = NULL, worker_id = NULL, attempts = 0"
            " WHERE id = $1",
            orphan,
        )
        await conn.execute("DELETE FROM pgqueuer WHERE id = $1", orphan_job)
    async with leaders_hold_their_locks(db_url):
        result = await AgentRecovery(check, LoggingScaleRequester()).recover(await check.check(), 0)
    # the lapsed run (running, silent) and the orphan (queued, its job gone) each by its repair
    assert sorted(result.details["requeued"]) == sorted([lapsed, orphan]), result.details
    for run_id in (lapsed, orphan):
        row = await run_row(db, run_id)
        assert row["status"] == "queued" and await job_exists(db, row["job_id"])


async def test_event_loop_lag_is_measured(db: Database) -> None:
    loop = asyncio.get_running_loop()
    assert await loop_lag_ms() < 250
    loop.call_later(0.02, time.sleep, 0.3)  # a callback hogging the loop mid-sample
    assert await loop_lag_ms() >= 250
    check = AgentResponsivenessCheck(db, max_loop_lag_ms=100)
    loop.call_later(0.02, time.sleep, 0.3)
    result = await check.check()
    assert not result.healthy and "event loop lag" in result.reason


async def test_provider_check_is_passive_and_probes_only_the_free_endpoint() -> None:
    window = ProviderCallWindow()
    simulated = ProviderCheck("simulated", window=window, min_calls=5)
    ok = await simulated.check()
    assert ok.healthy and "skipped" in ok.details["probe"]
    for _ in range(4):
        window.observe(False, 503)
    window.observe(True, 200)
    window.observe(False, 400)  # our fault, not the provider's
    window.observe(False, 429)
    bad = await simulated.check()
    assert not bad.healthy and "4 of 7 provider calls failed" in bad.reason
    assert bad.details["traffic"]["rate_limited"] == 1

    server = MessagesAPIServer()
    server.start()
    try:
        check = ProviderCheck(
            "anthropic", api_key="sk-test", base_url=server.base_url, window=ProviderCallWindow()
        )
        result = await check.check()
        assert result.healthy, result.reason
        assert result.details["probe"]["status"] == 200
        again = await check.check()
        assert again.details["probe"]["cached"], "probed at most once per probe_interval_s"
        assert [(r.method, r.path) for r in server.requests] == [("GET", "/v1/models")]
        assert server.requests[0].headers["x-api-key"] == "sk-test"
    finally:
        server.stop()
    unreachable = ProviderCheck(
        "anthropic", api_key="k", base_url=f"http://127.0.0.1:{free_port()}", window=window
    )
    window.clear()
    down = await unreachable.check()
    assert not down.healthy and "GET /v1/models" in down.reason


async def test_provider_check_reports_open_breakers() -> None:
    breakers = Breakers(config=BreakerConfig(failure_threshold=1))
    await breakers.record_failure("anthropic:claude-x")
    result = await ProviderCheck(
        "anthropic", breakers=breakers, window=ProviderCallWindow()
    ).check()
    assert not result.healthy and "circuit open for anthropic:claude-x" in result.reason
    assert result.details["breakers"] == {"anthropic:claude-x": "open"}


# --- the monitor -------------------------------------------------------------------------------
async def incident_row(db: Database, key: str) -> dict[str, Any] | None:
    async with db.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT * FROM incidents WHERE dedup_key = $1 ORDER BY opened_at DESC LIMIT 1", key
        )
    return dict(row) if row else None


async def test_monitor_opens_an_incident_and_auto_resolves_it(
    db: Database, incidents: IncidentService, receivers: Receivers, make_settings: Any
) -> None:
    check = AgentResponsivenessCheck(db, stale_after_s=30)
    monitor = HealthMonitor(
        make_settings(),
        db,
        incidents,
        checks=[check],
        strategies={check.name: AgentRecovery(check, LoggingScaleRequester())},
    )
    run_id, _ = await make_run(db, heartbeat_age_s=300)
    await monitor.tick()
    assert monitor.last[check.name].healthy, "the recovery's re-check replaced the failure"
    inc = await incident_row(db, "health:agent_responsiveness")
    assert inc is not None
    assert inc["source"] == "health_check" and inc["severity"] == "high"
    assert inc["status"] == "resolved" and inc["resolved_by"] == "auto"
    assert inc["escalated_at"] is None
    details = inc["details"]
    assert details["first_failed_at"] and details["recovery_time_s"] >= 0
    assert (
        details["last_recovery"]["success"] and "requeued 1" in details["last_recovery"]["message"]
    )
    assert (await run_row(db, run_id))["status"] == "queued"
    assert (
        metrics.REGISTRY.get_sample_value(
            "claude_agent_health_check_healthy", {"check": "agent_responsiveness"}
        )
        == 1
    )

    await monitor.tick()  # healthy again: nothing more is sent
    await monitor.tick()
    events = webhook_events(receivers, inc["id"])
    assert [e["event"] for e in events] == ["info"], events
    assert "Auto-recovery completed" in events[0]["text"]
    slack = [r.json for r in receivers.delivered("slack") if inc["id"] in json.dumps(r.json)]
    assert len(slack) == 2, "slack had the trigger, then the all-clear"


async def test_a_dead_primary_with_a_serving_fallback_resolves_as_degraded_without_flapping(
    db: Database, incidents: IncidentService, receivers: Receivers, make_settings: Any
) -> None:
    clock = FakeClock(1_000.0)
    breakers = Breakers(config=BreakerConfig(failure_threshold=1, open_for_s=60), clock=clock.now)
    check = ProviderCheck(
        "anthropic",
        breakers=breakers,
        window=ProviderCallWindow(),
        fallbacks={"claude-dead-t": ["claude-alive-t"]},
    )
    monitor = HealthMonitor(
        make_settings(),
        db,
        incidents,
        checks=[check],
        strategies={check.name: ProviderRecovery(check, breakers)},
    )

    async def fail(model: str) -> None:
        await breakers.allow(f"anthropic:{model}")
        await breakers.record_failure(f"anthropic:{model}")

    async def count() -> int:
        async with db.acquire() as conn:
            n = await conn.fetchval(
                "SELECT count(*) FROM incidents WHERE dedup_key = 'health:anthropic_api'"
            )
        return int(n)

    await fail("claude-dead-t")
    await monitor.tick()  # detected, then accepted as degraded: resolved in the same tick
    inc = await incident_row(db, "health:anthropic_api")
    assert inc is not None and inc["status"] == "resolved" and inc["resolved_by"] == "auto"
    assert "circuit open for anthropic:claude-dead-t" in inc["description"]
    note = inc["resolution_note"]
    assert note.startswith("anthropic_api serving degraded after: "), note
    assert "claude-dead-t circuit open; fallback claude-alive-t serving" in note
    assert "CircuitBreakerOpen" in note
    assert inc["details"]["last_recovery"]["details"]["degraded"] == {
        "claude-dead-t": "claude-alive-t"
    }
    assert monitor.last[check.name].healthy
    assert monitor.last[check.name].details["degraded"] == {"claude-dead-t": "claude-alive-t"}

    for _ in range(3):  # the primary stays dead through half-open probes: no new incident
        clock.advance(60)
        await monitor.tick()
        await fail("claude-dead-t")
        await monitor.tick()
    assert await count() == 1
    assert [e["event"] for e in webhook_events(receivers, inc["id"])] == ["info"]
    slack = [r.json for r in receivers.delivered("slack") if inc["id"] in json.dumps(r.json)]
    assert len(slack) == 2, "slack had the trigger, then the all-clear, once each"

    await fail("claude-alive-t")  # now nothing serves: a new incident, which stays open
    await monitor.tick()
    await monitor.tick()
    assert await count() == 2
    second = await incident_row(db, "health:anthropic_api")
    assert second is not None and second["id"] != inc["id"] and second["status"] == "open"


async def test_monitor_escalates_when_recovery_fails_then_resolves(
    db: Database,
    stopped_db: Database,
    incidents: IncidentService,
    receivers: Receivers,
    make_settings: Any,
) -> None:
    check = DatabaseCheck(stopped_db, timeout_s=2)
    monitor = HealthMonitor(
        make_settings(health_escalate_after_failed_recoveries=2),
        db,
        incidents,
        checks=[check],
        strategies={check.name: DatabaseRecovery(stopped_db, check)},
    )
    await monitor.tick()
    inc = await incident_row(db, "health:database")
    assert inc is not None and inc["status"] == "open" and inc["severity"] == "critical"
    assert inc["escalated_at"] is None, "one failed recovery is not yet a reason to page"
    assert [e["event"] for e in webhook_events(receivers, inc["id"])] == ["trigger"]
    await monitor.tick()
    inc = await incident_row(db, "health:database")
    assert inc is not None and inc["escalated_at"] is not None
    assert not inc["details"]["last_recovery"]["success"]
    await monitor.tick()  # still failing: same incident, escalated once
    again = await incident_row(db, "health:database")
    assert again is not None and again["id"] == inc["id"]
    assert again["details"]["consecutive_failures"] == 3
    kinds = [e["event"] for e in webhook_events(receivers, inc["id"])]
    assert kinds == ["trigger", "escalation"], kinds

    # The database comes back (the check now points at the live one): resolved by auto.
    monitor.checks = [DatabaseCheck(db)]
    await monitor.tick()
    done = await incident_row(db, "health:database")
    assert done is not None and done["id"] == inc["id"] and done["resolved_by"] == "auto"
    assert done["details"]["recovery_time_s"] > 0
    assert [e["event"] for e in webhook_events(receivers, inc["id"])][-1] == "resolve"


async def test_a_new_leader_resolves_what_the_old_one_opened(
    db: Database,
    incidents: IncidentService,
    make_settings: Any,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    check = RedisCheck(redis_server.url, timeout_s=0.5)
    first = HealthMonitor(
        make_settings(),
        db,
        incidents,
        checks=[check],
        strategies={check.name: RedisRecovery(check, give_up_after_s=300)},
    )
    try:
        redis_server.kill()
        await first.tick()
        inc = await incident_row(db, "health:redis")
        assert inc is not None and inc["status"] == "open" and inc["severity"] == "medium"
        assert inc["escalated_at"] is None, "the in-process fallback is working: no page yet"
        redis_server.start()
        successor = HealthMonitor(make_settings(), db, incidents, checks=[check], strategies={})
        await successor.tick()
        done = await incident_row(db, "health:redis")
        assert done is not None and done["id"] == inc["id"] and done["resolved_by"] == "auto"
    finally:
        await check.aclose()


async def test_filesystem_failure_escalates(
    db: Database, incidents: IncidentService, make_settings: Any
) -> None:
    with unwritable_dir() as path:
        check = FilesystemCheck(path, min_free_bytes=1, min_free_ratio=0)
        monitor = HealthMonitor(
            make_settings(health_escalate_after_failed_recoveries=1),
            db,
            incidents,
            checks=[check],
            strategies={check.name: RecheckOnly(check)},
        )
        await monitor.tick()
    inc = await incident_row(db, "health:filesystem")
    assert inc is not None and inc["escalated_at"] is not None


async def test_health_checks_endpoint(
    db: Database, incidents: IncidentService, make_settings: Any
) -> None:
    breakers = Breakers()
    await breakers.record_success("anthropic:claude-x")
    monitor = HealthMonitor(make_settings(), db, incidents, breakers=breakers)
    assert [c.name for c in monitor.checks] == [
        "anthropic_api",
        "database",
        "redis",
        "filesystem",
        "agent_responsiveness",
    ]
    await monitor.tick()
    app = FastAPI()
    services(app).add(HealthMonitor, monitor)
    app.include_router(health_api.router)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://qd"
    ) as client:
        body = (await client.get("/v1/health/checks")).json()
    assert body["leader"] is True
    assert body["checks"]["database"]["healthy"] is True
    assert body["checks"]["redis"]["reason"] == "not configured"
    assert body["breakers"] == {"anthropic:claude-x": "closed"}
    await monitor.aclose()
