"""The two Kubernetes Deployments' commands, as real processes (issue 15).

``quarterdeck serve`` (the API Deployment) queues runs and starts none; ``quarterdeck worker``
(the worker Deployment) runs them, opens no API port, and answers its probes on the metrics port
without the metrics token. Together they finish every run.
"""

from __future__ import annotations

import time

import httpx
import pytest

from quarterdeck.chaos.process import port_open
from tests.conftest import free_port
from tests.e2e.conftest import Deployment

pytestmark = pytest.mark.e2e
TOKEN = "metrics-token-for-the-split-test-0123456789"


def test_serve_runs_no_run_and_worker_serves_no_api(deployment: Deployment) -> None:
    deployment.start("serve")
    client = httpx.Client(base_url=deployment.url, timeout=30)
    ids = [client.post("/v1/runs", json={"prompt": f"p{i}"}).json()["id"] for i in range(3)]
    time.sleep(3.0)  # longer than a worker takes to pick up a run (dequeue timeout 2 s)
    for run_id in ids:
        assert client.get(f"/v1/runs/{run_id}").json()["status"] == "queued", "serve ran it"

    http_port, metrics_port = free_port(), free_port()
    worker = deployment.start(
        "worker",
        wait=False,
        QUARTERDECK_HTTP_PORT=str(http_port),
        QUARTERDECK_METRICS_PORT=str(metrics_port),
        QUARTERDECK_METRICS_TOKEN=TOKEN,
        QUARTERDECK_SIMULATED_TURNS="2",
    )
    probes = f"http://127.0.0.1:{metrics_port}"
    deadline = time.monotonic() + 90
    while True:  # the worker's readiness probe, as the kubelet asks it: no token
        try:
            if httpx.get(f"{probes}/ready", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert worker.alive, worker.log_tail()
        assert time.monotonic() < deadline, worker.log_tail()
        time.sleep(0.2)
    assert httpx.get(f"{probes}/health", timeout=5).status_code == 200
    assert httpx.get(f"{probes}/metrics", timeout=5).status_code == 401
    for run_id in ids:
        run = client.get(f"/v1/runs/{run_id}/wait", params={"timeout": 60}, timeout=90).json()
        assert run["status"] == "succeeded", run
    assert not port_open(http_port)(), "a worker opens no API port"
