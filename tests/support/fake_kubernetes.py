"""A local stand-in for the parts of the Kubernetes API server Quarterdeck calls.

There is no cluster here, so this is the only way to test the calls; it follows the real API's
paths, bodies and semantics closely enough for the official ``kubernetes`` client to work
unmodified against it:

- ``coordination.k8s.io/v1`` Leases: GET, POST (201; 409 ``AlreadyExists``), PUT with optimistic
  concurrency (``metadata.resourceVersion`` must match, else 409 ``Conflict`` with the API
  server's message), DELETE; every write bumps the resourceVersion;
- ``apps/v1`` Deployments (the scaler's target): GET the Deployment and its ``/status``, and
  GET/PUT/PATCH its ``/scale`` subresource (an ``autoscaling/v1`` Scale: ``spec.replicas``,
  ``status.replicas``, ``status.selector`` as a label-selector string). PATCH takes the three
  patch types the API server does (JSON patch, merge patch, strategic merge patch; the official
  client sends strategic merge for a dict body) and, like it, answers 422 ``Invalid`` for
  negative replicas. The "controller" is instant: ``status.replicas`` follows ``spec.replicas``
  on every write; readiness is what a test sets with :meth:`FakeKubernetes.set_ready`;
- ``autoscaling/v2`` HorizontalPodAutoscalers: list per namespace (the scaler's owner check);
- ``v1`` Pods: list with a ``labelSelector`` (equality terms ``a=b``, ``a==b``, ``a!=b``), and
  PATCH merging ``metadata`` (annotations and labels; ``null`` deletes a key);
- Deployments created, replaced, patched and deleted whole, Services and Ingresses (the
  rollouts' calls): :mod:`tests.support.fake_kubernetes_apps`;
- errors are ``Status`` objects (``kind: Status``, ``reason``, ``code``, ``details``); an unknown
  object is 404 ``NotFound``.

Every request is recorded in ``requests`` (method, path, body) for assertions. Every change of
state happens under the server's lock: tests drive the fake (``add_pod``, ``set_ready``,
``replicas_of``) from other threads while it serves.
"""

from __future__ import annotations

import copy
import itertools
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from quarterdeck.chaos.fake_http import ScriptedServer
from tests.support.fake_kubernetes_apps import AppsObjectsMixin

LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
DEPLOYMENT = "/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
HPAS = "/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers"
PODS = "/api/v1/namespaces/{namespace}/pods"
MERGE_PATCHES = {"application/merge-patch+json", "application/strategic-merge-patch+json"}
JSON_PATCH = "application/json-patch+json"


def status(
    code: int,
    reason: str,
    message: str,
    name: str,
    kind: str = "leases",
    group: str = "coordination.k8s.io",
) -> Response:
    details = (
        {"name": name, "group": group, "kind": kind} if group else {"name": name, "kind": kind}
    )
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    }
    return JSONResponse(body, status_code=code)


