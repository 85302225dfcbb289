"""Counters stay correct when more than one worker process runs."""

from __future__ import annotations

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


def test_request_counters_sum_to_the_runs_done_across_worker_processes(deployment: Deployment):
    deployment.start("serve")
    ports = [free_port(), free_port()]
    for port in ports:
        deployment.start("worker", QUARTERDECK_METRICS_PORT=str(port),
                         QUARTERDECK_SIMULATED_LATENCY="20ms", QUARTERDECK_SIMULATED_TURNS="2")
    client = httpx.Client(base_url=deployment.url, timeout=30)
    ids = [client.post("/v1/runs", json={"prompt": f"p{i}"}).json()["id"] for i in range(40)]
    for run_id in ids:
        assert client.get(f"/v1/runs/{run_id}/wait", params={"timeout": 60}).json()["status"] \
            == "succeeded"
    time.sleep(0.5)
    scraped = [httpx.get(f"http://127.0.0.1:{p}/metrics", timeout=10).text for p in ports]
    per_worker = [_counter(t, "claude_agent_requests_total", status="success") for t in scraped]
    assert sum(per_worker) == 40
    turns = sum(_counter(t, "claude_agent_turns_total") for t in scraped)
    assert turns == 80
