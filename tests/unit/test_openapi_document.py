"""The conformed OpenAPI document (``quarterdeck.openapi``) and the 405 + ``Allow`` answers.

In process, without a database: the document is built from the routes, and a method a path
does not serve is answered before any route's dependency runs. Schemathesis checks the same
against the running server (``tests/integration/test_openapi_conformance.py``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from quarterdeck.app import create_app
from quarterdeck.config import load_settings
from quarterdeck.kit.ids import is_id, new_id
from quarterdeck.openapi import PATH_PATTERNS, id_pattern

PROBLEM = "application/problem+json"


def app_for(tmp_path: Path, auth: bool) -> FastAPI:
    settings = load_settings(
        None,
        data_dir=tmp_path,
        auth_enabled=auth,
        admin_api_key="unit-openapi-admin-key-0123456789abcdef" if auth else None,
        gateway_enabled=True,
    )
    return create_app(settings)


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for p, ops in doc["paths"].items() for m, op in ops.items()]


@pytest.mark.parametrize("prefix", ["run", "apr", "inc"])
def test_the_declared_id_pattern_is_what_is_id_accepts(prefix: str):
    pattern = re.compile(id_pattern(prefix))
    good = [new_id(prefix) for _ in range(50)]
    bad = (
        [g.replace(prefix, "xyz", 1) for g in good[:5]]
        + [g[:-1] for g in good[:5]]
        + [g[:-1] + "U" for g in good[:5]]
        + [g.lower() for g in good[:5]]
    )
    for value in good + bad:
        assert bool(pattern.fullmatch(value)) == is_id(value, prefix), value


def test_with_auth_on_every_guarded_operation_names_its_permission_and_security(tmp_path):
    doc = app_for(tmp_path, auth=True).openapi()
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "x-api-key"}
    for method, path, op in operations(doc):
        if path in ("/health", "/ready"):
            assert "x-permission" not in op and "security" not in op
            continue
        assert op["x-permission"], (method, path)
        assert op["security"] == [{"bearer": []}, {"x-api-key": []}], (method, path)
        assert {"401", "403", "429", "503"} <= set(op["responses"]), (method, path)


def test_with_auth_off_no_operation_claims_a_key(tmp_path):
    doc = app_for(tmp_path, auth=False).openapi()
    assert "securitySchemes" not in doc["components"]
    for method, path, op in operations(doc):
        assert "security" not in op and "401" not in op["responses"], (method, path)
    assert "**off**" in doc["info"]["description"]


def test_errors_are_problem_json_except_on_the_gateway(tmp_path):
    doc = app_for(tmp_path, auth=True).openapi()
    run = doc["paths"]["/v1/runs/{run_id}"]["get"]
    assert run["responses"]["404"]["content"] == {
        PROBLEM: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}
    }
    assert run["parameters"][0]["schema"]["pattern"] == PATH_PATTERNS["run_id"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    messages = doc["paths"]["/v1/messages"]["post"]
    assert set(messages["responses"]["400"]["content"]) == {"application/json"}
    assert messages["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/MessagesRequest"
    )
    assert set(messages["responses"]["200"]["content"]) >= {"text/event-stream"}


def test_agent_type_is_the_catalog_and_the_alertmanager_body_is_declared(tmp_path):
    doc = app_for(tmp_path, auth=False).openapi()
    field = doc["components"]["schemas"]["RunCreate"]["properties"]["agent_type"]
    enums = [o["enum"] for o in field["anyOf"] if "enum" in o]
    assert enums and "coder" in enums[0]
    alert = doc["paths"]["/v1/alerts/alertmanager"]["post"]["requestBody"]
    assert alert["content"]["application/json"]["schema"]["$ref"].endswith("AlertmanagerWebhook")
    assert "AlertmanagerAlert" in doc["components"]["schemas"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("TRACE", "/v1/runs", "GET, HEAD, POST"),
        ("DELETE", "/health", "GET, HEAD"),
        ("GET", "/v1/runs/batch", "POST"),  # not a lookup of run "batch"
        ("PUT", "/v1/runs/run_01M968AT7Y26BSFQ0H3AW645VS", "GET, HEAD"),
        ("TRACE", "/v1/messages", "POST"),
    ],
)
async def test_a_method_a_path_does_not_serve_is_405_with_allow(tmp_path, method, path, allow):
    app = app_for(tmp_path, auth=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://qd") as c:
        r = await c.request(method, path)
    assert r.status_code == 405
    assert r.headers["allow"] == allow
    if path.startswith("/v1/messages"):
        assert r.json()["type"] == "error"  # Anthropic's envelope
    else:
        assert r.headers["content-type"] == PROBLEM


async def test_options_answers_204_with_allow(tmp_path):
    app = app_for(tmp_path, auth=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://qd") as c:
        r = await c.options("/v1/admin/keys")
    assert r.status_code == 204 and r.headers["allow"] == "GET, HEAD, POST"
