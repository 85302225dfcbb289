"""Counters stay correct when more than one worker process runs."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from tests.conftest import free_port
from tests.e2e.conftest import Deployment

pytestmark = pytest.mark.e2e


def _counter(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _submit(client: httpx.Client, prompt: str) -> str:
    return str(client.post("/v1/runs", json={"prompt": prompt}).json()["id"])


def _all_succeed(client: httpx.Client, ids: list[str], timeout: float = 60) -> None:
    for run_id in ids:
        run = client.get(f"/v1/runs/{run_id}/wait", params={"timeout": timeout}).json()
        assert run["status"] == "succeeded", run


def test_request_counters_sum_to_the_runs_done_across_worker_processes(deployment: Deployment):
    deployment.start("serve")
    ports = [free_port(), free_port()]
    for port in ports:
        deployment.start(
            "worker",
            QUARTERDECK_METRICS_PORT=str(port),
            QUARTERDECK_SIMULATED_LATENCY="20ms",
            QUARTERDECK_SIMULATED_TURNS="2",
        )
    client = httpx.Client(base_url=deployment.url, timeout=30)
    _all_succeed(client, [_submit(client, f"p{i}") for i in range(40)])
    time.sleep(0.5)
    scraped = [httpx.get(f"http://127.0.0.1:{p}/metrics", timeout=10).text for p in ports]
    per_worker = [_counter(t, "claude_agent_requests_total", status="success") for t in scraped]
    assert sum(per_worker) == 40
    turns = sum(_counter(t, "claude_agent_turns_total") for t in scraped)
    assert turns == 80


def _children(pid: int) -> list[int]:
    text = open(f"/proc/{pid}/task/{pid}/children").read()
    return [int(p) for p in text.split()]


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_for(predicate, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_up_with_two_worker_processes_shares_runs_restarts_a_dead_child_and_stops_it(
    deployment: Deployment,
):
    metrics = free_port()
    up = deployment.start(
        "up",
        QUARTERDECK_WORKER_PROCESSES="2",
        QUARTERDECK_METRICS_PORT=str(metrics),
        QUARTERDECK_WORKER_CONCURRENCY="4",
        QUARTERDECK_SIMULATED_LATENCY="50ms",
        QUARTERDECK_SIMULATED_TURNS="2",
    )
    child = _wait_for(lambda: _children(up.popen.pid))[0]
    _wait_for(lambda: _answers(f"http://127.0.0.1:{metrics + 1}/metrics"))  # the child is up
    client = httpx.Client(base_url=deployment.url, timeout=30)
    _all_succeed(client, [_submit(client, f"p{i}") for i in range(40)])
    time.sleep(0.5)
    # The child serves its own metrics on the next port; both processes ran some of the runs.
    scraped = [
        httpx.get(f"http://127.0.0.1:{p}/metrics", timeout=10).text for p in (metrics, metrics + 1)
    ]
    done = [_counter(t, "claude_agent_requests_total", status="success") for t in scraped]
    assert sum(done) == 40 and min(done) > 0, done

    # A child that dies is started again; the runs it held are not lost.
    ids = [_submit(client, f"q{i}") for i in range(20)]
    os.kill(child, signal.SIGKILL)
    replacement = _wait_for(lambda: [p for p in _children(up.popen.pid) if p != child])[0]
    _all_succeed(client, ids, timeout=90)

    # SIGTERM on the parent drains and stops the children too.
    assert up.stop() == 0
    assert (
        not os.path.exists(f"/proc/{replacement}")
        or "Z" in open(f"/proc/{replacement}/stat").read().split()[2]
    )
