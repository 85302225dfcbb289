"""The OpenAPI document, made to say what the server does, and 405 + ``Allow`` for the rest.

FastAPI writes a document from the route declarations, and it is wrong in the same ways on every
route: it lists only the success status and a 422 in FastAPI's own shape, while every error this
server answers is ``application/problem+json`` (RFC 9457), or Anthropic's error envelope on the
gateway's ``/v1/messages`` routes; it does not know which permission guards a route, which ids
a path parameter accepts, which agent types this deployment offers, or the body of a route that
reads its body by hand (the Alertmanager receiver, the gateway). Fixing that in sixty decorators
would drift; :func:`install` rewrites the generated document in one place instead, from the same
facts the server uses (the route's ``require(...)``, the id and tenant rules, the agent
catalog), and ``tests/integration/test_openapi_conformance.py`` runs schemathesis against the
result, so a new route or error that the document does not describe fails ``make test``.

:func:`install` also puts :class:`~.methods.UndeclaredMethod` first among the app's routes: a
method a path does not serve is 405 with the ``Allow`` header RFC 9110 requires. The schemas
the document adds (the two error bodies, the gateway's requests) are data, in :mod:`.schemas`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from quarterdeck.agents.templates import AgentCatalog
from quarterdeck.config import Settings
from quarterdeck.gateway import is_gateway_path
from quarterdeck.gateway.reports_api import GROUPS
from quarterdeck.incidents.models import AlertmanagerWebhook
from quarterdeck.openapi.methods import UndeclaredMethod
from quarterdeck.openapi.schemas import (
    ANTHROPIC_ERROR_SCHEMA,
    COUNT_TOKENS_REQUEST,
    MESSAGES_REQUEST,
    PROBLEM_SCHEMA,
    SSE_EVENT,
    UNIX_SECONDS,
)
from quarterdeck.security.audit.models import SEVERITIES
from quarterdeck.security.auth.dependencies import served_routes
from quarterdeck.security.auth.keys import KEY_ID_RE
from quarterdeck.security.auth.permissions import TENANT_RE, Permission

PROBLEM = "application/problem+json"
JSON = "application/json"
SCHEMAS = "#/components/schemas/"
BODY_METHODS = frozenset({"post", "put", "patch"})
ULID = "[0-9A-HJKMNP-TV-Z]{26}"


def id_pattern(prefix: str) -> str:
    """The pattern of ``kit.ids.new_id(prefix)``; ``is_id`` accepts exactly these (unit-tested)."""
    return f"^{prefix}_{ULID}$"


PATH_PATTERNS: Mapping[str, str] = {
    "run_id": id_pattern("run"),
    "approval_id": id_pattern("apr"),
    "incident_id": id_pattern("inc"),
    "rollout_id": id_pattern("ro"),
    "window_id": id_pattern("mw"),
    "tenant": TENANT_RE.pattern,
    "key_id": KEY_ID_RE.pattern,
}
"""Path parameters by name: the ids each route checks (422 otherwise) or looks up (404)."""

QUERY_SCHEMAS: Mapping[tuple[str, str], Mapping[str, Any]] = {
    ("/v1/runs", "cursor"): {"pattern": id_pattern("run")},
    ("/v1/incidents", "cursor"): {"pattern": id_pattern("inc")},
    ("/v1/rollouts", "cursor"): {"pattern": id_pattern("ro")},
    ("/v1/gateway/calls", "cursor"): {"description": "Opaque: a `next_cursor` as returned."},
    ("/v1/audit/events", "cursor"): {"description": "Opaque: a `next_cursor` as returned."},
}
"""Query parameters checked beyond their declared type, by (path, name)."""

QUERY_ITEM_ENUMS: Mapping[tuple[str, str], Sequence[str]] = {
    ("/v1/audit/events", "severity"): tuple(SEVERITIES),
    ("/v1/gateway/usage", "group_by"): GROUPS,  # also as one comma list: model,day
}

BLANK = "[^\\t-\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
"""A character Python's ``str.strip()`` keeps: text made only of others is blank (422)."""

PROPERTY_PATTERNS: Mapping[tuple[str, str], str] = {
    ("RunCreate", "prompt"): BLANK,  # refused when blank
    ("MaintenanceRequest", "reason"): BLANK,
    ("CheckpointOut", "tenant"): TENANT_RE.pattern,  # POST /v1/audit/verify checks it
}
"""Text fields checked beyond their declared type, by (schema name prefix, property)."""

