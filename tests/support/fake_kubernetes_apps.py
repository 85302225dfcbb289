"""The fake API server's objects for rollouts: Deployments written whole, Services, Ingresses.

A mixin of :class:`tests.support.fake_kubernetes.FakeKubernetes` (kept apart so both files stay
readable). It follows the real API where the rollout's calls depend on it:

- ``apps/v1`` Deployments: POST (201; 409 ``AlreadyExists``), PUT (``resourceVersion`` must
  match, else 409 ``Conflict``), PATCH (merge and strategic merge; a strategic merge merges
  lists of named items such as ``containers`` by ``name``, as the API server does), DELETE.
  ``metadata.generation`` grows with every spec change; the "controller" is instant for counts
  (``observedGeneration``, ``status.replicas``), while a new pod template leaves
  ``updatedReplicas`` at 0 until a test says the rollout happened (:meth:`set_status`) or
  ``auto_roll`` is on;
- ``v1`` Services and ``networking.k8s.io/v1`` Ingresses: list, POST, GET, PATCH, DELETE (a
  Service's DELETE answers with the Service, as the real one and the client's types do);
- errors are ``Status`` objects with the API server's reasons and messages.
"""

from __future__ import annotations

import copy
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

DEPLOYMENTS = "/apis/apps/v1/namespaces/{namespace}/deployments"
SERVICES = "/api/v1/namespaces/{namespace}/services"
INGRESSES = "/apis/networking.k8s.io/v1/namespaces/{namespace}/ingresses"
# path -> (store attribute, apiVersion, kind, plural, group)
KINDS = {
    DEPLOYMENTS: ("deployments", "apps/v1", "Deployment", "deployments", "apps"),
    SERVICES: ("services", "v1", "Service", "services", ""),
    INGRESSES: ("ingresses", "networking.k8s.io/v1", "Ingress", "ingresses", "networking.k8s.io"),
}
MERGES = {"application/merge-patch+json", "application/strategic-merge-patch+json"}


def kube_status(
    code: int, reason: str, message: str, name: str, plural: str, group: str
) -> Response:
    details = {"name": name, "kind": plural, **({"group": group} if group else {})}
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


def strategic(target: Any, patch: Any, *, by_name: bool) -> Any:
    """Merge patch (``null`` deletes); with ``by_name``, lists of named maps merge by name."""
    if isinstance(patch, list) and by_name and isinstance(target, list):
        if all(isinstance(i, dict) and "name" in i for i in [*patch, *target]):
            merged = [copy.deepcopy(i) for i in target]
            for item in patch:
                index = next((n for n, i in enumerate(merged) if i["name"] == item["name"]), None)
                if index is None:
                    merged.append(copy.deepcopy(item))
                else:
                    merged[index] = strategic(merged[index], item, by_name=by_name)
            return merged
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = strategic(out.get(key), value, by_name=by_name)
    return out


