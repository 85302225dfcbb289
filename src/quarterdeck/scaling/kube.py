"""The scaler's hands in ``kubernetes`` mode: the worker Deployment's scale subresource.

Why the scale subresource (``PATCH …/deployments/NAME/scale``) and not the Deployment: it is the
one field an autoscaler owns, the same endpoint the HPA and ``kubectl scale`` write, and RBAC can
grant it (``deployments/scale``) without granting the pod template, so the scaler's token cannot
change what the workers run.

Why :meth:`KubernetesScaleTarget.check_owner`: two writers of one replica count fight (the guide's
scaler against its own HPA; GitOps against an HPA). An HPA re-syncs every 15 s and overwrites
whatever we write, so the scaler refuses to act while any HPA (KEDA's ``keda-hpa-*`` included)
targets the Deployment, and names it.

Why :meth:`KubernetesScaleTarget.mark_busy`: on a scale-down the ReplicaSet picks which pods go,
and without a hint it may pick a pod in the middle of long runs. ``controller.kubernetes.io/
pod-deletion-cost`` (stable since 1.24) ranks pods: idle ones get ``0``, busy ones a cost that
grows with the runs on them, so idle pods go first. It is a hint for the ReplicaSet only (node
drains and evictions ignore it); a pod that is removed still drains (runs/worker.py).

The official client is synchronous, so every call runs in a thread, with a timeout (the client
has none by default, and a hung API server must not hang the scaler's loop). It is imported only
inside functions: most processes never scale anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import structlog

from quarterdeck.exceptions import ScalingConflict, ScalingError
from quarterdeck.kit import kube_calls
from quarterdeck.kit.kube_calls import api_message, call_in_thread

if TYPE_CHECKING:  # the client is imported where it is used: most processes never need it
    from kubernetes.client import AppsV1Api, AutoscalingV2Api, CoreV1Api

log = structlog.get_logger(__name__)

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
INT32_MAX = 2**31 - 1
COST_PER_RUN = 100
"""A busy pod costs ``runs * 100``: any busy pod outranks every idle one (``0``), a pod with more
runs outranks one with fewer, and the gap leaves an operator room for hints of their own
(``1``-``99``) that order idle pods without ever putting a busy pod first."""
REQUEST_TIMEOUT_S = 10.0

T = TypeVar("T")


@dataclass(frozen=True)
class ReplicaState:
    replicas: int
    """``spec.replicas`` of the scale subresource: what was last asked for."""
    ready: int | None
    """The Deployment's ``status.readyReplicas`` (0 when absent); None when it has no status."""


class ScaleTarget(Protocol):
    """What the scaler's loop acts on; :class:`KubernetesScaleTarget` is the real one."""

    name: str

    async def check_owner(self) -> None: ...
    async def read(self) -> ReplicaState: ...
    async def write(self, replicas: int) -> None: ...
    async def mark_busy(self, busy: Mapping[str, int]) -> int: ...


def deletion_cost(runs: int) -> int:
    """The pod-deletion-cost for a pod with ``runs`` runs on it (int32, as the API requires)."""
    return 0 if runs <= 0 else min(INT32_MAX, runs * COST_PER_RUN)


def hpas_targeting(hpas: list[Any], deployment: str) -> list[str]:
    """Names of the HPAs (``V2HorizontalPodAutoscaler``) whose target is ``deployment``."""
    names: list[str] = []
    for hpa in hpas:
        ref = hpa.spec.scale_target_ref if hpa.spec is not None else None
        if ref is not None and ref.kind == "Deployment" and ref.name == deployment:
            names.append(hpa.metadata.name)
    return names


