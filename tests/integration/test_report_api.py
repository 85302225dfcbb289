"""``GET /v1/reports/monthly``, ``/v1/reports`` and ``/v1/reports/focus`` through the real app,
with authentication on and keys of one tenant and of every tenant, on the embedded Postgres.

The router is mounted here when the app does not mount it yet, and the service is registered
with a fixed clock (so "2026-10" is a finished month and "2026-12" is in the future).
"""

from __future__ import annotations

import asyncio
import csv
import importlib.util
import io
import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from quarterdeck.app import create_app
from quarterdeck.kit.wiring import services
from quarterdeck.reports.cli import app as report_cli
from quarterdeck.reports.service import ReportService
from quarterdeck.runtime import Runtime
from quarterdeck.security.auth import Role
from tests.support.cli_env import forget_settings_env, logs_to_the_real_stderr
from tests.support.live_app import asgi_client, serving_app
from tests.support.ui import started

ADMIN = "reports-api-bootstrap-admin-key-0123456789"
NOW = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
PROBLEM = "application/problem+json"


@pytest.fixture
async def rt(make_settings: Any) -> AsyncIterator[Runtime]:
    quiet = {"health_monitor_enabled": False, "maintenance_enabled": False}
    async with started(make_settings(auth_enabled=True, admin_api_key=ADMIN, **quiet)) as runtime:
        async with runtime.db.acquire() as conn:
            for rid, tenant, cost in (("ra", "acme", "1.5"), ("rg", "globex", "2.5")):
                await conn.execute(
                    "INSERT INTO runs (id, tenant, agent_type, operation, prompt, model, status, "
                    "attempts, created_at, started_at, finished_at, cost_usd) VALUES "
                    "($1, $2, 'coder', 'op', 'p', 'claude-sonnet-4-5', 'succeeded', 1, $3, $3, "
                    "$3, $4)",
                    rid,
                    tenant,
                    datetime(2026, 10, 7, tzinfo=UTC),
                    Decimal(cost),
                )
                await conn.execute(
                    "INSERT INTO run_turns (run_id, turn, messages, model, cost_usd, created_at) "
                    "VALUES ($1, 1, '[]'::jsonb, 'claude-sonnet-4-5', $2, $3)",
                    rid,
                    Decimal(cost),
                    datetime(2026, 10, 7, tzinfo=UTC),
                )
        yield runtime


@pytest.fixture
def app(rt: Runtime) -> FastAPI:
    app = create_app(rt.settings, rt)
    services(app).add(ReportService, ReportService(rt.db, rt.settings, clock=lambda: NOW))
    return app


@pytest.fixture
async def keys(rt: Runtime) -> dict[str, str]:
    return {
        "operator*": (await rt.auth.create("op", Role.operator, "*")).api_key,
        "operator-acme": (await rt.auth.create("op-acme", Role.operator, "acme")).api_key,
        "auditor-acme": (await rt.auth.create("aud-acme", Role.auditor, "acme")).api_key,
        "submitter": (await rt.auth.create("sub", Role.submitter, "acme")).api_key,
    }


def client_of(app: FastAPI, key: str) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    return asgi_client(app, key)


async def test_a_tenant_key_reads_its_own_tenant_only(app: FastAPI, keys: dict[str, str]):
    async with client_of(app, keys["operator-acme"]) as c:
        own = await c.get("/v1/reports/monthly", params={"month": "2026-10"})
        assert own.status_code == 200, own.text
        assert own.headers["content-type"].startswith("application/json")
        body = own.json()
        assert body["tenant"] == "acme" and body["runs"]["total"] == 1
        assert body["cost"]["total_usd"] == pytest.approx(1.5)
        other = await c.get("/v1/reports/monthly", params={"month": "2026-10", "tenant": "globex"})
        assert other.status_code == 403
        assert other.headers["content-type"].startswith(PROBLEM)
        focus = await c.get("/v1/reports/focus", params={"month": "2026-10"})
        assert focus.status_code == 200 and focus.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(focus.text)))
        assert {r["SubAccountId"] for r in rows} == {"acme"}
        denied = await c.get("/v1/reports/focus", params={"month": "2026-10", "tenant": "globex"})
        assert denied.status_code == 403
    async with client_of(app, keys["auditor-acme"]) as c:
        r = await c.get("/v1/reports/monthly", params={"month": "2026-10"})
        assert r.status_code == 200 and r.json()["tenant"] == "acme"
    async with client_of(app, keys["submitter"]) as c:  # no reports:read
        assert (await c.get("/v1/reports/monthly", params={"month": "2026-10"})).status_code == 403


async def test_a_platform_key_reads_all_tenants_or_the_one_it_names(
    app: FastAPI, keys: dict[str, str]
):
    async with client_of(app, keys["operator*"]) as c:
        everyone = (await c.get("/v1/reports/monthly", params={"month": "2026-10"})).json()
        assert everyone["tenant"] is None and everyone["runs"]["total"] == 2
        assert everyone["cost"]["total_usd"] == pytest.approx(4.0)
        one = await c.get("/v1/reports/monthly", params={"month": "2026-10", "tenant": "globex"})
        assert one.json()["tenant"] == "globex" and one.json()["runs"]["total"] == 1


