"""``GET /v1/scaling/status|decisions`` and ``quarterdeck scaler status|decisions``, on the
embedded Postgres, through the full app with authentication on.

Decisions are stored with ``repository.insert_decision`` (what the leader's scaler writes), read
back through the real :class:`ScalingService`, the API's permission check and, for the CLI, a
real server (uvicorn on a free port in the test's loop) that the commands call over HTTP.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import typer
from fastapi import FastAPI
from typer.testing import CliRunner

from quarterdeck.app import create_app
from quarterdeck.chaos.process import free_port
from quarterdeck.kit.console import console
from quarterdeck.kit.wiring import services
from quarterdeck.runtime import Runtime
from quarterdeck.scaling import repository
from quarterdeck.scaling.cli_decisions import register
from quarterdeck.scaling.models import ScalerMode
from quarterdeck.scaling.policy import FactorValue, ScalerConfig
from quarterdeck.scaling.service import ScalingService
from quarterdeck.security.auth import Role
from quarterdeck.store.pool import Database
from tests.support.cli_env import forget_settings_env, logs_to_the_real_stderr
from tests.support.live_app import asgi_client, serving_app
from tests.support.ui import started

ADMIN = "scaling-api-bootstrap-admin-key-0123456789"
TARGET = "quarterdeck/quarterdeck-worker"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
INTERVAL = 15.0
PROBLEM = "application/problem+json"
CONFIG = ScalerConfig(min_replicas=2, max_replicas=12, cooldown_s=45.0)


def scaling_service(
    db: Database,
    mode: ScalerMode = "dry-run",
    *,
    leader: bool = True,
    now: datetime = NOW,
) -> ScalingService:
    return ScalingService(
        db,
        mode=mode,
        policy="quarterdeck",
        target=None if mode == "off" else TARGET,
        interval_s=INTERVAL,
        config=CONFIG,
        is_leader=lambda: leader,
        clock=lambda: now,
    )


def direction_of(current: int, desired: int) -> str:
    return "up" if desired > current else "down" if desired < current else "hold"


async def store(
    db: Database,
    at: datetime,
    current: int,
    desired: int,
    reason: str,
    *,
    factors: dict[str, FactorValue] | None = None,
    applied: int | None = None,
    error: str | None = None,
) -> int:
    async with db.acquire() as conn:
        return await repository.insert_decision(
            conn,
            at=at,
            policy="quarterdeck",
            mode="dry-run",
            target=TARGET,
            current=current,
            desired=desired,
            applied=applied,
            direction=direction_of(current, desired),
            reason=reason,
            factors=factors or {},
            error=error,
        )


@pytest.fixture
async def rt(make_settings: Any) -> AsyncIterator[Runtime]:
    quiet = {"health_monitor_enabled": False, "maintenance_enabled": False}
    async with started(make_settings(auth_enabled=True, admin_api_key=ADMIN, **quiet)) as runtime:
        yield runtime


@pytest.fixture
def app(rt: Runtime) -> FastAPI:
    app = create_app(rt.settings, rt)
    services(app).add(ScalingService, scaling_service(rt.db))
    return app


def client_of(
    app: FastAPI, key: str | None = ADMIN
) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    return asgi_client(app, key)


def problem_fields(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    return [e["field"] for e in response.json()["errors"]]


# -- the API ------------------------------------------------------------------------------------


async def test_status_on_an_empty_table_and_when_decisions_stop(rt: Runtime, app: FastAPI) -> None:
    async with client_of(app) as api:
        empty = await api.get("/v1/scaling/status")
        assert empty.status_code == 200, empty.text
        body = empty.json()
        assert body["mode"] == "dry-run" and body["policy"] == "quarterdeck"
        assert body["target"] == TARGET and body["interval_s"] == INTERVAL
        assert body["leader"] is True
        assert body["config"]["min_replicas"] == 2 and body["config"]["cooldown_s"] == 45.0
        assert body["last"] is None and body["last_age_s"] is None
        assert body["stale"] is True  # configured, and nothing stored yet

        old = await store(rt.db, NOW - timedelta(seconds=10 * INTERVAL), 3, 3, "steady")
        stale = (await api.get("/v1/scaling/status")).json()
        assert stale["last"]["id"] == old and stale["last"]["reason"] == "steady"
        assert stale["last_age_s"] == pytest.approx(10 * INTERVAL)
        assert stale["stale"] is True

        fresh_id = await store(rt.db, NOW - timedelta(seconds=1), 3, 5, "backlog grew")
        fresh = (await api.get("/v1/scaling/status")).json()
        assert fresh["last"]["id"] == fresh_id and fresh["last"]["direction"] == "up"
        assert fresh["stale"] is False and fresh["last_age_s"] == pytest.approx(1.0)

    off = create_app(rt.settings, rt)
    services(off).add(ScalingService, scaling_service(rt.db, "off", leader=False))
    async with client_of(off) as api:
        body = (await api.get("/v1/scaling/status")).json()
        assert body["mode"] == "off" and body["leader"] is False and body["stale"] is False


async def test_decisions_page_newest_first_by_cursor_and_filter(rt: Runtime, app: FastAPI) -> None:
    changes = [(3, 3), (3, 6), (6, 6), (6, 4), (4, 9), (9, 9), (9, 3)]
    factors: dict[str, FactorValue] = {"queued": 120, "ratio": 0.75, "guard": False, "p95": None}
    ids = [
        await store(
            rt.db,
            NOW - timedelta(minutes=len(changes) - i),
            cur,
            des,
            f"decision {i}",
            factors={**factors, "step": i},
            applied=des if cur != des else None,
        )
        for i, (cur, des) in enumerate(changes)
    ]
    newest_first = list(reversed(ids))
    async with client_of(app) as api:
        seen: list[int] = []
        cursor: str | None = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
            response = await api.get("/v1/scaling/decisions", params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            assert len(page["items"]) <= 3
            seen += [d["id"] for d in page["items"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == newest_first and pages == 3

        everything = (await api.get("/v1/scaling/decisions")).json()
        first = everything["items"][-1]
        assert first["reason"] == "decision 0" and first["target"] == TARGET
        assert first["factors"] == {**factors, "step": 0} and first["applied"] is None
        assert everything["items"][0]["applied"] == 3 and everything["next_cursor"] is None

        ups = (await api.get("/v1/scaling/decisions", params={"direction": "up"})).json()
        assert [d["id"] for d in ups["items"]] == [ids[4], ids[1]]
        holds = await api.get("/v1/scaling/decisions", params={"direction": "hold", "limit": 1})
        assert [d["direction"] for d in holds.json()["items"]] == ["hold"]
        assert holds.json()["next_cursor"] is not None

        older = await api.get("/v1/scaling/decisions", params={"cursor": str(ids[2])})
        assert [d["id"] for d in older.json()["items"]] == [ids[1], ids[0]]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "abc"}, "cursor"),
        ({"cursor": "-1"}, "cursor"),
        ({"direction": "sideways"}, "direction"),
    ],
)
async def test_bad_query_values_are_422_naming_the_field(
    app: FastAPI, params: dict[str, Any], field: str
) -> None:
    async with client_of(app) as api:
        fields = problem_fields(await api.get("/v1/scaling/decisions", params=params))
    assert any(f.split(".")[-1] == field for f in fields), fields


async def test_only_platform_operators_and_admins_read_the_scaler(
    rt: Runtime, app: FastAPI
) -> None:
    await store(rt.db, NOW, 3, 4, "secret-ish detail")
    keys = {
        "operator*": (await rt.auth.create("op", Role.operator, "*")).api_key,
        "submitter": (await rt.auth.create("sub", Role.submitter, "acme")).api_key,
        "operator-acme": (await rt.auth.create("op-acme", Role.operator, "acme")).api_key,
        "auditor*": (await rt.auth.create("aud", Role.auditor, "*")).api_key,
    }
    for path in ("/v1/scaling/status", "/v1/scaling/decisions"):
        async with client_of(app, None) as anonymous:
            assert (await anonymous.get(path)).status_code == 401
        for name, key in keys.items():
            async with client_of(app, key) as api:
                response = await api.get(path)
            expected = 200 if name == "operator*" else 403
            assert response.status_code == expected, (name, path, response.text)
            if expected == 403:
                assert response.headers["content-type"].startswith(PROBLEM)
                assert "secret-ish" not in response.text


async def test_the_openapi_document_lists_the_routes_permission_and_errors(app: FastAPI) -> None:
    async with client_of(app) as api:
        doc = (await api.get("/openapi.json")).json()
    decisions = doc["paths"]["/v1/scaling/decisions"]["get"]
    status = doc["paths"]["/v1/scaling/status"]["get"]
    for op in (decisions, status):
        assert op["x-permission"] == "scaling:read"
        assert {"401", "403", "429", "503"} <= set(op["responses"])
    assert "422" in decisions["responses"] and "422" not in status["responses"]
    params = {p["name"]: p for p in decisions["parameters"]}
    assert params["limit"]["schema"]["maximum"] == 500
    cursor = params["cursor"]["schema"]
    assert any(o.get("pattern") == "^[0-9]{1,18}$" for o in cursor.get("anyOf", [cursor]))


# -- the CLI, through a real server ----------------------------------------------------------

runner = CliRunner()


@pytest.fixture
def scaler_cli(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    forget_settings_env(monkeypatch)
    monkeypatch.setattr(console, "_width", 200)  # reasons on one line each, as in a wide terminal
    cli = typer.Typer()
    register(cli)
    return cli


def flat(text: str) -> str:
    return " ".join(text.split())


async def test_cli_status_and_decisions_against_the_server(
    rt: Runtime, app: FastAPI, scaler_cli: typer.Typer, monkeypatch: pytest.MonkeyPatch
) -> None:
    reasons = ["queue is empty", "backlog of 120 runs is 90 s old", "cpu guard holds"]
    await store(rt.db, NOW - timedelta(minutes=3), 4, 3, reasons[0], applied=3)
    await store(
        rt.db, NOW - timedelta(minutes=2), 3, 7, reasons[1], factors={"queued": 120}, applied=7
    )
    await store(rt.db, NOW - timedelta(seconds=5), 7, 7, reasons[2], factors={"cpu": 0.95})
    operator = (await rt.auth.create("op", Role.operator, "*")).api_key
    submitter = (await rt.auth.create("sub", Role.submitter, "acme")).api_key

    with logs_to_the_real_stderr(monkeypatch):
        async with serving_app(app) as url:

            async def qd(*args: str, key: str = operator) -> Any:
                env = {"QUARTERDECK_URL": url, "QUARTERDECK_API_KEY": key}
                return await asyncio.to_thread(runner.invoke, scaler_cli, list(args), env=env)

            status = await qd("status")
            assert status.exit_code == 0, status.output
            text = flat(status.stdout)
            assert "dry-run" in text and "quarterdeck" in text and TARGET in text
            assert "7 \u2192 7 hold" in text and reasons[2] in text and "warning" not in text

            as_json = json.loads((await qd("status", "--json")).stdout)
            assert as_json["last"]["factors"] == {"cpu": 0.95} and as_json["leader"] is True

            table = await qd("decisions")
            assert table.exit_code == 0, table.output
            out = flat(table.stdout)
            assert all(r in out for r in reasons)
            assert out.index(reasons[2]) < out.index(reasons[1]) < out.index(reasons[0])
            assert "3 \u2192 7" in out and "--cursor" not in out

            ups = json.loads((await qd("decisions", "--direction", "up", "--json")).stdout)
            assert [d["reason"] for d in ups["items"]] == [reasons[1]]
            assert ups["items"][0]["factors"] == {"queued": 120}

            one = await qd("decisions", "--limit", "1")
            cursor = one.stdout.split("--cursor")[-1].strip()
            assert cursor.isdigit(), one.stdout
            rest = flat((await qd("decisions", "--cursor", cursor)).stdout)
            assert reasons[2] not in rest and reasons[1] in rest and reasons[0] in rest

            none = await qd("decisions", "--direction", "down", "--cursor", "1")
            assert none.exit_code == 0 and "No decisions match this filter." in flat(none.stdout)

            bad = await qd("decisions", "--direction", "sideways")
            assert bad.exit_code == 2 and "sideways" in bad.output

            denied = await qd("decisions", key=submitter)
            assert denied.exit_code == 1 and "403" in flat(denied.output)

            # Stale: the newest decision is 10 intervals old; a warning, and still exit 0.
            later = NOW + timedelta(seconds=10 * INTERVAL)
            services(app).add(ScalingService, scaling_service(rt.db, now=later, leader=False))
            stale = await qd("status")
            assert stale.exit_code == 0, stale.output
            assert "warning: no decision stored" in flat(stale.stdout)
            assert "leader no" in flat(stale.stdout)

            services(app).add(ScalingService, scaling_service(rt.db, "off", leader=False))
            off = await qd("status")
            assert off.exit_code == 0 and "QUARTERDECK_SCALER_MODE" in flat(off.stdout)


def test_cli_without_a_server_says_so(scaler_cli: typer.Typer) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for command in (["status"], ["decisions"]):
        result = runner.invoke(scaler_cli, command, env={"QUARTERDECK_URL": url})
        assert result.exit_code == 1, result.output
        assert "cannot reach Quarterdeck" in flat(result.output)