class AppsObjectsMixin:
    """Needs ``self._lock``, ``self.record``, ``self._stamp`` and the three stores."""

    deployments: dict[tuple[str, str], dict[str, Any]]
    services: dict[tuple[str, str], dict[str, Any]]
    ingresses: dict[tuple[str, str], dict[str, Any]]
    auto_roll: bool = False

    def apps_routes(self) -> list[Route]:
        routes = []
        for base in KINDS:

            async def collection(request: Request, base: str = base) -> Response:
                return await self._collection(request, base)

            async def one(request: Request, base: str = base) -> Response:
                return await self._object(request, base)

            methods = ["PUT", "PATCH", "DELETE"] + ([] if base == DEPLOYMENTS else ["GET"])
            routes.append(Route(base, collection, methods=["GET", "POST"]))
            routes.append(Route(base + "/{name}", one, methods=methods))
        return routes

    # -- what tests set up and read --------------------------------------------------------
    def add_object(self, kind_path: str, namespace: str, body: dict[str, Any]) -> None:
        """Store ``body`` (a Service or Ingress as JSON) as if it had been created."""
        store, api_version, kind, _, _ = KINDS[kind_path]
        with self._lock:  # type: ignore[attr-defined]
            obj = self._stamp(copy.deepcopy(body), namespace, api_version, kind)  # type: ignore[attr-defined]
            getattr(self, store)[(namespace, body["metadata"]["name"])] = obj

    def set_status(self, namespace: str, name: str, **fields: int) -> None:
        """Set a Deployment's status counts (``updatedReplicas=3``, ``readyReplicas=3``...)."""
        with self._lock:  # type: ignore[attr-defined]
            found = self.deployments[(namespace, name)]
            found["status"].update(fields)
            self._stamp(found, namespace, "apps/v1", "Deployment")  # type: ignore[attr-defined]

    def get_object(self, kind_path: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:  # type: ignore[attr-defined]
            found = getattr(self, KINDS[kind_path][0]).get((namespace, name))
            return copy.deepcopy(found) if found is not None else None

    # -- handlers ----------------------------------------------------------------------------
    async def _collection(self, request: Request, path: str) -> Response:
        recorded = await self.record(request)  # type: ignore[attr-defined]
        store_name, api_version, kind, plural, group = KINDS[path]
        namespace = request.path_params["namespace"]
        store = getattr(self, store_name)
        with self._lock:  # type: ignore[attr-defined]
            if request.method == "GET":
                items = [
                    copy.deepcopy(o) for (ns, _), o in sorted(store.items()) if ns == namespace
                ]
                return JSONResponse(
                    {
                        "apiVersion": api_version,
                        "kind": f"{kind}List",
                        "metadata": {},
                        "items": items,
                    }
                )
            body = copy.deepcopy(recorded.json or {})
            name = (body.get("metadata") or {}).get("name")
            if not name:
                return kube_status(
                    422,
                    "Invalid",
                    f"{kind} is invalid: metadata.name: Required value",
                    "",
                    plural,
                    group,
                )
            if (namespace, name) in store:
                full = f"{plural}.{group}" if group else plural
                return kube_status(
                    409, "AlreadyExists", f'{full} "{name}" already exists', name, plural, group
                )
            body["metadata"].pop("resourceVersion", None)
            body["metadata"]["generation"] = 1
            if path == DEPLOYMENTS:
                replicas = body["spec"].get("replicas", 1)
                body["status"] = {
                    "observedGeneration": 1,
                    "replicas": replicas,
                    "updatedReplicas": replicas,
                }
            store[(namespace, name)] = self._stamp(body, namespace, api_version, kind)  # type: ignore[attr-defined]
            return JSONResponse(copy.deepcopy(store[(namespace, name)]), status_code=201)

    async def _object(self, request: Request, path: str) -> Response:
        recorded = await self.record(request)  # type: ignore[attr-defined]
        store_name, api_version, kind, plural, group = KINDS[path]
        namespace, name = request.path_params["namespace"], request.path_params["name"]
        store = getattr(self, store_name)
        full = f"{plural}.{group}" if group else plural
        with self._lock:  # type: ignore[attr-defined]
            current = store.get((namespace, name))
            if current is None:
                return kube_status(
                    404, "NotFound", f'{full} "{name}" not found', name, plural, group
                )
            if request.method == "GET":
                return JSONResponse(copy.deepcopy(current))
            if request.method == "DELETE":
                del store[(namespace, name)]
                if path == SERVICES:  # the API server answers a Service's DELETE with it
                    return JSONResponse(copy.deepcopy(current))
                return JSONResponse(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Success",
                        "code": 200,
                        "metadata": {},
                    }
                )
            if request.method == "PUT":
                wanted = copy.deepcopy(recorded.json or {})
                if (
                    wanted.get("metadata", {}).get("resourceVersion")
                    != current["metadata"]["resourceVersion"]
                ):
                    return kube_status(
                        409,
                        "Conflict",
                        f'Operation cannot be fulfilled on {full} "{name}": the object has been '
                        "modified; please apply your changes to the latest version and try again",
                        name,
                        plural,
                        group,
                    )
                for key in ("uid", "creationTimestamp", "generation"):
                    wanted["metadata"][key] = current["metadata"][key]
                wanted["status"] = current.get("status")
            else:
                kind_header = request.headers.get("content-type", "").split(";")[0].strip()
                if kind_header not in MERGES or not isinstance(recorded.json, dict):
                    return kube_status(
                        415,
                        "UnsupportedMediaType",
                        f"unknown patch type {kind_header}",
                        name,
                        plural,
                        group,
                    )
                by_name = kind_header.startswith("application/strategic")
                wanted = strategic(current, recorded.json, by_name=by_name)
            if path == DEPLOYMENTS:
                replicas = wanted["spec"].get("replicas", 1)
                if not isinstance(replicas, int) or replicas < 0:
                    return kube_status(
                        422,
                        "Invalid",
                        f'Deployment.apps "{name}" is invalid: spec.replicas: Invalid value: '
                        f"{replicas}: must be greater than or equal to 0",
                        name,
                        plural,
                        group,
                    )
                self._deployment_controller(current, wanted)
            store[(namespace, name)] = self._stamp(wanted, namespace, api_version, kind)  # type: ignore[attr-defined]
            return JSONResponse(copy.deepcopy(store[(namespace, name)]))

    def _deployment_controller(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        """What the API server and an instant Deployment controller do to a written spec."""
        status = dict(old.get("status") or {})
        if new["spec"] != old["spec"]:
            new["metadata"]["generation"] = old["metadata"]["generation"] + 1
        replicas = new["spec"].get("replicas", 1)
        status.update(observedGeneration=new["metadata"]["generation"], replicas=replicas)
        if new["spec"]["template"] != old["spec"]["template"] and not self.auto_roll:
            status["updatedReplicas"] = 0  # a new template: no pod of it yet
        else:
            status["updatedReplicas"] = replicas
            if self.auto_roll:
                status["readyReplicas"] = replicas
        new["status"] = status
