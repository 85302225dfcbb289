"""A rollout judged by a real Prometheus (issue 20): a bad canary rolls back, a good one is
promoted.

Real processes: ``quarterdeck serve`` runs the rollout controller (leader-elected) against the
fake Kubernetes API server (the canary Deployment and the stable one's image live there), two
``quarterdeck worker`` processes play the stable and the canary pods, and Debian's
``prometheus`` scrapes both, labelling them ``version="stable"`` and ``version="canary"`` as the
ServiceMonitor's relabelling does from the pods' label. The canary's model calls fail (the
simulated provider's error injection), so its runs fail; the controller reads that from
Prometheus, rolls back within seconds (long before the step's pause ends) and opens one
incident. A canary restarted without errors then goes through every step and is promoted.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from quarterdeck.chaos.process import Process, http_ok
from tests.conftest import free_port
from tests.e2e.conftest import Deployment
from tests.support.fake_kubernetes import FakeKubernetes

pytestmark = pytest.mark.e2e

NS, TARGET = "ai-agents", "claude-agent-api"
LABELS = {"app": "claude-agent", "tier": "api"}
PAUSE_S = 40.0  # the first step's pause: a bad canary must roll back long before it ends
WORKER = {
    "QUARTERDECK_SIMULATED_TURNS": "1",
    "QUARTERDECK_SIMULATED_LATENCY": "0",
    "QUARTERDECK_RETRY_MAX_ATTEMPTS": "1",  # a failing call fails its run at once
    "QUARTERDECK_HEALTH_MONITOR_ENABLED": "false",
    "QUARTERDECK_DRAIN_TIMEOUT": "3s",
}


@pytest.fixture
def k8s() -> Iterator[FakeKubernetes]:
    server = FakeKubernetes().start()
    server.auto_roll = True  # the stable Deployment "rolls" its new image at once
    server.add_deployment(NS, TARGET, replicas=3, labels=LABELS)
    try:
        yield server
    finally:
        server.stop()


def test_a_bad_canary_rolls_back_early_and_a_good_one_is_promoted(
    deployment: Deployment, k8s: FakeKubernetes, tmp_path: Path
) -> None:
    prometheus = shutil.which("prometheus")
    assert prometheus, "`prometheus` is not installed; `make test` installs it"
    stable_port, canary_port, prom_port = free_port(), free_port(), free_port()
    prom_url = f"http://127.0.0.1:{prom_port}"
    _prometheus_config(tmp_path, stable_port, canary_port)

    deployment.start(
        "serve",
        QUARTERDECK_ROLLOUTS_ENABLED="true",
        QUARTERDECK_ROLLOUTS_INTERVAL="1s",
        QUARTERDECK_PROMETHEUS_URL=prom_url,
        QUARTERDECK_KUBERNETES_API_URL=k8s.base_url,
        QUARTERDECK_KUBERNETES_NAMESPACE=NS,
        QUARTERDECK_HEALTH_LEADER_RETRY="1s",
    )
    deployment.start("worker", **WORKER, QUARTERDECK_METRICS_PORT=str(stable_port))
    canary = deployment.start(
        "worker",
        **WORKER,
        QUARTERDECK_METRICS_PORT=str(canary_port),
        QUARTERDECK_SIMULATED_ERROR_RATE="1.0",
    )
    stop = threading.Event()
    with (
        Process(
            [
                prometheus,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            env=dict(os.environ),
            log=tmp_path / "prometheus.log",
            stop_timeout=30,
        ) as prom,
        httpx.Client(base_url=deployment.url, timeout=30) as client,
    ):
        prom.wait_ready(http_ok(f"{prom_url}/-/ready"), timeout=120, interval=0.5)
        load = threading.Thread(target=_submit_until, args=(client, stop), daemon=True)
        load.start()
        try:
            # 1. The bad canary: rolled back on the evidence, not at the end of the pause.
            bad = _start(client, "quarterdeck:bad")
            started = time.monotonic()
            rolled = _wait_phase(client, bad, {"rolled_back"}, timeout=PAUSE_S)
            took = time.monotonic() - started
            print(f"bad canary rolled back {took:.1f} s after the rollout started")
            assert rolled["weight"] == 0 and rolled["phase"] == "rolled_back", rolled
            analysis = rolled["last_analysis"]
            assert analysis and analysis["verdict"] == "fail", analysis
            error_rate = next(m for m in analysis["measurements"] if m["name"] == "error-rate")
            assert error_rate["verdict"] == "fail", error_rate
            # The canary's runs fail from its first call, Prometheus scrapes every second and the
            # controller judges every second: the evidence is there within seconds, and the
            # rollback follows within one 5 s analysis interval of it, not at the pause's end.
            assert took < PAUSE_S / 2, f"rolled back {took:.0f} s after the start"
            # The phase is stored first; its actions (scale the canary down, open the incident)
            # are carried out right after, as the controller's pending actions: wait for them.
            incidents = _wait_incidents(client, f"rollout:{bad}", timeout=15)
            assert k8s.replicas_of(NS, f"{TARGET}-canary") == 0, "the canary was not scaled down"
            mine = [i for i in incidents if i["dedup_key"] == f"rollout:{bad}"]
            assert len(mine) == 1 and mine[0]["occurrences"] == 1, [i["title"] for i in incidents]

            # 2. The same canary without errors: every step passes and it is promoted.
            canary.stop()
            deployment.start("worker", **WORKER, QUARTERDECK_METRICS_PORT=str(canary_port))
            good = _start(client, "quarterdeck:good", pause="15s")
            done = _wait_phase(client, good, {"completed", "rolled_back", "inconclusive"}, 150)
            assert done["phase"] == "completed", [
                (e["kind"], e["message"][:300])
                for e in client.get(f"/v1/rollouts/{good}").json()["events"]
            ]
            image = k8s.deployments[(NS, TARGET)]["spec"]["template"]["spec"]["containers"][0]
            assert image["image"] == "quarterdeck:good", "the stable Deployment was not promoted"
            assert (NS, f"{TARGET}-canary") not in k8s.deployments, "the canary was not removed"
            kinds = [e["kind"] for e in client.get(f"/v1/rollouts/{good}").json()["events"]]
            assert "rolled_back" not in kinds and "completed" in kinds, kinds
        finally:
            stop.set()
            load.join(10)


def _prometheus_config(tmp_path: Path, stable_port: int, canary_port: int) -> None:
    """Scrape the two workers as the ServiceMonitor would: job claude-agents, version label."""
    targets = [
        {"targets": [f"127.0.0.1:{stable_port}"], "labels": {"version": "stable"}},
        {"targets": [f"127.0.0.1:{canary_port}"], "labels": {"version": "canary"}},
    ]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "claude-agents", "metrics_path": "/metrics", "static_configs": targets}
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))


def _start(client: httpx.Client, image: str, pause: str = f"{PAUSE_S:g}s") -> str:
    body = {
        "image": image,
        "target": TARGET,
        "steps": "50,100",
        "pauses": pause,
        "traffic": "replicas",
        "analysis_interval_s": 5,
        "min_samples": 10,
        "max_extensions": 6,
        "stable_soak_s": 0,
        # Both workers take runs off one queue, so here the canary's share of the traffic is
        # whatever the queue gives it, not its weight: the throughput check (unit-tested with
        # weights that do split traffic) would judge the queue, not the version.
        "min_throughput_ratio": 0,
    }
    response = client.post("/v1/rollouts", json=body)
    assert response.status_code == 201, response.text
    rollout_id: str = response.json()["id"]
    return rollout_id


def _wait_phase(
    client: httpx.Client, rollout_id: str, phases: set[str], timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        rollout: dict[str, Any] = client.get(f"/v1/rollouts/{rollout_id}").json()
        if rollout["phase"] in phases:
            return rollout
        assert time.monotonic() < deadline, f"still {rollout['phase']}: {rollout}"
        time.sleep(0.5)


def _wait_incidents(client: httpx.Client, dedup_key: str, timeout: float) -> list[dict[str, Any]]:
    """The incidents once one with ``dedup_key`` is among them (or the last list, on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        items: list[dict[str, Any]] = client.get("/v1/incidents").json()["items"]
        if any(i["dedup_key"] == dedup_key for i in items) or time.monotonic() > deadline:
            return items
        time.sleep(0.25)


def _submit_until(client: httpx.Client, stop: threading.Event) -> None:
    """A steady stream of short runs, shared by the two workers through the queue."""
    while not stop.is_set():
        try:
            client.post("/v1/runs", json={"prompt": "rollout load"})
        except httpx.HTTPError:
            pass
        stop.wait(0.15)
