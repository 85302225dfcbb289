"""The rollout's hands in Kubernetes: a canary Deployment beside the stable one, and traffic.

What exists during a rollout of Deployment ``T`` (``claude-agent-api``):

- ``T-canary``: a copy of ``T``'s spec with the new image in ``T``'s *first* container (the one
  named like it, ``quarterdeck-api``; sidecars keep their images) and the pod label
  ``rollouts.quarterdeck.dev/version: canary`` on its pods *and* its selector.
- nginx mode only: Service ``T-canary`` (the stable Service's ports, its selector plus
  ``version=canary``) and Ingress ``T-canary`` (the stable Ingress's rules for the stable
  Service, pointed at ``T-canary``, with ingress-nginx's canary annotations). The stable Service
  gets ``version=stable`` added to its selector while the rollout runs, else it would also send
  the primary Ingress's share to canary pods and the canary would get more than its weight.

Why the selectors are safe although they overlap. A Deployment's selector is immutable in
apps/v1, so ``T``'s stays ``{app, tier}``, which also matches the canary's pods. The canary's
selector ``{app, tier, version=canary}`` never matches ``T``'s pods (labelled ``version=stable``,
and refused here if they were labelled ``canary``), so the canary never counts or adopts them.
The other direction is harmless because controllers adopt only orphans: the canary's
ReplicaSets and pods carry a controllerRef to ``T-canary`` (and their own ``pod-template-hash``),
so ``T``'s controller leaves them alone. What does see both is anything selecting ``{app,
tier}``: the stable Service (which, in replicas mode, is exactly how traffic follows the pod
counts), a PodDisruptionBudget and topology spreading (both fine: the canary is extra capacity).

Why the stable side is never scaled down: see :mod:`.traffic` (rollback is then only taking
traffic and pods from the canary). Promotion patches ``T``'s image and lets ``T``'s own rolling
update replace its pods, so the stable object GitOps knows stays the one that serves; the image
it had is kept in an annotation, so a failure during the soak that follows puts it back.

Blue-green (nginx only: a switch needs a router) keeps both sides at full size: ``T-canary``
(green) gets as many pods as ``T`` (blue) from the first step on, so every step, the switch to
100 % and a rollback are only ingress weights, never a wait for pods. A first step at 0 % is the
preview: green runs at full size behind the ``T-canary`` Service with no user traffic. Full
promotion sends all traffic to green and leaves blue untouched for the soak (a rollback then is
instant: blue still runs the old image); only after the soak does blue get the new image, and
once it has rolled out, traffic returns to it and green is removed.

The official client is synchronous: every call runs in a thread with a timeout, and API and
transport errors become :class:`RolloutError` (as in :mod:`quarterdeck.scaling.kube`). The
blocking reads and writes of the objects are in :mod:`.kube_sync` (the base class
:class:`~quarterdeck.rollouts.kube_sync.CanaryObjects`); here the order of the steps and the waits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

import structlog

from quarterdeck.exceptions import RolloutError
from quarterdeck.kit import kube_calls
from quarterdeck.kit.kube_calls import call_in_thread
from quarterdeck.rollouts.kube_objects import (
    backend_services,
    canary_name,
    is_nginx,
    rolled_out,
    selects,
)

# Re-exported: the synchronous object operations and their constants live in kube_sync.
from quarterdeck.rollouts.kube_sync import PINNED as PINNED
from quarterdeck.rollouts.kube_sync import PREVIOUS_IMAGE as PREVIOUS_IMAGE
from quarterdeck.rollouts.kube_sync import REQUEST_TIMEOUT_S as REQUEST_TIMEOUT_S
from quarterdeck.rollouts.kube_sync import CanaryObjects
from quarterdeck.rollouts.kube_sync import Mode as Mode
from quarterdeck.rollouts.spec import RolloutSpec
from quarterdeck.rollouts.traffic import describe_split, nginx_canary_annotations, replica_split

log = structlog.get_logger(__name__)

T = TypeVar("T")


class KubernetesTraffic(CanaryObjects):
    """:class:`TrafficActuator` over the official client; see the module docstring."""

    # -- the actuator ----------------------------------------------------------------------
    async def prepare(self, spec: RolloutSpec) -> None:
        await self._call("prepare the canary", lambda: self._prepare(spec))
        log.info("rollout.prepared", target=spec.target, mode=self.mode, image=spec.image)

    async def set_weight(self, spec: RolloutSpec, weight: int) -> str:
        total = await self._call("read the stable replicas", lambda: self._replicas(spec.target))
        canary = replica_split(total, weight)[0]
        if spec.strategy == "blue-green":  # green at full size from the preview on
            canary = total
        if self.mode == "nginx":  # pods first, then traffic: never weight onto no pod
            await self._scale(spec, max(1, canary))
            await self._weight(spec, weight)
        else:
            await self._scale(spec, canary)
        described = describe_split(self.mode, weight, total)
        log.info("rollout.weight", target=spec.target, weight=weight, split=described)
        return described

    async def rollback(self, spec: RolloutSpec) -> None:
        if self.mode == "nginx":  # traffic away before the pods go
            await self._weight(spec, 0)
        await self._scale(spec, 0)
        if spec.strategy != "blue-green":  # blue-green's stable side was never touched
            await self._call("restore the stable image", lambda: self._restore(spec))
        log.warning("rollout.rolled_back", target=spec.target)

    async def promote_fully(self, spec: RolloutSpec) -> None:
        if spec.strategy == "blue-green":  # the switch: all traffic to green, blue kept as it is
            total = await self._call(
                "read the stable replicas", lambda: self._replicas(spec.target)
            )
            await self._scale(spec, max(1, total))
            await self._weight(spec, 100)
            log.info("rollout.switched", target=spec.target, image=spec.image)
            return
        await self._roll_stable(spec, keep_previous=True)
        if self.mode == "nginx":
            await self._weight(spec, 0)
        await self._scale(spec, 0)
        log.info("rollout.promoted", target=spec.target, image=spec.image)

    async def _roll_stable(self, spec: RolloutSpec, *, keep_previous: bool) -> None:
        """Give the stable Deployment the new image and wait until it has rolled out (the
        canary keeps serving meanwhile)."""

        def patch_image() -> None:
            stable = self._read_deployment(spec.target)
            first = stable["spec"]["template"]["spec"]["containers"][0]
            previous = (
                first.get("image") if keep_previous and first.get("image") != spec.image else None
            )
            self._patch_image(spec.target, first["name"], spec.image, annotation=previous)

        await self._call("set the stable image", patch_image)
        deadline = time.monotonic() + self.promote_timeout_s
        while True:
            stable = await self._call(
                "read the stable rollout", lambda: self._read_deployment(spec.target)
            )
            if rolled_out(stable):
                break
            if time.monotonic() >= deadline:
                status = stable.get("status") or {}
                raise RolloutError(
                    f"Deployment {self.namespace}/{spec.target} did not roll out {spec.image} "
                    f"within {self.promote_timeout_s:.0f}s (updated "
                    f"{status.get('updatedReplicas', 0)}, ready {status.get('readyReplicas', 0)} "
                    f"of {stable['spec'].get('replicas')}); the canary keeps its traffic"
                )
            await asyncio.sleep(self.poll_s)

    async def cleanup(self, spec: RolloutSpec) -> None:
        if spec.strategy == "blue-green":  # after the soak: blue gets the image, then the traffic
            await self._roll_stable(spec, keep_previous=False)
            await self._weight(spec, 0)
            await self._scale(spec, 0)
        await self._call("remove the canary", lambda: self._cleanup(spec))
        if spec.strategy != "blue-green":
            await self._call("forget the previous image", lambda: self._forget_previous(spec))

    # -- one call each -----------------------------------------------------------------------
    async def _scale(self, spec: RolloutSpec, replicas: int) -> None:
        await self._call(
            f"scale the canary to {replicas}",
            lambda: self.apps.patch_namespaced_deployment(
                canary_name(spec.target),
                self.namespace,
                {"spec": {"replicas": replicas}},
                _request_timeout=REQUEST_TIMEOUT_S,
            ),
        )

    async def _weight(self, spec: RolloutSpec, weight: int) -> None:
        body = {"metadata": {"annotations": nginx_canary_annotations(weight)}}
        await self._call(
            f"set canary-weight {weight}",
            lambda: self.networking.patch_namespaced_ingress(
                canary_name(spec.target), self.namespace, body, _request_timeout=REQUEST_TIMEOUT_S
            ),
        )

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn`` in a thread; API and transport errors become :class:`RolloutError`."""
        return await call_in_thread(what, fn, RolloutError, f"in {self.namespace}")