EXTRA_STATUSES: Mapping[tuple[str, str], frozenset[int]] = {
    # An Idempotency-Key reused with another body.
    ("post", "/v1/runs"): frozenset({409}),
    ("post", "/v1/runs/batch"): frozenset({409}),
    # Not in a state that allows it: a run with no diff yet, a finished run, a decided approval,
    # a resolved incident, a tenant whose runs do not stop in time.
    ("get", "/v1/runs/{run_id}/diff"): frozenset({409}),
    ("post", "/v1/runs/{run_id}/cancel"): frozenset({409}),
    ("post", "/v1/approvals/{approval_id}/approve"): frozenset({409}),
    ("post", "/v1/approvals/{approval_id}/reject"): frozenset({409}),
    ("post", "/v1/incidents/{incident_id}/ack"): frozenset({409}),
    ("post", "/v1/tenants/{tenant}/erase"): frozenset({409}),
    # A second live rollout of one target (or canary of one agent type); promote or abort a
    # finished one; an agent-configuration canary has no Argo export.
    ("post", "/v1/rollouts"): frozenset({409}),
    ("post", "/v1/canaries"): frozenset({409}),
    ("get", "/v1/rollouts/{rollout_id}/argo"): frozenset({409}),
    ("post", "/v1/rollouts/{rollout_id}/promote"): frozenset({409}),
    ("post", "/v1/rollouts/{rollout_id}/abort"): frozenset({409}),
}
"""Statuses a route answers beyond the ones every route of its kind does (see ``_statuses``)."""

KEY_ROUTES = "/v1/admin/keys"
"""Key management answers 409 while authentication is off (``AuthOff``)."""

TITLES: Mapping[int, str] = {
    400: "Bad request",
    401: "No valid API key (with a `WWW-Authenticate` challenge)",
    403: "The key's role or tenant lacks the permission",
    404: "Not found (or owned by another tenant)",
    405: "Method not allowed",
    409: "Conflict with the current state",
    413: "Request body too large",
    422: "Validation failed; `errors[].field` names each bad field",
    429: "Rate limit reached; retry after `Retry-After` seconds",
    502: "The upstream model API failed",
    503: "A dependency is unavailable; retry after `Retry-After` seconds",
    529: "The upstream is overloaded",
}

SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"x-api-key": []}]


def install(app: FastAPI, settings: Settings) -> None:
    """Serve the conformed document at ``/openapi.json`` and 405 + ``Allow`` for undeclared
    methods. Call once, after every router is included."""
    agent_types = AgentCatalog.from_settings(settings).names
    generated = app.openapi

    def openapi() -> dict[str, Any]:
        if not getattr(app.state, "openapi_conformed", False):
            app.openapi_schema = conform(
                copy.deepcopy(generated()),
                app,
                auth=settings.auth_required,
                agent_types=agent_types,
            )
            app.state.openapi_conformed = True
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way
    app.router.routes.insert(0, UndeclaredMethod(app))


def conform(
    doc: dict[str, Any], app: FastAPI, *, auth: bool, agent_types: Sequence[str]
) -> dict[str, Any]:
    """``doc`` (FastAPI's document of ``app``) rewritten to describe what the server answers."""
    permissions = {
        (method.lower(), route.path): sorted(p.value for p in route.permissions)
        for route in served_routes(app)
        for method in route.methods
    }
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["ProblemDetails"] = PROBLEM_SCHEMA
    schemas["AnthropicError"] = ANTHROPIC_ERROR_SCHEMA
    schemas["MessagesRequest"] = MESSAGES_REQUEST
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["CountTokensRequest"] = COUNT_TOKENS_REQUEST
    _declare_model(schemas, AlertmanagerWebhook)
    _agent_type_enum(schemas, agent_types)
    _workspace_value(schemas)
    for (prefix, prop), pattern in PROPERTY_PATTERNS.items():
        for name, schema in schemas.items():
            field = schema.get("properties", {}).get(prop) if name.startswith(prefix) else None
            if field is not None and field.get("type") == "string":
                field["pattern"] = pattern
    alert = schemas.get("AlertmanagerAlert", {}).get("properties", {})
    for name in ("startsAt", "endsAt"):
        if name in alert:
            alert[name] = _datetime_or_number(alert[name])
    if auth:
        components["securitySchemes"] = _security_schemes(components)
    else:
        components.pop("securitySchemes", None)
    doc["info"]["description"] = _info(doc["info"].get("description", ""), auth)
    for path, operations in doc.get("paths", {}).items():
        for method, op in operations.items():
            if method not in ("get", "put", "post", "delete", "patch", "head", "options"):
                continue
            _operation(op, method, path, permissions.get((method, path), []), auth)
    _ascii_digits(doc)
    return doc


