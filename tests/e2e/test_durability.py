"""End to end: `quarterdeck up` as a subprocess loses nothing when its worker is SIGKILLed."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.e2e.conftest import Deployment

pytestmark = pytest.mark.e2e
TERMINAL = {"succeeded", "failed", "cancelled", "timed_out", "max_turns", "budget_exceeded"}


def _all_runs(client: httpx.Client) -> list[dict[str, object]]:
    runs, cursor = [], None
    while True:
        params: dict[str, object] = {"limit": 100}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/runs", params=params).json()
        runs += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return runs


def _wait_all_terminal(client: httpx.Client, ids: list[str], timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = {r["id"]: r for r in _all_runs(client)}
        if all(runs[i]["status"] in TERMINAL for i in ids):
            return [runs[i] for i in ids]
        time.sleep(0.5)
    states = {i: runs[i]["status"] for i in ids}
    raise AssertionError(f"runs not terminal after {timeout}s: {states}")


def test_fifty_runs_survive_a_sigkilled_worker(deployment: Deployment):
    slow = {
        "QUARTERDECK_SIMULATED_LATENCY": "250ms",
        "QUARTERDECK_SIMULATED_TURNS": "4",
        "QUARTERDECK_WORKER_CONCURRENCY": "20",
    }
    first = deployment.start("up", **slow)
    client = httpx.Client(base_url=deployment.url, timeout=30)
    ids = []
    for i in range(50):
        r = client.post(
            "/v1/runs", json={"prompt": f"fix bug #{i}"}, headers={"Idempotency-Key": f"e2e-{i}"}
        )
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])

    # Kill the process mid-run: some runs have finished turns, none has finished.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        running = [r for r in _all_runs(client) if r["status"] == "running" and r["turns"] >= 1]
        if running:
            break
        time.sleep(0.1)
    assert running, "no run was mid-flight"
    first.kill()

    # Retried submissions after the crash are answered from Postgres by the next process.
    second = deployment.start("up", **slow)
    replay = client.post(
        "/v1/runs", json={"prompt": "fix bug #7"}, headers={"Idempotency-Key": "e2e-7"}
    )
    assert replay.json()["id"] == ids[7]

    finals = _wait_all_terminal(client, ids, timeout=120)
    assert [r["status"] for r in finals] == ["succeeded"] * 50
    assert len({r["id"] for r in _all_runs(client)}) == 50  # nothing lost, nothing duplicated
    resumed = [r for r in finals if r["attempts"] >= 2]
    assert resumed, "no run was resumed by the second process"

    url = client.get("/ready").json()  # still healthy after the takeover
    assert url["status"] == "ready"
    for run in finals:
        events = client.get(f"/v1/runs/{run['id']}/events").json()
        ids_in_order = [e["id"] for e in events]
        assert ids_in_order == sorted(ids_in_order)
        statuses = [e["data"]["status"] for e in events if e["type"] == "status"]
        assert statuses[0] == "queued" and statuses[-1] == "succeeded"
        assert statuses.count("succeeded") == 1
        turn_events = [e for e in events if e["type"] == "turn"]
        assert [e["turn"] for e in turn_events] == list(range(1, run["turns"] + 1))
        # Each run's cost and tokens equal the sum of its turns, billed once each.
        assert run["input_tokens"] == sum(e["data"]["usage"]["input_tokens"] for e in turn_events)
        assert run["output_tokens"] == sum(e["data"]["usage"]["output_tokens"] for e in turn_events)
        costs = [e["data"]["cost_usd"] for e in turn_events]
        if run["cost_usd"] is not None:
            assert run["cost_usd"] == pytest.approx(sum(costs))
    second.stop()


def test_sigterm_drains_then_releases_in_flight_runs(deployment: Deployment):
    slow = {"QUARTERDECK_SIMULATED_LATENCY": "30s", "QUARTERDECK_DRAIN_TIMEOUT": "2s"}
    first = deployment.start("up", **slow)
    client = httpx.Client(base_url=deployment.url, timeout=30)
    ids = [client.post("/v1/runs", json={"prompt": f"long {i}"}).json()["id"] for i in range(3)]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if all(client.get(f"/v1/runs/{i}").json()["status"] == "running" for i in ids):
            break
        time.sleep(0.1)
    first.popen.terminate()
    saw_not_ready = False
    while first.popen.poll() is None:
        try:
            saw_not_ready |= client.get("/ready").status_code == 503
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    assert first.popen.returncode == 0
    assert saw_not_ready, "/ready never reported 503 while draining"

    second = deployment.start("up", QUARTERDECK_SIMULATED_LATENCY="0")
    for run_id in ids:
        done = client.get(f"/v1/runs/{run_id}/wait", params={"timeout": 60}, timeout=90).json()
        assert done["status"] == "succeeded"
        events = client.get(f"/v1/runs/{run_id}/events").json()
        assert any(e["data"].get("reason") == "released by a draining worker" for e in events)
    assert second.stop() == 0
    # The last process to exit stops the embedded Postgres cleanly; its data stays.
    pgdata = deployment.root / "data" / "pg"
    assert not (pgdata / "postmaster.pid").exists()
    assert (pgdata / "PG_VERSION").exists()