class FakeKubernetes(AppsObjectsMixin, ScriptedServer):
    def __init__(self) -> None:
        super().__init__()
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self.hpas: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        self.ingresses: dict[tuple[str, str], dict[str, Any]] = {}
        self._versions = itertools.count(1000)

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.leases.clear()
            self.deployments.clear()
            self.hpas.clear()
            self.pods.clear()
            self.services.clear()
            self.ingresses.clear()

    def routes(self) -> list[Route]:
        return [
            Route(LEASES, self._create_lease, methods=["POST"]),
            Route(LEASES + "/{name}", self._lease, methods=["GET", "PUT", "DELETE"]),
            Route(DEPLOYMENT, self._deployment, methods=["GET"]),
            Route(DEPLOYMENT + "/status", self._deployment, methods=["GET"]),
            Route(DEPLOYMENT + "/scale", self._scale, methods=["GET", "PUT", "PATCH"]),
            Route(HPAS, self._list_hpas, methods=["GET"]),
            Route(PODS, self._list_pods, methods=["GET"]),
            Route(PODS + "/{name}", self._patch_pod, methods=["PATCH"]),
            *self.apps_routes(),
        ]

    # -- what tests set up and read (any thread) -------------------------------------------
    def add_deployment(
        self, namespace: str, name: str, replicas: int, labels: dict[str, str]
    ) -> None:
        """An apps/v1 Deployment selecting ``labels``, with ``replicas`` asked and none ready."""
        body = {
            "metadata": {"name": name, "labels": dict(labels), "generation": 1},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": dict(labels)},
                "template": {
                    "metadata": {"labels": dict(labels)},
                    "spec": {"containers": [{"name": name, "image": "quarterdeck:latest"}]},
                },
            },
            "status": {"observedGeneration": 1, "replicas": replicas},
        }
        with self._lock:
            self.deployments[(namespace, name)] = self._stamp(
                body, namespace, "apps/v1", "Deployment"
            )

    def set_ready(self, namespace: str, name: str, ready: int) -> None:
        with self._lock:
            found = self.deployments[(namespace, name)]
            found["status"].pop("readyReplicas", None)  # the API server omits zero counts
            if ready:
                found["status"]["readyReplicas"] = ready
            self._stamp(found, namespace, "apps/v1", "Deployment")

    def replicas_of(self, namespace: str, name: str) -> int:
        with self._lock:
            return int(self.deployments[(namespace, name)]["spec"]["replicas"])

    def add_hpa(self, namespace: str, name: str, target_kind: str, target_name: str) -> None:
        body = {
            "metadata": {"name": name},
            "spec": {
                "scaleTargetRef": {
                    "apiVersion": "apps/v1",
                    "kind": target_kind,
                    "name": target_name,
                },
                "minReplicas": 1,
                "maxReplicas": 10,
            },
        }
        with self._lock:
            self.hpas[(namespace, name)] = self._stamp(
                body, namespace, "autoscaling/v2", "HorizontalPodAutoscaler"
            )

    def add_pod(self, namespace: str, name: str, labels: dict[str, str]) -> None:
        body = {
            "metadata": {"name": name, "labels": dict(labels), "annotations": {}},
            "spec": {"containers": [{"name": "worker", "image": "quarterdeck:latest"}]},
            "status": {"phase": "Running"},
        }
        with self._lock:
            self.pods[(namespace, name)] = self._stamp(body, namespace, "v1", "Pod")

    def remove_pod(self, namespace: str, name: str) -> None:
        with self._lock:
            self.pods.pop((namespace, name), None)

    def _stamp(
        self,
        obj: dict[str, Any],
        namespace: str,
        api_version: str = "coordination.k8s.io/v1",
        kind: str = "Lease",
    ) -> dict[str, Any]:
        """Namespace, a new resourceVersion, uid and creation time: what every write does."""
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = namespace
        meta["resourceVersion"] = str(next(self._versions))
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        obj["apiVersion"], obj["kind"] = api_version, kind
        return obj

    async def _create_lease(self, request: Request) -> Response:
        recorded = await self.record(request)
        namespace = request.path_params["namespace"]
        body = copy.deepcopy(recorded.json or {})
        name = body.get("metadata", {}).get("name")
        if not name:
            return status(
                422,
                "Invalid",
                "Lease.coordination.k8s.io is invalid: metadata.name: Required value",
                "",
            )
        with self._lock:
            if (namespace, name) in self.leases:
                return status(
                    409,
                    "AlreadyExists",
                    f'leases.coordination.k8s.io "{name}" already exists',
                    name,
                )
            body["metadata"].pop("resourceVersion", None)
            self.leases[(namespace, name)] = self._stamp(body, namespace)
            return JSONResponse(copy.deepcopy(self.leases[(namespace, name)]), status_code=201)

    async def _lease(self, request: Request) -> Response:
        recorded = await self.record(request)
        namespace, name = request.path_params["namespace"], request.path_params["name"]
        key = (namespace, name)
        with self._lock:
            current = self.leases.get(key)
            if current is None:
                return status(
                    404, "NotFound", f'leases.coordination.k8s.io "{name}" not found', name
                )
            if request.method == "GET":
                return JSONResponse(copy.deepcopy(current))
            if request.method == "DELETE":
                del self.leases[key]
                return JSONResponse(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Success",
                        "code": 200,
                        "metadata": {},
                    }
                )
            body = copy.deepcopy(recorded.json or {})
            sent = body.get("metadata", {}).get("resourceVersion")
            if sent != current["metadata"]["resourceVersion"]:
                return status(
                    409,
                    "Conflict",
                    f"Operation cannot be fulfilled on leases.coordination.k8s.io "
                    f'"{name}": the object has been modified; please apply your '
                    "changes to the latest version and try again",
                    name,
                )
            body["metadata"]["uid"] = current["metadata"]["uid"]
            body["metadata"]["creationTimestamp"] = current["metadata"]["creationTimestamp"]
            self.leases[key] = self._stamp(body, namespace)
            return JSONResponse(copy.deepcopy(self.leases[key]))

    # -- apps/v1 Deployments and their scale subresource -------------------------------------
    async def _deployment(self, request: Request) -> Response:
        await self.record(request)
        namespace, name = request.path_params["namespace"], request.path_params["name"]
        with self._lock:
            found = self.deployments.get((namespace, name))
            if found is None:
                return _deployment_not_found(name)
            return JSONResponse(copy.deepcopy(found))

    async def _scale(self, request: Request) -> Response:
        recorded = await self.record(request)
        namespace, name = request.path_params["namespace"], request.path_params["name"]
        with self._lock:
            found = self.deployments.get((namespace, name))
            if found is None:
                return _deployment_not_found(name)
            current = _scale_of(found)
            if request.method == "GET":
                return JSONResponse(current)
            if request.method == "PUT":
                body = recorded.json if isinstance(recorded.json, dict) else {}
                sent = body.get("metadata", {}).get("resourceVersion")
                if sent and sent != current["metadata"]["resourceVersion"]:
                    return status(
                        409,
                        "Conflict",
                        f'Operation cannot be fulfilled on deployments.apps "{name}": the object '
                        "has been modified; please apply your changes to the latest version and "
                        "try again",
                        name,
                        "deployments",
                        "apps",
                    )
                wanted = body
            else:
                kind = request.headers.get("content-type", "").split(";")[0].strip()
                patched = _apply_patch(current, recorded.json, kind)
                if isinstance(patched, Response):
                    return patched
                wanted = patched
            replicas = wanted.get("spec", {}).get("replicas")
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                return status(
                    422,
                    "Invalid",
                    f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: '
                    f"{json.dumps(replicas)}: must be greater than or equal to 0",
                    name,
                    "Scale",
                    "autoscaling",
                )
            if replicas != found["spec"]["replicas"]:
                found["spec"]["replicas"] = replicas
                found["metadata"]["generation"] += 1
                found["status"].update(
                    replicas=replicas, observedGeneration=found["metadata"]["generation"]
                )
                self._stamp(found, namespace, "apps/v1", "Deployment")
            return JSONResponse(_scale_of(found))

    # -- autoscaling/v2 HorizontalPodAutoscalers ---------------------------------------------
    async def _list_hpas(self, request: Request) -> Response:
        await self.record(request)
        namespace = request.path_params["namespace"]
        with self._lock:
            items = [
                copy.deepcopy(h) for (ns, _), h in sorted(self.hpas.items()) if ns == namespace
            ]
            version = str(next(self._versions))
        return JSONResponse(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscalerList",
                "metadata": {"resourceVersion": version},
                "items": items,
            }
        )

    # -- v1 Pods ------------------------------------------------------------------------------
    async def _list_pods(self, request: Request) -> Response:
        await self.record(request)
        namespace = request.path_params["namespace"]
        terms = _parse_selector(request.query_params.get("labelSelector", ""))
        if terms is None:
            return status(400, "BadRequest", "unable to parse requirement", "", "pods", "")
        with self._lock:
            items = [
                copy.deepcopy(p)
                for (ns, _), p in sorted(self.pods.items())
                if ns == namespace and _selects(terms, p["metadata"].get("labels", {}))
            ]
            version = str(next(self._versions))
        return JSONResponse(
            {
                "apiVersion": "v1",
                "kind": "PodList",
                "metadata": {"resourceVersion": version},
                "items": items,
            }
        )

    async def _patch_pod(self, request: Request) -> Response:
        recorded = await self.record(request)
        namespace, name = request.path_params["namespace"], request.path_params["name"]
        kind = request.headers.get("content-type", "").split(";")[0].strip()
        with self._lock:
            found = self.pods.get((namespace, name))
            if found is None:
                return status(404, "NotFound", f'pods "{name}" not found', name, "pods", "")
            if kind not in MERGE_PATCHES or not isinstance(recorded.json, dict):
                return _unsupported(kind)
            meta = recorded.json.get("metadata") or {}
            found["metadata"] = _merge(
                found["metadata"], {k: meta[k] for k in meta if k in {"annotations", "labels"}}
            )
            self._stamp(found, namespace, "v1", "Pod")
            return JSONResponse(copy.deepcopy(found))


