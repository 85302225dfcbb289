"""A local stand-in for the parts of the Kubernetes API server Quarterdeck calls.

There is no cluster here, so this is the only way to test the calls; it follows the real API's
paths, bodies and semantics closely enough for the official ``kubernetes`` client to work
unmodified against it:

- ``coordination.k8s.io/v1`` Leases: GET, POST (201; 409 ``AlreadyExists``), PUT with optimistic
  concurrency (``metadata.resourceVersion`` must match, else 409 ``Conflict`` with the API
  server's message), DELETE; every write bumps the resourceVersion;
- errors are ``Status`` objects (``kind: Status``, ``reason``, ``code``, ``details``).

Every request is recorded in ``requests`` (method, path, body) for assertions.
"""

from __future__ import annotations

import copy
import itertools
import uuid
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from quarterdeck.chaos.fake_http import ScriptedServer

LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"


def status(code: int, reason: str, message: str, name: str, kind: str = "leases") -> Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": {"name": name, "group": "coordination.k8s.io", "kind": kind},
        "code": code,
    }
    return JSONResponse(body, status_code=code)


class FakeKubernetes(ScriptedServer):
    def __init__(self) -> None:
        super().__init__()
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self._versions = itertools.count(1000)

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.leases.clear()

    def routes(self) -> list[Route]:
        return [
            Route(LEASES, self._create_lease, methods=["POST"]),
            Route(LEASES + "/{name}", self._lease, methods=["GET", "PUT", "DELETE"]),
        ]

    def _stamp(self, obj: dict[str, Any], namespace: str) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = namespace
        meta["resourceVersion"] = str(next(self._versions))
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        obj["apiVersion"], obj["kind"] = "coordination.k8s.io/v1", "Lease"
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
