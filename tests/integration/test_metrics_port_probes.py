"""The probes a worker pod gets on its metrics port (it serves no API).

A real metrics listener (``start_metrics_server``) with the token on: ``/health`` and ``/ready``
answer without it, ``/metrics`` still needs it; ``/health`` fails once the event loop's heartbeat
is older than the limit (a stuck loop, while the listener's own thread still answers), ``/ready``
fails before migrations and while draining. The heartbeat runs on a fake clock.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from quarterdeck.chaos.process import free_port
from quarterdeck.config import load_settings
from quarterdeck.health.heartbeat import STALE_AFTER_S, LoopHeartbeat, probe
from quarterdeck.kit.clock import FakeClock
from quarterdeck.server import start_metrics_server

TOKEN = "metrics-token-for-the-probe-test-0123456789"


@dataclass
class State:
    migrated: bool = True
    draining: bool = False


def test_probe_decisions() -> None:
    assert probe("/health", loop_age_s=1.0, migrated=False, draining=True)[0] == 200
    assert probe("/health", loop_age_s=STALE_AFTER_S + 0.1, migrated=True, draining=False)[0] == 503
    assert probe("/ready", loop_age_s=1.0, migrated=True, draining=False) == (
        200,
        {
            "status": "ready",
            "checks": {
                "event_loop": {"ok": True, "heartbeat_age_s": 1.0},
                "migrations": {"ok": True},
                "draining": {"ok": True},
            },
        },
    )
    assert probe("/ready", loop_age_s=1.0, migrated=False, draining=False)[0] == 503
    assert probe("/ready", loop_age_s=1.0, migrated=True, draining=True)[0] == 503
    assert probe("/ready", loop_age_s=99.0, migrated=True, draining=False)[0] == 503


def test_metrics_port_answers_probes_without_the_token(tmp_path: Path) -> None:
    clock = FakeClock(100.0)
    heartbeat = LoopHeartbeat(clock=clock.now)
    state = State(migrated=False)
    port = free_port()
    server = start_metrics_server(
        load_settings(None, data_dir=tmp_path, metrics_port=port, metrics_token=TOKEN),
        (heartbeat, state),
    )
    assert server is not None
    base = f"http://127.0.0.1:{port}"
    try:
        assert httpx.get(f"{base}/metrics").status_code == 401, "metrics still need the token"
        assert httpx.get(f"{base}/health").status_code == 200
        starting = httpx.get(f"{base}/ready")
        assert (
            starting.status_code == 503 and starting.json()["checks"]["migrations"]["ok"] is False
        )

        state.migrated = True
        assert httpx.get(f"{base}/ready").json()["status"] == "ready"

        clock.advance(STALE_AFTER_S + 1)  # the loop stopped stamping: stuck
        stuck = httpx.get(f"{base}/health")
        assert stuck.status_code == 503 and stuck.json()["status"] == "unhealthy"
        assert httpx.get(f"{base}/ready").status_code == 503
        heartbeat.beat()  # the loop runs again
        assert httpx.get(f"{base}/health").status_code == 200

        state.draining = True
        draining = httpx.get(f"{base}/ready")
        assert draining.status_code == 503 and draining.json()["checks"]["draining"]["ok"] is False
        assert httpx.get(f"{base}/health").status_code == 200, "draining is not dead"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.asyncio
async def test_the_heartbeat_follows_the_loop() -> None:
    heartbeat = LoopHeartbeat(interval_s=0.01)
    task = asyncio.create_task(heartbeat.run())
    try:
        await asyncio.sleep(0.05)
        assert heartbeat.age() < 0.5
    finally:
        task.cancel()
    stamped = heartbeat.last
    await asyncio.sleep(0.05)
    assert heartbeat.last == stamped and heartbeat.age() >= 0.04