def _deployment_not_found(name: str) -> Response:
    return status(
        404, "NotFound", f'deployments.apps "{name}" not found', name, "deployments", "apps"
    )


def _unsupported(kind: str) -> Response:
    return status(
        415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {kind}", ""
    )


def _scale_of(deployment: dict[str, Any]) -> dict[str, Any]:
    """The autoscaling/v1 Scale the API server derives from a Deployment."""
    meta = deployment["metadata"]
    labels = deployment["spec"]["selector"]["matchLabels"]
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": deployment["spec"]["replicas"]},
        "status": {
            "replicas": deployment["status"].get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        },
    }


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 merge patch (``null`` deletes); a strategic merge of plain maps is the same."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _merge(merged.get(key), value)
    return merged


def _apply_patch(current: dict[str, Any], patch: Any, kind: str) -> dict[str, Any] | Response:
    if kind in MERGE_PATCHES and isinstance(patch, dict):
        result: dict[str, Any] = _merge(current, patch)
        return result
    if kind != JSON_PATCH or not isinstance(patch, list):
        return _unsupported(kind)
    doc = copy.deepcopy(current)
    for op in patch:  # RFC 6902 on object members: add, replace, remove, test
        *parents, leaf = [
            p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]
        ]
        node = doc
        for part in parents:
            node = node.setdefault(part, {})
        if op["op"] in {"add", "replace"}:
            node[leaf] = op["value"]
        elif op["op"] == "remove":
            node.pop(leaf, None)
        elif op["op"] == "test" and node.get(leaf) != op["value"]:
            return status(
                422, "Invalid", f"the test of {op['path']} failed", "", "Scale", "autoscaling"
            )
    return doc


def _parse_selector(text: str) -> list[tuple[str, str, str]] | None:
    """``a=b,c!=d`` as (key, operator, value) terms; None for what this fake does not parse."""
    terms: list[tuple[str, str, str]] = []
    for raw in filter(None, (t.strip() for t in text.split(","))):
        for operator in ("!=", "==", "="):
            key, found, value = raw.partition(operator)
            if found:
                terms.append((key.strip(), "!=" if operator == "!=" else "=", value.strip()))
                break
        else:
            return None
    return terms


def _selects(terms: list[tuple[str, str, str]], labels: dict[str, str]) -> bool:
    return all((labels.get(k) == v) == (op == "=") for k, op, v in terms)
