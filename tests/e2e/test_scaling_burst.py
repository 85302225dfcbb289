"""The scaler end to end (issue 19): a burst of runs raises the worker Deployment's replicas; when
the burst ends the pool shrinks only after the scale-down window; no run is lost.

Real processes: ``quarterdeck serve`` runs the scaler (leader-elected, mode ``kubernetes``) and
writes the scale subresource of the fake Kubernetes API server with the official client; a fake
ReplicaSet controller (``tests/support/fake_replicaset.py``) turns the replica count into real
``quarterdeck worker`` processes and removes surplus ones with SIGTERM, so a removed worker
drains (finishes or checkpoints and releases its runs) exactly as in a pod. A trickle of runs
keeps work in flight while the pool shrinks, so draining workers hold runs when they stop.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Deployment
from tests.support.fake_kubernetes import FakeKubernetes
from tests.support.fake_replicaset import FakeReplicaSet

pytestmark = pytest.mark.e2e

NS, NAME = "ai-agents", "claude-agent-worker"
LABELS = {"app": "claude-agent", "tier": "worker"}
DOWN_WINDOW_S = 15.0
INTERVAL_S = 1.0
MAX = 4
# Every process shares these: two runs per worker, runs of three 1.5 s turns.
COMMON = {
    "QUARTERDECK_WORKER_CONCURRENCY": "2",
    "QUARTERDECK_SIMULATED_LATENCY": "1.5s",
    "QUARTERDECK_SIMULATED_TURNS": "3",
    "QUARTERDECK_DRAIN_TIMEOUT": "2s",
}


@pytest.fixture
def k8s() -> Iterator[FakeKubernetes]:
    server = FakeKubernetes().start()
    server.add_deployment(NS, NAME, replicas=1, labels=LABELS)
    try:
        yield server
    finally:
        server.stop()


def test_a_burst_scales_out_and_the_pool_shrinks_only_after_the_window(
    deployment: Deployment, k8s: FakeKubernetes
) -> None:
    deployment.start(
        "serve",
        **COMMON,
        QUARTERDECK_SCALER_MODE="kubernetes",
        QUARTERDECK_KUBERNETES_API_URL=k8s.base_url,
        QUARTERDECK_KUBERNETES_NAMESPACE=NS,
        QUARTERDECK_SCALER_DEPLOYMENT=NAME,
        QUARTERDECK_SCALER_INTERVAL=f"{INTERVAL_S:g}s",
        QUARTERDECK_HEALTH_LEADER_RETRY="1s",
        QUARTERDECK_SCALER_MIN_REPLICAS="1",
        QUARTERDECK_SCALER_MAX_REPLICAS=str(MAX),
        QUARTERDECK_SCALER_TARGET_UTILIZATION="1.0",
        QUARTERDECK_SCALER_COOLDOWN="2s",
        QUARTERDECK_SCALER_SCALE_DOWN_STABILIZATION=f"{DOWN_WINDOW_S:g}s",
    )
    pods = FakeReplicaSet(
        k8s,
        deployment,
        NS,
        NAME,
        LABELS,
        env={**COMMON, "QUARTERDECK_HEALTH_MONITOR_ENABLED": "false"},
    ).start()
    client = httpx.Client(base_url=deployment.url, timeout=30)
    try:
        ids = [_submit(client, f"burst {i}") for i in range(16)]
        # A trickle while the pool grows and shrinks: work in flight on the workers removed.
        trickle_until = time.monotonic() + 40
        while time.monotonic() < trickle_until:
            ids.append(_submit(client, f"trickle {len(ids)}"))
            time.sleep(2.5)
        deadline = time.monotonic() + 120
        for run_id in ids:
            left = max(1.0, deadline - time.monotonic())
            run = client.get(f"/v1/runs/{run_id}/wait", params={"timeout": left}).json()
            assert run["status"] == "succeeded", run
        # Wait until the pool is back at its floor (or the window has passed twice over).
        settle = time.monotonic() + 3 * DOWN_WINDOW_S
        while k8s.replicas_of(NS, NAME) > 1 and time.monotonic() < settle:
            time.sleep(0.5)
        decisions = _decisions(client)
    finally:
        pods.stop()
        client.close()

    peak = max(s.desired for s in pods.history)
    assert peak == MAX, f"the burst should reach the maximum, peaked at {peak}"
    assert max(s.ready for s in pods.history) >= 2, "the new workers never became ready"

    ups = [d for d in decisions if d["direction"] == "up" and d["applied"] is not None]
    downs = [d for d in decisions if d["direction"] == "down" and d["applied"] is not None]
    assert ups, "no scale-up was written"
    assert downs, "the pool never shrank after the burst"
    first_down = downs[0]
    # The stabilization window, from the stored factors: no recommendation at or above the
    # count it shrank from was made in the window before the first scale-down.
    window_start = _t(first_down) - DOWN_WINDOW_S
    higher = [
        d
        for d in decisions
        if d["factors"].get("recommendation") is not None
        and d["factors"]["recommendation"] >= first_down["current"]
        and window_start < _t(d) < _t(first_down)
    ]
    assert not higher, f"scaled down within {DOWN_WINDOW_S}s of a higher need: {higher[:2]}"
    assert _t(first_down) - _t(ups[0]) >= DOWN_WINDOW_S
    # What was written is what the Deployment holds: the decisions were applied.
    assert decisions[-1]["applied"] in (None, k8s.replicas_of(NS, NAME))
    # Every run succeeded (asserted above), including those on the workers that drained.
    assert pods.removed, "no worker was ever removed"
    for pod in pods.removed:  # each drained and exits on its own, before any SIGKILL
        code = pod.replica.popen.wait(timeout=60)
        assert code == 0, pod.replica.log_tail()


def _submit(client: httpx.Client, prompt: str) -> str:
    response = client.post("/v1/runs", json={"prompt": prompt})
    assert response.status_code == 202, response.text
    run_id: str = response.json()["id"]
    return run_id


def _decisions(client: httpx.Client) -> list[dict[str, Any]]:
    """Every stored decision, oldest first."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 500}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/scaling/decisions", params=params).json()
        items += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return list(reversed(items))


def _t(decision: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(decision["at"]).timestamp()
