"""The Gateway and Incidents pages: tenant reach as the API's, totals from recorded calls, and
acknowledging and resolving through the forms (CSRF, confirmation), on the embedded Postgres."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from quarterdeck.app import create_app
from quarterdeck.gateway import repository
from quarterdeck.gateway.models import GatewayCall
from quarterdeck.gateway.reads import GatewayCalls, month_of
from quarterdeck.incidents import outbox_repository as outbox
from quarterdeck.incidents.models import IncidentStatus, ResolvedBy, WindowSpan
from quarterdeck.kit.clock import utcnow
from quarterdeck.kit.wiring import services
from quarterdeck.providers.types import Usage
from quarterdeck.runtime import Runtime
from quarterdeck.security.auth import Role
from quarterdeck.ui.web import duration
from tests.support.ui import HTML, browser_of, csrf_of, started

ADMIN = "ui-gateway-incidents-admin-key-0123456789"
_seq = iter(range(1, 1_000_000))


@pytest.fixture
async def rt(make_settings: Any) -> AsyncIterator[Runtime]:
    quiet = {"health_monitor_enabled": False, "maintenance_enabled": False}
    async with started(make_settings(auth_enabled=True, admin_api_key=ADMIN, **quiet)) as runtime:
        yield runtime


def browser_for(
    rt: Runtime, api_key: str, *, gateway: bool = True
) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    app = create_app(rt.settings, rt)
    if not gateway:  # a process that runs no gateway reads
        services(app).add(GatewayCalls, None)  # type: ignore[arg-type]
    return browser_of(rt, api_key, app=app)


def stat(html: str, name: str) -> str:
    match = re.search(rf'data-stat="{re.escape(name)}">([^<]*)<', html)
    assert match, f"no stat {name!r} in the page"
    return match.group(1).strip()


def call(tenant: str, at: datetime, cost: str, **fields: Any) -> GatewayCall:
    return GatewayCall(
        id=f"gwc_ui{next(_seq):08d}",
        created_at=at,
        tenant=tenant,
        key_id=fields.pop("key_id", "key_a"),
        model=fields.pop("model", "claude-sonnet-4-5"),
        stream=True,
        status=fields.pop("status", 200),
        usage=fields.pop("usage", Usage(input_tokens=100, output_tokens=10)),
        cost_usd=Decimal(cost),
        duration_ms=1500.0,
        **fields,
    )


async def test_gateway_page_totals_tables_paging_and_reach(rt: Runtime) -> None:
    now = utcnow()
    today = max(now - timedelta(seconds=30), now.replace(hour=0, minute=0, second=0, microsecond=0))
    before = now - timedelta(days=3)  # in the last 7 days, not today
    in_month = before >= month_of(now)[0]
    cached = Usage(input_tokens=100, output_tokens=10, cache_read_input_tokens=300)
    calls = [
        call("acme", today, "0.01", usage=cached, session_id="sess-1", run_id="run_gw1"),
        call("acme", today, "0.02", key_id="key_b", model="claude-haiku-4-5", status=500),
        call("acme", before, "0.04"),
        call("globex", today, "1.00", key_id="key_g"),
    ]
    calls += [
        call("bulk", today + timedelta(microseconds=i), "0.001", key_id="key_z") for i in range(55)
    ]
    async with rt.db.acquire() as conn:
        await repository.insert_calls(conn, calls)
    submitter = (await rt.auth.create("sub", Role.submitter, "acme")).api_key
    auditor = (await rt.auth.create("aud", Role.auditor, "*")).api_key

    async with browser_for(rt, submitter) as sub:
        page = await sub.get("/ui/gateway?period=today", headers=HTML)
        assert page.status_code == 200, page.text
        html = page.text
        assert "<h1>Gateway</h1>" in html
        assert stat(html, "calls") == "2" and stat(html, "spend") == "$0.0300"
        assert stat(html, "tokens") == str(110 + 410)
        assert stat(html, "cache-hit") == "60.0%"  # 300 of 500 prompt tokens
        assert 'id="by-tenant"' not in html and "globex" not in html and "key_g" not in html
        assert 'data-group="sess-1"' in html and 'data-group="claude-haiku-4-5"' in html
        assert 'href="/ui/runs/run_gw1"' in html
        week = (await sub.get("/ui/gateway?period=7d", headers=HTML)).text
        assert stat(week, "calls") == "3"
        month = (await sub.get("/ui/gateway", headers=HTML)).text
        assert stat(month, "calls") == str(2 + in_month)
        # Another tenant's figures are refused as the API refuses them, not quietly narrowed.
        assert (await sub.get("/ui/gateway?tenant=globex", headers=HTML)).status_code == 403
        assert (await sub.get("/ui/gateway?tenant=acme", headers=HTML)).status_code == 200
        assert (await sub.get("/ui/gateway?period=year", headers=HTML)).status_code == 422

    async with browser_for(rt, ADMIN) as admin:
        html = (await admin.get("/ui/gateway?period=today", headers=HTML)).text
        assert stat(html, "calls") == str(3 + 55)
        assert 'id="by-tenant"' in html and 'data-group="globex"' in html
        first = re.findall(r'data-call-id="([^"]+)"', html)
        assert len(first) == 50
        nxt = re.search(r'<a rel="next" href="([^"]+)">Next page</a>', html)
        assert nxt
        second = await admin.get("/ui/gateway" + nxt.group(1).replace("&amp;", "&"), headers=HTML)
        assert second.status_code == 200
        rest = re.findall(r'data-call-id="([^"]+)"', second.text)
        assert len(rest) == 8 and not set(rest) & set(first)
        narrowed = (await admin.get("/ui/gateway?period=today&tenant=globex", headers=HTML)).text
        assert stat(narrowed, "calls") == "1" and 'id="by-tenant"' not in narrowed

    async with browser_for(rt, auditor) as aud:
        assert (await aud.get("/ui/gateway", headers=HTML)).status_code == 200
    async with browser_for(rt, ADMIN, gateway=False) as admin:
        down = await admin.get("/ui/gateway", headers=HTML)
        assert down.status_code == 503 and "the gateway is not running" in down.text


async def test_incidents_list_ack_and_resolve_through_the_forms(rt: Runtime) -> None:
    live, _ = await rt.incidents.open_or_update("api", "critical", "Error rate <high>")
    quiet, _ = await rt.incidents.open_or_update("db", "low", "Slow vacuum")
    healed, _ = await rt.incidents.open_or_update(
        "queue", "medium", "Backlog", opened_at=utcnow() - timedelta(minutes=10)
    )
    await rt.incidents.resolve(healed.id, ResolvedBy.auto)
    mttr = await rt.incidents.mttr(30)
    assert mttr is not None and 600 <= mttr < 660
    operator = await rt.auth.create("ops", Role.operator, "*")
    submitter = (await rt.auth.create("sub", Role.submitter, "acme")).api_key
    auditor = (await rt.auth.create("aud", Role.auditor, "*")).api_key

    async with browser_for(rt, operator.api_key) as ops:
        page = await ops.get("/ui/incidents", headers=HTML)
        assert page.status_code == 200, page.text
        html = page.text
        assert "<h1>Incidents</h1>" in html and "Error rate &lt;high&gt;" in html
        assert (
            f'data-incident-id="{live.id}"' in html
            and f'data-incident-id="{healed.id}"' not in html
        )
        assert stat(html, "mttr") == duration(mttr) and stat(html, "auto-share") == "100.0%"
        past = (await ops.get("/ui/incidents?view=resolved", headers=HTML)).text
        assert (
            f'data-incident-id="{healed.id}"' in past
            and f'data-incident-id="{live.id}"' not in past
        )
        critical = (await ops.get("/ui/incidents?severity=critical", headers=HTML)).text
        assert live.id in critical and quiet.id not in critical
        detail = await ops.get(f"/ui/incidents/{live.id}", headers=HTML)
        assert detail.status_code == 200 and 'id="timeline"' in detail.text
        assert 'data-confirm="' in detail.text  # resolve is a danger button
        # A page a maintenance window held says why, in the notifications' Note column.
        async with rt.db.acquire() as conn:
            await outbox.enqueue_notifications(conn, quiet.id, [("slack", "trigger")])
            ids = [n.id for n in await outbox.list_notifications(conn, quiet.id)]
            now = utcnow()
            span = WindowSpan(id="mw_ui_test", starts_at=now, ends_at=now + timedelta(hours=1))
            assert [n.status for n in await outbox.silence(conn, ids, "held", span)] == ["held"]
        held = (await ops.get(f"/ui/incidents/{quiet.id}", headers=HTML)).text
        assert '<td class="note">held: maintenance window mw_ui_test</td>' in held
        missing = await ops.get("/ui/incidents/inc_nope", headers=HTML)
        assert missing.status_code == 404

        # Acknowledge: refused without the session's CSRF token, then done and sent back.
        ack = f"/ui/incidents/{live.id}/ack"
        assert (await ops.post(ack, data={}, headers=HTML)).status_code == 403
        csrf = await csrf_of(ops, "/ui/incidents")
        done = await ops.post(ack, data={"csrf": csrf}, headers=HTML)
        assert done.status_code == 303 and done.headers["location"] == f"/ui/incidents/{live.id}"
        after = await rt.incidents.get(live.id)
        assert after.status is IncidentStatus.acknowledged
        assert after.acknowledged_by == f"key:{operator.id}"

        # Resolve: without confirmed=yes the confirmation page comes back, keeping the note.
        resolve = f"/ui/incidents/{live.id}/resolve"
        asked = await ops.post(resolve, data={"csrf": csrf, "note": "rolled back"}, headers=HTML)
        assert asked.status_code == 200 and "Are you sure?" in asked.text
        assert 'name="note" value="rolled back"' in asked.text
        assert (await rt.incidents.get(live.id)).status is IncidentStatus.acknowledged
        yes = {"csrf": csrf, "note": "rolled back", "confirmed": "yes"}
        assert (
            await ops.post(resolve, data={"note": "x", "confirmed": "yes"}, headers=HTML)
        ).status_code == 403
        resolved = await ops.post(resolve, data=yes, headers=HTML)
        assert resolved.status_code == 303
        final = await rt.incidents.get(live.id)
        assert final.status is IncidentStatus.resolved and final.resolved_by is ResolvedBy.human
        assert final.resolution_note == "rolled back"
        assert [e.type for e in final.timeline][-2:] == ["acknowledged", "resolved"]
        gone = await ops.get(f"/ui/incidents/{live.id}", headers=HTML)
        assert 'id="resolve-form"' not in gone.text

    async with browser_for(rt, submitter) as sub:
        assert (await sub.get("/ui/incidents", headers=HTML)).status_code == 403
        assert (await sub.get(f"/ui/incidents/{quiet.id}", headers=HTML)).status_code == 403
        csrf = await csrf_of(sub)
        posted = await sub.post(f"/ui/incidents/{quiet.id}/ack", data={"csrf": csrf}, headers=HTML)
        assert posted.status_code == 403
    async with browser_for(rt, auditor) as aud:
        assert (await aud.get("/ui/incidents", headers=HTML)).status_code == 403
    assert (await rt.incidents.get(quiet.id)).status is IncidentStatus.open