class KubernetesScaleTarget:
    """A Deployment's replica count, read and written through the official client."""

    def __init__(
        self,
        apps: AppsV1Api,
        autoscaling: AutoscalingV2Api,
        core: CoreV1Api,
        namespace: str,
        deployment: str,
    ) -> None:
        self.apps, self.autoscaling, self.core = apps, autoscaling, core
        self.namespace, self.deployment = namespace, deployment
        self.name = f"{namespace}/{deployment}"

    async def check_owner(self) -> None:
        """Raise :class:`ScalingConflict` when an HPA already scales this Deployment."""
        hpas = await self._call(
            "list HorizontalPodAutoscalers",
            lambda: self.autoscaling.list_namespaced_horizontal_pod_autoscaler(
                self.namespace, _request_timeout=REQUEST_TIMEOUT_S
            ),
        )
        owners = hpas_targeting(list(hpas.items or []), self.deployment)
        if owners:
            raise ScalingConflict(
                f"HorizontalPodAutoscaler {self.namespace}/{owners[0]} already scales Deployment "
                f"{self.name}; two writers would fight over its replicas. Delete the HPA (or "
                "the KEDA ScaledObject that made it), or set QUARTERDECK_SCALER_MODE=metric to "
                "let it act on the scaler's metric instead.",
                extra={"hpa": owners},
            )

    async def read(self) -> ReplicaState:
        def both() -> tuple[Any, Any]:
            scale = self.apps.read_namespaced_deployment_scale(
                self.deployment, self.namespace, _request_timeout=REQUEST_TIMEOUT_S
            )
            deployment = self.apps.read_namespaced_deployment_status(
                self.deployment, self.namespace, _request_timeout=REQUEST_TIMEOUT_S
            )
            return scale, deployment

        scale, deployment = await self._call("read the replicas", both)
        replicas = int(scale.spec.replicas or 0) if scale.spec is not None else 0
        status = deployment.status
        ready = None if status is None else int(status.ready_replicas or 0)
        return ReplicaState(replicas=replicas, ready=ready)

    async def write(self, replicas: int) -> None:
        await self._call(
            f"scale to {replicas}",
            lambda: self.apps.patch_namespaced_deployment_scale(
                self.deployment,
                self.namespace,
                {"spec": {"replicas": replicas}},
                _request_timeout=REQUEST_TIMEOUT_S,
            ),
        )
        log.info("scaler.scaled", target=self.name, replicas=replicas)

    async def mark_busy(self, busy: Mapping[str, int]) -> int:
        """Set every pod's deletion cost from ``busy`` (pod name -> runs on it); return how many
        pods were patched. Pods whose cost is already right are left alone."""
        return await self._call("mark busy pods", lambda: self._mark_busy_sync(busy))

    # -- synchronous (in a thread) ---------------------------------------------------------------
    def _mark_busy_sync(self, busy: Mapping[str, int]) -> int:
        from kubernetes.client.exceptions import ApiException

        scale = self.apps.read_namespaced_deployment_scale(
            self.deployment, self.namespace, _request_timeout=REQUEST_TIMEOUT_S
        )
        selector = scale.status.selector if scale.status is not None else None
        if not selector:  # never annotate every pod of the namespace
            raise ScalingError(f"Deployment {self.name} reports no pod selector on its scale")
        pods = self.core.list_namespaced_pod(
            self.namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT_S
        )
        patched, failed = 0, []
        for pod in pods.items or []:
            meta = pod.metadata
            if meta is None or meta.name is None or meta.deletion_timestamp is not None:
                continue  # already going: its cost no longer matters
            want = str(deletion_cost(busy.get(meta.name, 0)))
            if (meta.annotations or {}).get(DELETION_COST) == want:
                continue
            body = {"metadata": {"annotations": {DELETION_COST: want}}}
            try:
                self.core.patch_namespaced_pod(
                    meta.name, self.namespace, body, _request_timeout=REQUEST_TIMEOUT_S
                )
            except ApiException as exc:
                if exc.status == 404:  # gone meanwhile: nothing to rank
                    continue
                failed.append(f"{meta.name}: {api_message(exc)}")
                continue
            patched += 1
        if failed:  # best effort per pod, but a refusal (RBAC, say) must be seen
            raise ScalingError(
                f"could not set {DELETION_COST} on {len(failed)} pod(s) of {self.name} "
                f"({patched} patched): " + "; ".join(failed)
            )
        return patched

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn`` in a thread; API and transport errors become :class:`ScalingError`."""
        return await call_in_thread(what, fn, ScalingError, f"on Deployment {self.name}")


def kubernetes_scale_target(
    api_url: str | None, namespace: str, deployment: str
) -> KubernetesScaleTarget:
    """The real target: ``api_url`` when given, else in-cluster config, else kubeconfig (the
    order of :func:`quarterdeck.health.lease.kubernetes_api`); one ApiClient for the three APIs."""
    from kubernetes import client

    api_client = kube_calls.api_client(api_url)
    return KubernetesScaleTarget(
        client.AppsV1Api(api_client),
        client.AutoscalingV2Api(api_client),
        client.CoreV1Api(api_client),
        namespace,
        deployment,
    )
