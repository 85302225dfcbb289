"""Leadership through a Kubernetes ``Lease`` (coordination.k8s.io/v1), for deployments where a
Postgres session lock does not fit (e.g. PgBouncer in transaction mode in front of Postgres).

The protocol is the one client-go's leader election uses: the holder writes ``renewTime`` every
``retry_s``; anyone may take a lease whose ``renewTime + leaseDurationSeconds`` has passed; every
write is a PUT carrying the ``resourceVersion`` read, so of two replicas racing for an expired
lease the API server accepts exactly one (the other gets 409 Conflict and stays a follower).

A leader that cannot renew steps down on its own once its lease could have expired, before anyone
else may take it, so two leaders never overlap (clocks are assumed roughly in sync, as for
client-go). With the defaults (15 s lease, 5 s retry) a killed leader is replaced within ~20 s.

:func:`decide` is the whole policy, pure and unit-tested with a fake clock; :class:`LeaseElector`
does the API calls (the official client is synchronous, so each call runs in a thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal, Protocol

import structlog

from quarterdeck.health.leader import LEADER

if TYPE_CHECKING:  # the client is imported where it is used: most processes never need it
    from kubernetes.client import V1Lease

log = structlog.get_logger(__name__)

Action = Literal["create", "renew", "take", "follow"]


@dataclass(frozen=True)
class LeaseView:
    holder: str | None
    duration_s: float
    renew_time: datetime | None
    transitions: int = 0


def decide(lease: LeaseView | None, me: str, now: datetime) -> Action:
    """What a replica should do, given the lease as read at ``now``."""
    if lease is None:
        return "create"
    if lease.holder == me:
        return "renew"
    if not lease.holder or lease.renew_time is None:
        return "take"
    if now >= lease.renew_time + timedelta(seconds=lease.duration_s):
        return "take"
    return "follow"


class LeaseApi(Protocol):
    """The three calls of ``kubernetes.client.CoordinationV1Api`` the elector makes."""

    def read_namespaced_lease(self, name: str, namespace: str) -> V1Lease: ...
    def create_namespaced_lease(self, namespace: str, body: V1Lease) -> object: ...
    def replace_namespaced_lease(self, name: str, namespace: str, body: V1Lease) -> object: ...


def default_identity() -> str:
    return f"{socket.gethostname()}_{os.getpid()}"


class LeaseElector:
    """Same interface as :class:`~quarterdeck.health.leader.LeaderElector`."""

    def __init__(
        self,
        api: LeaseApi,
        namespace: str,
        name: str = "quarterdeck-health-monitor",
        *,
        identity: str | None = None,
        duration_s: float = 15.0,
        retry_s: float = 5.0,
        role: str = "health_monitor",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.api = api
        self.namespace, self.name = namespace, name
        self.identity = identity or default_identity()
        self.duration_s, self.retry_s = duration_s, retry_s
        self.role = role
        self.clock = clock
        self._valid_until: datetime | None = None
        self._stopped = asyncio.Event()
        LEADER.labels(role).set(0)

    @property
    def is_leader(self) -> bool:
        return self._valid_until is not None and self.clock() < self._valid_until

    async def run(self) -> None:
        while not self._stopped.is_set():
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the API server is unreachable: keep what is still valid
                log.warning("lease.step_failed", lease=self.name, error=str(exc))
            LEADER.labels(self.role).set(1 if self.is_leader else 0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self.retry_s)

    async def stop(self) -> None:
        """Stop, and give the lease up so a successor need not wait for it to expire."""
        self._stopped.set()
        if self.is_leader:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._release)
        self._valid_until = None
        LEADER.labels(self.role).set(0)

    async def wait_until(self, leader: bool, timeout: float) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout
        while self.is_leader != leader:
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def step(self) -> Action:
        """Read the lease, decide, and write if the decision says so."""
        return await asyncio.to_thread(self._step_sync)

    # -- synchronous API calls (run in a thread) -------------------------------------------------
    def _step_sync(self) -> Action:
        from kubernetes.client.exceptions import ApiException

        now = self.clock()
        try:
            obj = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            obj = None
        view = None if obj is None else _view(obj)
        action = decide(view, self.identity, now)
        if action == "follow":
            if self._valid_until is not None:
                log.warning("lease.lost", lease=self.name, holder=view.holder if view else None)
            self._valid_until = None
            return action
        try:
            if action == "create":
                self.api.create_namespaced_lease(self.namespace, self._body(now, now, 0, None))
            else:
                assert obj is not None and view is not None
                spec, meta = obj.spec, obj.metadata
                acquired = spec.acquire_time if action == "renew" and spec is not None else now
                transitions = view.transitions + (1 if action == "take" else 0)
                version = meta.resource_version if meta is not None else None
                body = self._body(now, acquired, transitions, version)
                self.api.replace_namespaced_lease(self.name, self.namespace, body)
        except ApiException as exc:
            if exc.status != 409:  # 409: another replica wrote first; it leads, we follow
                raise
            self._valid_until = None
            return "follow"
        if self._valid_until is None:
            log.info("lease.acquired", lease=self.name, identity=self.identity, action=action)
        # Step down a little before anyone else could take the lease.
        self._valid_until = now + timedelta(seconds=self.duration_s * 0.8)
        return action

    def _release(self) -> None:
        obj = self.api.read_namespaced_lease(self.name, self.namespace)
        spec = obj.spec
        if spec is not None and spec.holder_identity == self.identity:
            spec.holder_identity = None
            spec.renew_time = None
            self.api.replace_namespaced_lease(self.name, self.namespace, obj)

    def _body(
        self, now: datetime, acquired: datetime | None, transitions: int, version: str | None
    ) -> V1Lease:
        from kubernetes import client

        return client.V1Lease(
            metadata=client.V1ObjectMeta(
                name=self.name, namespace=self.namespace, resource_version=version
            ),
            spec=client.V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=int(self.duration_s),
                acquire_time=acquired,
                renew_time=now,
                lease_transitions=transitions,
            ),
        )


def _view(obj: V1Lease) -> LeaseView:
    spec = obj.spec
    if spec is None:  # the API always sends one; without it nobody holds the lease
        return LeaseView(holder=None, duration_s=15.0, renew_time=None, transitions=0)
    return LeaseView(
        holder=spec.holder_identity,
        duration_s=float(spec.lease_duration_seconds or 15),
        renew_time=spec.renew_time,
        transitions=int(spec.lease_transitions or 0),
    )


def kubernetes_api(api_url: str | None = None) -> LeaseApi:
    """A CoordinationV1Api: ``api_url`` when given, else in-cluster config, else kubeconfig."""
    from kubernetes import client, config

    if api_url:
        configuration = client.Configuration()
        configuration.host = api_url
        return client.CoordinationV1Api(client.ApiClient(configuration))
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.CoordinationV1Api()


def pod_namespace(default: str = "default") -> str:
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    try:
        with open(path) as fh:
            return fh.read().strip() or default
    except OSError:
        return default
