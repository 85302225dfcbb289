"""The part of Kubernetes that turns a Deployment's replica count into running worker processes.

There is no cluster here; the scaler writes ``spec.replicas`` through the scale subresource of
:class:`~tests.support.fake_kubernetes.FakeKubernetes`, and this controller does what the
ReplicaSet controller and the kubelet would: it starts a real ``quarterdeck worker`` process per
missing replica, and for a replica too many it picks a pod the way the ReplicaSet does (lowest
``controller.kubernetes.io/pod-deletion-cost`` first, then the newest) and sends it SIGTERM, so
the worker drains exactly as it would in a pod. Pods are registered in the fake API server (with
their annotations), and the Deployment's ready count follows the workers' readiness probes.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from quarterdeck.chaos.deploy import LocalDeployment, Replica
from tests.support.fake_kubernetes import FakeKubernetes

COST = "controller.kubernetes.io/pod-deletion-cost"


@dataclass
class Pod:
    name: str
    replica: Replica
    started: float
    terminating: float | None = None
    ready: bool = False


@dataclass(frozen=True)
class Sample:
    at: float
    desired: int
    pods: int  # started and not terminating
    ready: int


@dataclass
class FakeReplicaSet:
    k8s: FakeKubernetes
    deployment: LocalDeployment
    namespace: str
    name: str
    labels: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    period_s: float = 0.25
    pods: list[Pod] = field(default_factory=list)
    history: list[Sample] = field(default_factory=list)
    removed: list[Pod] = field(default_factory=list)  # pods that were asked to stop
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _count: int = 0

    def start(self) -> FakeReplicaSet:
        self._thread = threading.Thread(target=self._loop, name="fake-replicaset", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def serving(self) -> list[Pod]:
        return [p for p in self.pods if p.terminating is None]

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a hiccup must not end the controller
                self._reconcile()
            self._stop.wait(self.period_s)

    def _reconcile(self) -> None:
        want = self.k8s.replicas_of(self.namespace, self.name)
        serving = self.serving()
        for _ in range(want - len(serving)):
            self._create()
        if len(serving) > want:
            for pod in self._victims(serving, len(serving) - want):
                pod.terminating = time.monotonic()
                pod.replica.popen.send_signal(signal.SIGTERM)
                self.removed.append(pod)
        for pod in list(self.pods):
            if pod.terminating is not None and not pod.replica.alive:
                self.k8s.remove_pod(self.namespace, pod.name)
                self.pods.remove(pod)
            elif pod.terminating is None and not pod.ready:
                pod.ready = _probe(pod.replica)
        ready = sum(1 for p in self.serving() if p.ready)
        self.k8s.set_ready(self.namespace, self.name, ready)
        self.history.append(Sample(time.monotonic(), want, len(self.serving()), ready))

    def _create(self) -> None:
        self._count += 1
        name = f"{self.name}-{self._count}"
        replica = self.deployment.start("worker", wait=False, **self.env)
        self.pods.append(Pod(name, replica, time.monotonic()))
        self.k8s.add_pod(self.namespace, name, self.labels)

    def _victims(self, serving: list[Pod], n: int) -> list[Pod]:
        """The ReplicaSet's order among ready pods: lowest deletion cost, then the newest."""

        def rank(pod: Pod) -> tuple[int, int, float]:
            return (int(pod.ready), self._cost(pod), -pod.started)

        return sorted(serving, key=rank)[:n]

    def _cost(self, pod: Pod) -> int:
        obj: dict[str, Any] = self.k8s.pods.get((self.namespace, pod.name), {})
        value = obj.get("metadata", {}).get("annotations", {}).get(COST, "0")
        try:
            return int(value)
        except ValueError:
            return 0


def _probe(replica: Replica) -> bool:
    """The worker's readiness probe, as the kubelet asks it (the metrics port's ``/ready``)."""
    try:
        url = f"http://127.0.0.1:{replica.metrics_port}/ready"
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
