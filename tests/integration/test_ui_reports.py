"""The dashboard's Reports page and its downloads, through the app the runtime builds: the same
report and reach rule as ``GET /v1/reports/monthly``, every value escaped, files as attachments."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from quarterdeck.runtime import Runtime
from quarterdeck.security.auth import Role
from quarterdeck.ui.reports_page import recent_months
from tests.support.ui import browser_of, started

ADMIN = "ui-reports-bootstrap-admin-key-0123456789"
HOSTILE = "<script>alert(1)</script>"


@pytest.fixture
async def rt(make_settings: Any) -> AsyncIterator[Runtime]:
    quiet = {"health_monitor_enabled": False, "maintenance_enabled": False}
    async with started(make_settings(auth_enabled=True, admin_api_key=ADMIN, **quiet)) as runtime:
        yield runtime


async def add_run(rt: Runtime, tenant: str, agent_type: str, at: datetime, cost: float) -> None:
    async with rt.db.acquire() as conn:
        await conn.execute(
            """
            INSERT INTO runs (id, tenant, agent_type, operation, prompt, model, status, attempts,
                              max_attempts, created_at, started_at, finished_at, cost_usd, turns,
                              job_id, params)
            VALUES ($1, $2, $3, 'task', 'p', 'claude-sonnet-4-5', 'succeeded', 1, 3, $4::timestamptz, $4,
                    $4 + interval '30 seconds', $5, 2, 0, '{}'::jsonb)
            """,
            f"run_{tenant[:3]}{int(at.timestamp())}",
            tenant,
            agent_type,
            at,
            cost,
        )


async def test_the_page_shows_the_report_and_serves_its_files(rt: Runtime) -> None:
    month = recent_months(datetime.now(UTC))[1]  # last month: a finished one
    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    await add_run(rt, "acme", HOSTILE, start + timedelta(days=2), 0.5)
    await add_run(rt, "globex", "coder", start + timedelta(days=3), 0.25)
    async with browser_of(rt, ADMIN) as ui:
        page = await ui.get("/ui/reports", params={"month": month})
        assert page.status_code == 200, page.text
        html = page.text
        assert "<h1>Reports</h1>" in html and 'id="section-runs"' in html
        assert HOSTILE not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "all tenants" in html.lower()
        pdf = await ui.get("/ui/reports/file", params={"month": month, "format": "pdf"})
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
        assert pdf.headers["content-disposition"].startswith("attachment;")
        focus = await ui.get("/ui/reports/file", params={"month": month, "format": "focus"})
        assert focus.headers["content-type"].startswith("text/csv")
        assert "BilledCost" in focus.text.splitlines()[0]
        data = (await ui.get("/ui/reports/file", params={"month": month, "format": "json"})).json()
        assert data["runs"]["total"] == 2 and data["tenant"] is None

    operator = (await rt.auth.create("op-acme", Role.operator, "acme")).api_key
    async with browser_of(rt, operator) as ui:
        own = await ui.get("/ui/reports", params={"month": month})
        assert own.status_code == 200 and 'name="tenant"' not in own.text  # no tenant picker
        data = (await ui.get("/ui/reports/file", params={"month": month, "format": "json"})).json()
        assert (data["tenant"], data["runs"]["total"]) == ("acme", 1)
        other = await ui.get("/ui/reports", params={"month": month, "tenant": "globex"})
        assert other.status_code == 403
        bad = await ui.get("/ui/reports", params={"month": "2026-13"})
        assert bad.status_code == 422

    submitter = (await rt.auth.create("sub", Role.submitter, "acme")).api_key
    async with browser_of(rt, submitter) as ui:
        assert (await ui.get("/ui/reports")).status_code == 403