def _ascii_digits(node: Any) -> Any:
    """``\\d`` in a pattern spelled ``[0-9]``: the same in JSON Schema (ECMA-262), but a
    generator that reads patterns as Python regexes would draw other scripts' digits."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                node[key] = value.replace("\\d", "[0-9]")
            else:
                _ascii_digits(value)
    elif isinstance(node, list):
        for item in node:
            _ascii_digits(item)
    return node


def _info(description: str, auth: bool) -> str:
    mode = (
        "Authentication is **on**: send an API key as `Authorization: Bearer <key>` or "
        "`x-api-key`; each operation names the permission it needs (`x-permission`)."
        if auth
        else "Authentication is **off** on this server (development): every request acts as "
        "an admin, so no key is needed; each operation still names the permission it would "
        "need (`x-permission`)."
    )
    return (
        f"{description}\n\n{mode} Errors are `application/problem+json` (RFC 9457), except on "
        "the gateway's `/v1/messages` and `/v1/models` routes, which answer in Anthropic's "
        "error envelope. Query and header values, path parameters and JSON text never contain "
        "U+0000 (422 naming the field). A method a path does not serve is 405 with `Allow`."
    )


def _security_schemes(components: dict[str, Any]) -> dict[str, Any]:
    schemes: dict[str, Any] = dict(components.get("securitySchemes") or {})
    schemes.setdefault("bearer", {"type": "http", "scheme": "bearer"})
    schemes.setdefault("x-api-key", {"type": "apiKey", "in": "header", "name": "x-api-key"})
    return schemes


def _operation(
    op: dict[str, Any], method: str, path: str, permissions: list[str], auth: bool
) -> None:
    gateway = is_gateway_path(path)
    if permissions:
        op["x-permission"] = permissions[0] if len(permissions) == 1 else permissions
        platform = [p for p in permissions if Permission(p).platform_only]
        note = f"Permission: `{'`, `'.join(permissions)}`" + (
            " (keys of tenant `*` only)." if platform else "."
        )
        op["description"] = f"{op.get('description', '').rstrip()}\n\n{note}".lstrip()
    if auth and permissions:
        op["security"] = SECURITY
    else:
        op.pop("security", None)
    for param in op.get("parameters", []):
        _parameter(param, path)
    if gateway and method == "post":
        body = "CountTokensRequest" if path.endswith("/count_tokens") else "MessagesRequest"
        op["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": {"$ref": SCHEMAS + body}}},
        }
        if body == "MessagesRequest":
            ok = op.setdefault("responses", {}).setdefault("200", {"description": "The answer"})
            ok.setdefault("content", {})["text/event-stream"] = {"schema": SSE_EVENT}
    if (method, path) == ("post", "/v1/alerts/alertmanager"):
        op["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": {"$ref": SCHEMAS + AlertmanagerWebhook.__name__}}},
        }
    responses = op.setdefault("responses", {})
    if path == "/ready":
        responses["503"] = {
            "description": "Not ready (migrations pending, draining, event loop stalled): the "
            "same body, naming the failed checks",
            "content": {JSON: {"schema": {"type": "object"}}},
        }
    for status in sorted(_statuses(op, method, path, bool(permissions), auth)):
        responses[str(status)] = (
            _anthropic_error(status) if gateway else _problem(status, responses.get(str(status)))
        )


def _statuses(op: dict[str, Any], method: str, path: str, guarded: bool, auth: bool) -> set[int]:
    """The error statuses this operation can answer."""
    if path == "/health":
        return set()
    if path == "/ready":
        return set()  # its 503 is its own JSON body (see _operation)
    out = {503}
    if guarded and auth:
        out |= {401, 403, 429}
    if op.get("parameters") or op.get("requestBody") or method in BODY_METHODS:
        out.add(422)
    if method in BODY_METHODS:
        out |= {400, 413}  # 400: a body Starlette cannot parse at all
    if any(p.get("in") == "path" for p in op.get("parameters", [])):
        out.add(404)
    if path.startswith(KEY_ROUTES) and not auth:
        out.add(409)
    out |= EXTRA_STATUSES.get((method, path), frozenset())
    if is_gateway_path(path):
        out = (out - {422}) | {400, 429, 529}
        if method == "post":
            out |= {404, 502}  # a run named in x-quarterdeck-run that is not there; upstream down
    return out


def _problem(status: int, existing: Mapping[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": TITLES.get(status, "Error"),
        "content": {PROBLEM: {"schema": {"$ref": SCHEMAS + "ProblemDetails"}}},
    }
    if existing and existing.get("description") and status not in (422,):
        out["description"] = existing["description"]
    headers = _headers(status)
    if headers:
        out["headers"] = headers
    return out


def _anthropic_error(status: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": TITLES.get(status, "Error"),
        "content": {JSON: {"schema": {"$ref": SCHEMAS + "AnthropicError"}}},
    }
    headers = _headers(status)
    if headers:
        out["headers"] = headers
    return out


def _headers(status: int) -> dict[str, Any]:
    if status == 401:
        return {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}}
    if status in (429, 503):
        return {"Retry-After": {"schema": {"type": "string"}}}
    return {}


def _parameter(param: dict[str, Any], path: str) -> None:
    schema = param.get("schema") or {}
    name = param.get("name", "")
    if param.get("in") == "path" and name in PATH_PATTERNS:
        schema.setdefault("pattern", PATH_PATTERNS[name])
    if param.get("in") == "query":
        extra = QUERY_SCHEMAS.get((path, name), {})
        for option in schema.get("anyOf", [schema]):
            if option.get("type") == "string":
                option.update({k: v for k, v in extra.items() if k != "description"})
            if option.get("type") == "array" and (path, name) in QUERY_ITEM_ENUMS:
                option["items"] = {"enum": list(QUERY_ITEM_ENUMS[(path, name)])}
        if "description" in extra:
            param["description"] = extra["description"]
    param["schema"] = _datetime_or_number(schema)


def _datetime_or_number(schema: dict[str, Any]) -> dict[str, Any]:
    """A ``date-time`` query value may also be Unix seconds, as pydantic reads it."""
    if schema.get("format") == "date-time":
        title = schema.pop("title", None)
        out: dict[str, Any] = {"anyOf": [schema, UNIX_SECONDS]}
        if title:
            out["title"] = title
        return out
    if "anyOf" in schema:
        schema["anyOf"] = [_datetime_or_number(s) for s in schema["anyOf"]]
    return schema


def _declare_model(schemas: dict[str, Any], model: type[BaseModel]) -> None:
    """``model``'s JSON schema in the components, for a route that validates its body by hand."""
    generated = model.model_json_schema(ref_template=SCHEMAS + "{model}")
    for name, definition in generated.pop("$defs", {}).items():
        schemas.setdefault(name, definition)
    schemas[model.__name__] = generated


def _workspace_value(schemas: dict[str, Any]) -> None:
    """A ``path``, ``git`` or ``tar`` workspace needs its ``value`` (422 otherwise)."""
    spec = schemas.get("WorkspaceSpec")
    if spec is None:
        return
    spec["if"] = {
        "required": ["type"],
        "properties": {"type": {"enum": ["path", "git", "tar"]}},
    }
    spec["then"] = {
        "required": ["value"],
        "properties": {"value": {"type": "string", "minLength": 1}},
    }


def _agent_type_enum(schemas: dict[str, Any], names: Sequence[str]) -> None:
    """``agent_type`` of a submission: one of this deployment's catalog (422 otherwise)."""
    for name in ("RunCreate",):
        field = schemas.get(name, {}).get("properties", {}).get("agent_type")
        if not field:
            continue
        options = field.get("anyOf", [field])
        for option in options:
            if option.get("type") == "string":
                option.pop("pattern", None)
                option["enum"] = list(names)
        field["description"] = (
            "One of this deployment's agent types (`GET /v1/agent-types`); the default when "
            "omitted is `QUARTERDECK_DEFAULT_AGENT_TYPE`."
        )