async def test_bad_month_tenant_and_format_are_422_naming_the_field(
    app: FastAPI, keys: dict[str, str]
):
    async with client_of(app, keys["operator*"]) as c:
        for params, field in (
            ({"month": "2026-13"}, "month"),
            ({"month": "2026-12"}, "month"),  # the future, by the service's clock
            ({"month": "2026-10", "tenant": "no/such"}, "tenant"),
            ({"month": "2026-10", "format": "docx"}, "format"),
        ):
            r = await c.get("/v1/reports/monthly", params=params)
            assert r.status_code == 422, (params, r.text)
            assert r.headers["content-type"].startswith(PROBLEM)
            assert any(field in e["field"] for e in r.json()["errors"]), r.json()
        focus = await c.get("/v1/reports/focus", params={"month": "2026-13"})
        assert focus.status_code == 422


async def test_stored_reports_are_listed_within_reach(
    app: FastAPI, rt: Runtime, keys: dict[str, str]
):
    service = ReportService(rt.db, rt.settings, clock=lambda: NOW)
    await service.generate_and_store("2026-10")
    await service.generate_and_store("2026-10", "acme")
    await service.generate_and_store("2026-10", "globex")
    async with client_of(app, keys["operator*"]) as c:
        listed = (await c.get("/v1/reports")).json()
        assert {(r["month"], r["tenant"]) for r in listed} == {
            ("2026-10", None),
            ("2026-10", "acme"),
            ("2026-10", "globex"),
        }
    async with client_of(app, keys["operator-acme"]) as c:
        listed = (await c.get("/v1/reports")).json()
        assert [(r["month"], r["tenant"]) for r in listed] == [("2026-10", "acme")]
        assert (await c.get("/v1/reports", params={"tenant": "globex"})).status_code == 403


@pytest.mark.parametrize(
    ("fmt", "media"),
    [("md", "text/markdown"), ("html", "text/html"), ("pdf", "application/pdf")],
)
async def test_rendered_formats_have_their_media_type(
    app: FastAPI, keys: dict[str, str], fmt: str, media: str
):
    if importlib.util.find_spec("quarterdeck.reports.render") is None:
        pytest.skip("quarterdeck.reports.render (R2's renderers) is not there yet")
    if fmt == "pdf" and importlib.util.find_spec("weasyprint") is None:
        pytest.skip("weasyprint is not installed")
    async with client_of(app, keys["operator-acme"]) as c:
        r = await c.get("/v1/reports/monthly", params={"month": "2026-10", "format": fmt})
    assert r.status_code == 200, r.text[:500]
    assert r.headers["content-type"].startswith(media)
    assert f'filename="quarterdeck-report-2026-10-acme.{fmt}"' in r.headers["content-disposition"]
    assert len(r.content) > 0


async def test_cli_monthly_list_and_focus_against_the_server(
    app: FastAPI, rt: Runtime, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
):
    forget_settings_env(monkeypatch)
    runner = CliRunner()
    await ReportService(rt.db, rt.settings, clock=lambda: NOW).generate_and_store("2026-10")
    with logs_to_the_real_stderr(monkeypatch):
        async with serving_app(app) as url:

            async def qd(*args: str, key: str = keys["operator-acme"]) -> Any:
                env = {"QUARTERDECK_URL": url, "QUARTERDECK_API_KEY": key}
                return await asyncio.to_thread(runner.invoke, report_cli, list(args), env=env)

            as_json = await qd("monthly", "--month", "2026-10", "--format", "json")
            assert as_json.exit_code == 0, as_json.output
            assert json.loads(as_json.stdout)["runs"]["total"] == 1
            roi = await qd(
                "monthly", "--month", "2026-10", "--format", "json", "--hourly-cost", "100",
                "--minutes-saved", "30",
            )  # fmt: skip
            assert json.loads(roi.stdout)["roi"]["hours_saved"] == pytest.approx(0.5)
            no_out = await qd("monthly", "--month", "2026-10", "--format", "pdf")
            assert no_out.exit_code == 1 and "--out" in no_out.output
            bad = await qd("monthly", "--month", "2026-13", "--format", "json")
            assert bad.exit_code == 1 and "422" in bad.output and "month" in bad.output
            denied = await qd("monthly", "--month", "2026-10", "--tenant", "globex")
            assert denied.exit_code == 1 and "403" in denied.output
            out = tmp_path / "focus.csv"
            focus = await qd("focus", "--month", "2026-10", "--out", str(out))
            assert focus.exit_code == 0, focus.output
            assert out.read_text().splitlines()[0].startswith("BillingPeriodStart,")
            listed = await qd("list", "--json", key=keys["operator*"])
            assert [(r["month"], r["tenant"]) for r in json.loads(listed.stdout)] == [
                ("2026-10", None)
            ]
            empty = await qd("list")
            assert empty.exit_code == 0 and "No stored reports" in " ".join(empty.stdout.split())
