"""The synchronous half of the rollout's Kubernetes actuator: what each step does to the objects.

Separate from :mod:`quarterdeck.rollouts.kube` because it is a different concern: here are the
reads and writes of the canary's Deployment, Service and Ingress and of the stable ones (create
or replace the canary, pin and unpin the stable Service's selector, patch and restore the stable
image, delete in traffic-first order), each a blocking call of the official client, meant to run
in a thread. ``kube.py`` keeps the actuator itself: the order of the steps, the waits, the
weights and the choice of traffic mode. :class:`~quarterdeck.rollouts.kube.KubernetesTraffic`
is this class plus that; nothing builds this one alone. The constants are re-exported there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import structlog

from quarterdeck.exceptions import RolloutError
from quarterdeck.rollouts.kube_objects import (
    canary_deployment,
    canary_ingress,
    canary_name,
    canary_service,
)
from quarterdeck.rollouts.queries import POD_VERSION_LABEL
from quarterdeck.rollouts.spec import RolloutSpec

if TYPE_CHECKING:
    from kubernetes.client import AppsV1Api, CoreV1Api, NetworkingV1Api

log = structlog.get_logger(__name__)

REQUEST_TIMEOUT_S = 10.0
PINNED = "rollouts.quarterdeck.dev/pinned-selector"
"""On the stable Service while we added ``version=stable`` to its selector, so cleanup removes
only what it added."""
PREVIOUS_IMAGE = "rollouts.quarterdeck.dev/previous-image"
"""On the stable Deployment from a canary's full promotion until its cleanup: the image it had,
which a failure during the soak restores."""
Mode = Literal["nginx", "replicas"]


class CanaryObjects:
    """The objects of one target's rollout, read and written synchronously (in a thread)."""

    def __init__(
        self,
        apps: AppsV1Api,
        core: CoreV1Api,
        networking: NetworkingV1Api,
        namespace: str,
        mode: Mode,
        *,
        service: str | None = None,
        ingress: str | None = None,
        promote_timeout_s: float = 600.0,
        poll_s: float = 2.0,
    ) -> None:
        if mode == "nginx" and not (service and ingress):
            raise ValueError("nginx mode needs the stable Service and Ingress")
        # Any: the client's stubs want its model classes; we send and read plain JSON.
        self.apps: Any = apps
        self.core: Any = core
        self.networking: Any = networking
        self.namespace, self.mode = namespace, mode
        self.service: str = service or ""
        self.ingress: str = ingress or ""
        self.promote_timeout_s, self.poll_s = promote_timeout_s, poll_s

    def _restore(self, spec: RolloutSpec) -> None:
        """After a canary's full promotion (during the soak) the stable Deployment runs the new
        image: put back the one it had."""
        stable = self._read_deployment(spec.target)
        previous = (stable["metadata"].get("annotations") or {}).get(PREVIOUS_IMAGE)
        first = stable["spec"]["template"]["spec"]["containers"][0]
        if previous and first.get("image") == spec.image:
            self._patch_image(spec.target, first["name"], previous, annotation=None)
            log.warning("rollout.stable_image_restored", target=spec.target, image=previous)

    def _patch_image(
        self, name: str, container: str, image: str, *, annotation: str | None
    ) -> None:
        body = {
            "metadata": {"annotations": {PREVIOUS_IMAGE: annotation}},
            "spec": {"template": {"spec": {"containers": [{"name": container, "image": image}]}}},
        }
        self.apps.patch_namespaced_deployment(
            name, self.namespace, body, _request_timeout=REQUEST_TIMEOUT_S
        )

    def _forget_previous(self, spec: RolloutSpec) -> None:
        body = {"metadata": {"annotations": {PREVIOUS_IMAGE: None}}}
        self.apps.patch_namespaced_deployment(
            spec.target, self.namespace, body, _request_timeout=REQUEST_TIMEOUT_S
        )

    # -- synchronous (in a thread) ---------------------------------------------------------
    def _json(self, obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = self.apps.api_client.sanitize_for_serialization(obj)
        return out

    def _read_deployment(self, name: str) -> dict[str, Any]:
        return self._json(
            self.apps.read_namespaced_deployment(
                name, self.namespace, _request_timeout=REQUEST_TIMEOUT_S
            )
        )

    def _replicas(self, name: str) -> int:
        return int(self._read_deployment(name)["spec"].get("replicas", 1))

    def _listed(self, fn: Callable[..., Any]) -> list[dict[str, Any]]:
        """A namespaced list call's items as JSON, sorted by name (deterministic choices)."""
        found = self._json(fn(self.namespace, _request_timeout=REQUEST_TIMEOUT_S))
        return sorted(found.get("items") or [], key=lambda i: str(i["metadata"]["name"]))

    def _stable_service(self) -> dict[str, Any]:
        for item in self._listed(self.core.list_namespaced_service):
            if item["metadata"]["name"] == self.service:
                return item
        raise RolloutError(f"Service {self.namespace}/{self.service} not found")

    def _stable_ingress(self) -> dict[str, Any]:
        for item in self._listed(self.networking.list_namespaced_ingress):
            if item["metadata"]["name"] == self.ingress:
                return item
        raise RolloutError(f"Ingress {self.namespace}/{self.ingress} not found")

    def _prepare(self, spec: RolloutSpec) -> None:
        from kubernetes.client.exceptions import ApiException

        stable = self._read_deployment(spec.target)
        body = canary_deployment(stable, spec.image)  # refuses a template labelled canary
        labels = (stable["spec"]["template"].get("metadata") or {}).get("labels") or {}
        if self.mode == "nginx" and labels.get(POD_VERSION_LABEL) != "stable":
            # The stable Service is pinned to version=stable below: without the label on the
            # stable pods it would select none and the primary Ingress would have no endpoint.
            raise RolloutError(
                f"Deployment {self.namespace}/{spec.target}'s pod template lacks the label "
                f"{POD_VERSION_LABEL}: stable (deploy/kubernetes/base sets it); add it and let "
                "the Deployment roll out before an nginx rollout"
            )
        name, t = body["metadata"]["name"], REQUEST_TIMEOUT_S
        try:
            self.apps.create_namespaced_deployment(self.namespace, body, _request_timeout=t)
        except ApiException as exc:
            if exc.status != 409:
                raise
            current = self._read_deployment(name)  # a canary left over: replace its spec
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            self.apps.replace_namespaced_deployment(name, self.namespace, body, _request_timeout=t)
        if self.mode != "nginx":
            return
        service = self._stable_service()
        self._create_or_patch(
            self.core.create_namespaced_service,
            self.core.patch_namespaced_service,
            canary_service(service, spec.target),
        )
        ingress = canary_ingress(self._stable_ingress(), service["metadata"]["name"], spec.target)
        self._create_or_patch(
            self.networking.create_namespaced_ingress,
            self.networking.patch_namespaced_ingress,
            ingress,
        )
        selector = service["spec"]["selector"]
        if POD_VERSION_LABEL not in selector:  # the primary Ingress: stable pods only
            pin = {
                "metadata": {"annotations": {PINNED: "true"}},
                "spec": {"selector": {POD_VERSION_LABEL: "stable"}},
            }
            self.core.patch_namespaced_service(
                self.service, self.namespace, pin, _request_timeout=t
            )

    def _create_or_patch(
        self, create: Callable[..., Any], patch: Callable[..., Any], body: dict[str, Any]
    ) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            create(self.namespace, body, _request_timeout=REQUEST_TIMEOUT_S)
        except ApiException as exc:
            if exc.status != 409:
                raise
            patch(
                body["metadata"]["name"], self.namespace, body, _request_timeout=REQUEST_TIMEOUT_S
            )

    def _cleanup(self, spec: RolloutSpec) -> None:
        from kubernetes.client.exceptions import ApiException

        name, t = canary_name(spec.target), REQUEST_TIMEOUT_S
        deletes: list[Callable[..., Any]] = [self.apps.delete_namespaced_deployment]
        if self.mode == "nginx":  # traffic first: the Ingress, then its Service, then the pods
            deletes = [
                self.networking.delete_namespaced_ingress,
                self.core.delete_namespaced_service,
                *deletes,
            ]
        for delete in deletes:
            try:
                delete(name, self.namespace, _request_timeout=t)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        if self.mode == "nginx":
            service = self._stable_service()
            if (service["metadata"].get("annotations") or {}).get(PINNED):
                unpin = {
                    "metadata": {"annotations": {PINNED: None}},
                    "spec": {"selector": {POD_VERSION_LABEL: None}},
                }
                self.core.patch_namespaced_service(
                    self.service, self.namespace, unpin, _request_timeout=t
                )
