"""The Scaling page: the scaler's status and stored decisions for platform operators only, read
through the real :class:`ScalingService` on the embedded Postgres, signed in as a browser is."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI

from quarterdeck.app import create_app
from quarterdeck.kit.wiring import services
from quarterdeck.runtime import Runtime
from quarterdeck.scaling import repository
from quarterdeck.scaling.models import DecisionRecord, ScalerMode
from quarterdeck.scaling.policy import FactorValue, ScalerConfig
from quarterdeck.scaling.service import ScalingService
from quarterdeck.security.auth import Role
from quarterdeck.ui.scaling_page import chart
from tests.support.ui import HTML, browser_of, started

ADMIN = "ui-scaling-bootstrap-admin-key-0123456789"
TARGET = "quarterdeck/quarterdeck-worker"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
INTERVAL = 15.0
ROW = re.compile(r'data-decision-id="(\d+)"')


def app_with(rt: Runtime, mode: ScalerMode = "dry-run", *, now: datetime = NOW) -> FastAPI:
    app = create_app(rt.settings, rt)
    service = ScalingService(
        rt.db,
        mode=mode,
        policy="quarterdeck",
        target=None if mode == "off" else TARGET,
        interval_s=INTERVAL,
        config=ScalerConfig(min_replicas=2, max_replicas=12),
        is_leader=lambda: True,
        clock=lambda: now,
    )
    services(app).add(ScalingService, service)
    return app


async def store(
    rt: Runtime,
    at: datetime,
    current: int,
    desired: int,
    reason: str,
    factors: dict[str, FactorValue] | None = None,
) -> int:
    direction = "up" if desired > current else "down" if desired < current else "hold"
    async with rt.db.acquire() as conn:
        return await repository.insert_decision(
            conn,
            at=at,
            policy="quarterdeck",
            mode="dry-run",
            target=TARGET,
            current=current,
            desired=desired,
            applied=None,
            direction=direction,
            reason=reason,
            factors=factors or {},
            error=None,
        )


@pytest.fixture
async def rt(make_settings: Any) -> AsyncIterator[Runtime]:
    quiet = {"health_monitor_enabled": False, "maintenance_enabled": False}
    async with started(make_settings(auth_enabled=True, admin_api_key=ADMIN, **quiet)) as runtime:
        yield runtime


async def test_an_operator_sees_status_chart_reasons_and_factors(rt: Runtime) -> None:
    await store(rt, NOW - timedelta(minutes=2), 3, 3, "steady at three")
    await store(
        rt,
        NOW - timedelta(seconds=5),
        3,
        8,
        "backlog <b>120</b> runs, oldest 95 s",
        {"queued": 120, "oldest_queued_s": 95.5, "provider_failing": False},
    )
    operator = (await rt.auth.create("op", Role.operator, "*")).api_key
    async with browser_of(rt, operator, app=app_with(rt)) as browser:
        page = await browser.get("/ui/scaling", headers=HTML)
        assert page.status_code == 200, page.text
        html = page.text
        assert 'href="/ui/scaling" aria-current="page"' in html  # the nav entry
        assert 'data-fact="mode"><code>dry-run</code>' in html and TARGET in html
        assert "backlog &lt;b&gt;120&lt;/b&gt; runs, oldest 95 s" in html  # escaped, not markup
        assert "<b>120</b>" not in html
        assert "<dt>queued</dt><dd><code>120</code></dd>" in html
        assert "<dt>oldest_queued_s</dt><dd><code>95.5</code></dd>" in html
        assert "<dt>provider_failing</dt><dd><code>False</code></dd>" in html
        assert "<summary>3 factors</summary>" in html
        assert "<dt>max_replicas</dt><dd><code>12</code></dd>" in html  # the policy's settings
        assert html.count('class="line-desired"') == 1 and html.count('class="line-current"') == 1
        assert 'id="scaler-stale"' not in html and 'id="scaler-off"' not in html
        assert "style=" not in html and "<script>" not in html  # the CSP allows neither

        ups = (await browser.get("/ui/scaling?direction=up", headers=HTML)).text
        rows = ROW.findall(ups)
        assert len(rows) == 1 and "steady at three" not in ups.split('id="decisions"')[1]
        assert (
            await browser.get("/ui/scaling?direction=sideways", headers=HTML)
        ).status_code == 422
        assert (await browser.get("/ui/scaling?cursor=abc", headers=HTML)).status_code == 422

    later = NOW + timedelta(seconds=10 * INTERVAL)
    async with browser_of(rt, operator, app=app_with(rt, now=later)) as browser:
        assert 'id="scaler-stale"' in (await browser.get("/ui/scaling", headers=HTML)).text
    async with browser_of(rt, operator, app=app_with(rt, "off")) as browser:
        off = (await browser.get("/ui/scaling", headers=HTML)).text
        assert 'id="scaler-off"' in off and "QUARTERDECK_SCALER_MODE" in off


async def test_decisions_page_by_cursor(rt: Runtime) -> None:
    ids = [
        await store(rt, NOW - timedelta(minutes=60 - i), 3, 3 + i % 3, f"decision {i}")
        for i in range(55)
    ]
    async with browser_of(rt, ADMIN, app=app_with(rt)) as browser:
        first = (await browser.get("/ui/scaling", headers=HTML)).text
        shown = [int(x) for x in ROW.findall(first)]
        assert shown == list(reversed(ids))[:50]
        older = re.search(r'<a rel="next" href="([^"]+)">Older</a>', first)
        assert older, "no link to older decisions"
        second = await browser.get("/ui/scaling" + older.group(1).replace("&amp;", "&"))
        assert second.status_code == 200
        assert [int(x) for x in ROW.findall(second.text)] == list(reversed(ids))[50:]
        assert 'rel="next"' not in second.text and ">Newest</a>" in second.text


async def test_submitters_and_tenant_keys_do_not_see_the_page(rt: Runtime) -> None:
    await store(rt, NOW, 3, 4, "platform-only reason")
    app = app_with(rt)
    for role, tenant in ((Role.submitter, "acme"), (Role.operator, "acme"), (Role.auditor, "*")):
        key = (await rt.auth.create(f"{role.value}-{tenant}", role, tenant)).api_key
        async with browser_of(rt, key, app=app) as browser:
            denied = await browser.get("/ui/scaling", headers=HTML)
            assert denied.status_code == 403, (role, tenant, denied.status_code)
            assert "platform-only reason" not in denied.text
            home = await browser.get("/ui", headers=HTML)
            assert home.status_code == 200 and 'href="/ui/scaling"' not in home.text


def test_the_chart_draws_steps_from_the_oldest() -> None:
    def decision(i: int, current: int, desired: int) -> DecisionRecord:
        return DecisionRecord(
            id=i,
            at=NOW + timedelta(minutes=i),
            policy="quarterdeck",
            mode="dry-run",
            target=TARGET,
            current=current,
            desired=desired,
            applied=None,
            direction="up" if desired > current else "hold",
            reason="",
            factors={},
        )

    assert chart([decision(1, 2, 2)]) is None
    drawn = chart([decision(2, 2, 4), decision(1, 0, 2)], width=102, height=42)  # newest first
    assert drawn is not None and drawn.top == 4 and drawn.count == 2
    # y = 42 - 2 - v / 4 * 38: 0 -> 40, 2 -> 21, 4 -> 2; x from 2 to 100; a step at x = 100.
    assert drawn.current == "2.0,40.0 100.0,40.0 100.0,21.0"
    assert drawn.desired == "2.0,21.0 100.0,21.0 100.0,2.0"
