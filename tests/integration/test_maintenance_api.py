"""``/v1/maintenance`` through the real app with authentication on, and ``quarterdeck
maintenance`` against it on uvicorn, on the embedded Postgres.

The router is mounted here when the app does not mount it yet, and the service registered.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from quarterdeck.app import create_app
from quarterdeck.health.maintenance_cli import app as maintenance_cli
from quarterdeck.runtime import Runtime
from quarterdeck.security.auth import Role
from tests.support.cli_env import forget_settings_env, logs_to_the_real_stderr
from tests.support.live_app import asgi_client, serving_app
from tests.support.ui import started

ADMIN = "maintenance-api-bootstrap-admin-key-0123456789"
PROBLEM = "application/problem+json"
WINDOW = {
    "starts_at": "2026-10-03T22:00:00Z",
    "ends_at": "2026-10-04T01:30:00+02:00",  # 23:30 UTC
    "reason": "Postgres major upgrade",
}


@pytest.fixture
async def rt(make_settings: Any) -> AsyncIterator[Runtime]:
    quiet = {"health_monitor_enabled": False, "maintenance_enabled": False}
    async with started(make_settings(auth_enabled=True, admin_api_key=ADMIN, **quiet)) as runtime:
        yield runtime


@pytest.fixture
def app(rt: Runtime) -> FastAPI:
    return create_app(rt.settings, rt)


@pytest.fixture
async def keys(rt: Runtime) -> dict[str, str]:
    return {
        "operator*": (await rt.auth.create("op", Role.operator, "*")).api_key,
        "operator-acme": (await rt.auth.create("op-acme", Role.operator, "acme")).api_key,
        "submitter": (await rt.auth.create("sub", Role.submitter, "acme")).api_key,
        "auditor*": (await rt.auth.create("aud", Role.auditor, "*")).api_key,
    }


def client_of(app: FastAPI, key: str) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    return asgi_client(app, key)


async def audited(rt: Runtime) -> list[str]:
    async with rt.db.acquire() as conn:
        rows = await conn.fetch(
            "SELECT event_type FROM audit_events WHERE event_type LIKE 'maintenance.%' "
            "AND tenant = 'platform' ORDER BY seq"
        )
    return [r["event_type"] for r in rows]


async def test_only_platform_writers_may_declare_a_window(
    app: FastAPI, rt: Runtime, keys: dict[str, str]
):
    for who in ("submitter", "operator-acme", "auditor*"):
        async with client_of(app, keys[who]) as c:
            r = await c.post("/v1/maintenance", json=WINDOW)
            assert r.status_code == 403, (who, r.text)
            assert r.headers["content-type"].startswith(PROBLEM)
    async with client_of(app, keys["operator-acme"]) as c:  # incidents:read is platform-only
        assert (await c.get("/v1/maintenance")).status_code == 403
    async with client_of(app, keys["operator*"]) as c:
        r = await c.post("/v1/maintenance", json=WINDOW)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"].startswith("mw_") and body["reason"] == WINDOW["reason"]
    assert body["ends_at"].startswith("2026-10-03T23:30:00")
    assert body["created_by"] is not None
    assert await audited(rt) == ["maintenance.scheduled"]


async def test_bad_windows_are_422_naming_the_field(app: FastAPI, keys: dict[str, str]):
    bad = [
        ({**WINDOW, "ends_at": "2026-10-03T21:00:00Z"}, "ends_at"),  # before the start
        ({**WINDOW, "ends_at": "2026-10-11T00:00:00Z"}, "ends_at"),  # over 7 days
        ({**WINDOW, "starts_at": "2026-10-03T22:00:00"}, "starts_at"),  # naive
        ({**WINDOW, "reason": "   "}, "reason"),
        ({**WINDOW, "reason": ""}, "reason"),
        ({k: v for k, v in WINDOW.items() if k != "ends_at"}, "ends_at"),
        ({**WINDOW, "starts_at": "soon"}, "starts_at"),
    ]
    async with client_of(app, keys["operator*"]) as c:
        for body, field in bad:
            r = await c.post("/v1/maintenance", json=body)
            assert r.status_code == 422, (body, r.text)
            assert r.headers["content-type"].startswith(PROBLEM)
            assert any(field in e["field"] for e in r.json()["errors"]), r.json()
        r = await c.get("/v1/maintenance", params={"from": "2026-10-01T00:00:00"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "from"
        assert (await c.get("/v1/maintenance")).json() == []


async def test_list_and_delete_round_trip(app: FastAPI, rt: Runtime, keys: dict[str, str]):
    later = {
        "starts_at": "2026-10-20T00:00:00Z",
        "ends_at": "2026-10-20T02:00:00Z",
        "reason": "kernel",
    }
    async with client_of(app, keys["operator*"]) as c:
        first = (await c.post("/v1/maintenance", json=WINDOW)).json()
        second = (await c.post("/v1/maintenance", json=later)).json()
        listed = (await c.get("/v1/maintenance")).json()
        assert [w["id"] for w in listed] == [first["id"], second["id"]]
        window = {"from": "2026-10-10T00:00:00Z", "to": "2026-10-21T00:00:00Z"}
        only = (await c.get("/v1/maintenance", params=window)).json()
        assert [w["id"] for w in only] == [second["id"]]
        # a window overlapping the range's start is listed (23:00 is inside 22:00-23:30)
        edge = {"from": "2026-10-03T23:00:00Z", "to": "2026-10-04T00:00:00Z"}
        assert [w["id"] for w in (await c.get("/v1/maintenance", params=edge)).json()] == [
            first["id"]
        ]
        gone = await c.delete(f"/v1/maintenance/{first['id']}")
        assert gone.status_code == 204 and gone.content == b""
        again = await c.delete(f"/v1/maintenance/{first['id']}")
        assert again.status_code == 404 and again.headers["content-type"].startswith(PROBLEM)
        assert [w["id"] for w in (await c.get("/v1/maintenance")).json()] == [second["id"]]
    async with client_of(app, keys["operator-acme"]) as c:
        assert (await c.delete(f"/v1/maintenance/{second['id']}")).status_code == 403
    assert await audited(rt) == [
        "maintenance.scheduled",
        "maintenance.scheduled",
        "maintenance.deleted",
    ]


async def test_cli_add_list_and_delete_against_the_server(
    app: FastAPI, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
):
    forget_settings_env(monkeypatch)
    runner = CliRunner()
    with logs_to_the_real_stderr(monkeypatch):
        async with serving_app(app) as url:

            async def qd(*args: str, key: str = keys["operator*"]) -> Any:
                env = {"QUARTERDECK_URL": url, "QUARTERDECK_API_KEY": key}
                return await asyncio.to_thread(runner.invoke, maintenance_cli, list(args), env=env)

            empty = await qd("list")
            assert empty.exit_code == 0 and "No maintenance windows" in empty.stdout
            added = await qd(
                "add", "--start", "2026-10-03T22:00:00Z", "--end", "2026-10-03T23:30:00Z",
                "--reason", "db upgrade", "--json",
            )  # fmt: skip
            assert added.exit_code == 0, added.output
            window_id = json.loads(added.stdout)["id"]
            listed = await qd("list", "--json")
            assert listed.exit_code == 0, listed.output
            assert [(w["id"], w["reason"]) for w in json.loads(listed.stdout)] == [
                (window_id, "db upgrade")
            ]
            table = await qd("list")
            assert window_id in table.stdout and "90" in table.stdout
            naive = await qd(
                "add", "--start", "2026-10-03T22:00:00", "--end", "2026-10-03T23:00:00Z",
                "--reason", "x",
            )  # fmt: skip
            assert naive.exit_code == 1 and "422" in naive.output
            denied = await qd(
                "add", "--start", "2026-10-05T22:00:00Z", "--end", "2026-10-05T23:00:00Z",
                "--reason", "x", key=keys["operator-acme"],
            )  # fmt: skip
            assert denied.exit_code == 1 and "403" in denied.output
            deleted = await qd("delete", window_id)
            assert deleted.exit_code == 0 and "deleted" in deleted.stdout
            missing = await qd("delete", window_id)
            assert missing.exit_code == 1 and "404" in missing.output
            assert json.loads((await qd("list", "--json")).stdout) == []