async def kubernetes_traffic(
    api_url: str | None, namespace: str, spec: RolloutSpec, *, ingress: str | None = None
) -> KubernetesTraffic:
    """The actuator for ``spec``, its traffic mode resolved.

    ``auto`` is nginx when the stable Ingress exists and has class nginx, else replicas. The
    stable Ingress is ``ingress`` when named, else the first (by name) whose backend is a Service
    selecting the target's pods; an explicit ``nginx`` without one is an error, not a silent
    replicas rollout.
    """
    from kubernetes import client

    api_client = kube_calls.api_client(api_url)
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    networking = client.NetworkingV1Api(api_client)
    probe = KubernetesTraffic(apps, core, networking, namespace, "replicas")
    target = await probe._call("read the target", lambda: probe._read_deployment(spec.target))
    blue_green = spec.strategy == "blue-green"
    if spec.traffic == "replicas" and not blue_green:
        return probe

    def find() -> tuple[str | None, str | None]:
        labels = (target["spec"]["template"].get("metadata") or {}).get("labels") or {}
        mine = [
            s["metadata"]["name"]
            for s in probe._listed(probe.core.list_namespaced_service)
            if selects((s.get("spec") or {}).get("selector"), labels)
        ]
        for body in probe._listed(probe.networking.list_namespaced_ingress):
            if ingress is not None and body["metadata"]["name"] != ingress:
                continue
            hits = [s for s in mine if s in backend_services(body)]
            if hits and is_nginx(body):
                return hits[0], body["metadata"]["name"]
        return None, None

    service, name = await probe._call("find the stable Ingress", find)
    if blue_green and (service is None or name is None or spec.traffic == "replicas"):
        raise RolloutError(
            f"a blue-green rollout of {spec.target} needs an nginx Ingress in {namespace} in "
            "front of it: both sides run at full size, so without a router the new side would "
            "take half the traffic at once (use --strategy canary to shift by replicas)"
        )
    if service is None or name is None:
        if spec.traffic == "nginx":
            raise RolloutError(
                f"no nginx Ingress {ingress or ''} in {namespace} routes to a Service of "
                f"Deployment {spec.target}: cannot split traffic by nginx"
            )
        return probe
    return KubernetesTraffic(
        apps, core, networking, namespace, "nginx", service=service, ingress=name
    )
