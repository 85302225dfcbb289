"""The Rollouts pages: live rollouts with their real split, pause and last analysis, history, one
rollout with its events, and promote/abort as forms, for platform operators only; through the
real :class:`RolloutService` on the embedded Postgres, signed in as a browser is."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from quarterdeck.app import create_app
from quarterdeck.kit.ids import new_id
from quarterdeck.kit.wiring import services
from quarterdeck.rollouts import repository
from quarterdeck.rollouts.analysis import VersionSample, judge
from quarterdeck.rollouts.models import RolloutCreate
from quarterdeck.rollouts.service import RolloutService
from quarterdeck.rollouts.spec import Analysis
from quarterdeck.runtime import Runtime
from quarterdeck.security.auth import Role
from tests.support.ui import HTML, browser_of, csrf_of, started

ADMIN = "ui-rollouts-bootstrap-admin-key-0123456789"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
IMAGE = "registry.example/claude-agent-api:1.4.2"
LIVE = re.compile(r'data-rollout-id="(ro_[0-9A-Z]+)"')
HISTORY = re.compile(r'data-history-id="(ro_[0-9A-Z]+)"')


@pytest.fixture
async def rt(make_settings: Any) -> AsyncIterator[Runtime]:
    quiet = {"health_monitor_enabled": False, "maintenance_enabled": False}
    async with started(make_settings(auth_enabled=True, admin_api_key=ADMIN, **quiet)) as runtime:
        yield runtime


def app_with(rt: Runtime) -> tuple[FastAPI, RolloutService]:
    app = create_app(rt.settings, rt)
    service = RolloutService(rt.db, clock=lambda: NOW)
    services(app).add(RolloutService, service)
    return app, service


async def record_analysis(rt: Runtime, rollout_id: str) -> None:
    """What the controller stores after applying a weight and judging an interval: the real
    split, and a real verdict (the error rate fails; latency passes)."""
    result = judge(
        Analysis(max_error_rate=0.01, min_samples=100),
        weight=25.0,
        stable=VersionSample(requests=3000, errors=3, latency_p95_s=0.8, rate_per_s=30.0),
        canary=VersionSample(requests=1000, errors=80, latency_p95_s=1.2, rate_per_s=10.0),
    )
    async with rt.db.transaction() as conn:
        row = await repository.get_rollout(conn, rollout_id, lock=True)
        assert row is not None
        await repository.save_state(
            conn,
            rollout_id,
            repository.state_of(row),
            list(row["pending"]),
            last_analysis=dataclasses.asdict(result),
        )
        await repository.set_applied(
            conn,
            rollout_id,
            [],
            traffic_mode="replicas",
            split="1 canary of 4 pods",
            effective_weight=25.0,
        )


async def test_the_page_shows_live_first_then_history_and_one_rollout(rt: Runtime) -> None:
    app, service = app_with(rt)
    done = await service.start(RolloutCreate(image=IMAGE, target="svc-old"), by="key:x")
    await service.abort(done.id, reason="old <b>news</b>", by="key:x")
    blind = await service.start(RolloutCreate(image=IMAGE, target="svc-blind"), by="key:x")
    async with rt.db.transaction() as conn:  # what the controller stores with no Prometheus
        row = await repository.get_rollout(conn, blind.id, lock=True)
        assert row is not None
        no_result = {"verdict": None, "window_s": 60.0, "error": "no Prometheus configured"}
        await repository.save_state(
            conn, blind.id, repository.state_of(row), [], last_analysis=no_result
        )
    live = await service.start(RolloutCreate(image=IMAGE, pauses="4m"), by="key:x")
    await record_analysis(rt, live.id)
    operator = (await rt.auth.create("op", Role.operator, "*")).api_key
    async with browser_of(rt, operator, app=app) as browser:
        page = await browser.get("/ui/rollouts", headers=HTML)
        assert page.status_code == 200, page.text
        html = page.text
        assert 'href="/ui/rollouts" aria-current="page"' in html  # the nav entry
        assert LIVE.findall(html) == [live.id, blind.id]
        assert HISTORY.findall(html) == [live.id, blind.id, done.id]
        assert 'data-verdict="none">no result</span> <span class="error">no Prometheus' in html
        assert html.index('id="live-rollouts"') < html.index('id="rollouts"')
        assert 'data-fact="step">1/5' in html
        assert '5 % <span class="real-weight">(really 25 %)</span>' in html
        assert "1 canary of 4 pods" in html and 'data-fact="pause">4m 00s' in html
        assert 'data-verdict="fail"' in html and 'data-measurement="error-rate"' in html
        cells = html.split('data-measurement="error-rate"')[1].split("</tr>")[0]
        assert ">0.08<" in cells and "1 %" in cells and 'class="verdict v-fail"' in cells
        assert "old &lt;b&gt;news&lt;/b&gt;" in html and "<b>news</b>" not in html
        assert "style=" not in html and "<script>" not in html  # the CSP allows neither

        one = await browser.get(f"/ui/rollouts/{live.id}", headers=HTML)
        assert one.status_code == 200, one.text
        assert 'id="promote-form"' in one.text and 'id="abort-form"' in one.text
        assert (
            'data-event="started"' in one.text
            and f"rollout export {live.id} --format argo" in one.text
        )
        finished = await browser.get(f"/ui/rollouts/{done.id}", headers=HTML)
        assert 'id="rollout-actions"' not in finished.text  # nothing to do with a finished one
        assert 'data-event="aborted"' in finished.text
        assert (await browser.get(f"/ui/rollouts/{new_id('ro')}", headers=HTML)).status_code == 404
        assert (await browser.get("/ui/rollouts/nope", headers=HTML)).status_code == 422
        assert (await browser.get("/ui/rollouts?cursor=nope", headers=HTML)).status_code == 422


async def test_promote_and_abort_with_csrf_and_confirmation(rt: Runtime) -> None:
    app, service = app_with(rt)
    r = await service.start(RolloutCreate(image=IMAGE), by="key:x")
    path = f"/ui/rollouts/{r.id}"
    async with browser_of(rt, ADMIN, app=app) as admin:
        csrf = await csrf_of(admin, path)
        no_csrf = await admin.post(f"{path}/promote", data={}, headers=HTML)
        assert no_csrf.status_code == 403
        assert (await service.get(r.id)).weight == 5

        step = await admin.post(f"{path}/promote", data={"csrf": csrf}, headers=HTML)
        assert step.status_code == 303 and step.headers["location"] == path
        assert (await service.get(r.id)).weight == 20

        no_reason = await admin.post(f"{path}/abort", data={"csrf": csrf}, headers=HTML)
        assert no_reason.status_code == 422
        ask = await admin.post(f"{path}/abort", data={"csrf": csrf, "reason": "bad"}, headers=HTML)
        assert ask.status_code == 200 and 'id="confirm-message"' in ask.text
        assert 'name="reason" value="bad"' in ask.text  # the confirmation re-posts the reason
        assert (await service.get(r.id)).phase == "progressing"  # nothing happened yet
        yes = {"csrf": csrf, "reason": "errors up", "confirmed": "yes"}
        stale = await admin.post(f"{path}/abort", data={**yes, "csrf": "forged"}, headers=HTML)
        assert stale.status_code == 403
        aborted = await admin.post(f"{path}/abort", data=yes, headers=HTML)
        assert aborted.status_code == 303
        after = await service.get(r.id)
        assert after.phase == "aborted" and "errors up" in (after.pause_reason or "")
        kinds = [e.kind for e in after.events]
        assert kinds == ["started", "promoted", "aborted"]
        assert any("key:" in e.message for e in after.events if e.kind == "aborted")

        full = await service.start(RolloutCreate(image=IMAGE), by="key:x")
        done = await admin.post(
            f"/ui/rollouts/{full.id}/promote", data={"csrf": csrf, "full": "yes"}, headers=HTML
        )
        assert done.status_code == 303 and (await service.get(full.id)).weight == 100
        late = await admin.post(f"{path}/promote", data={"csrf": csrf}, headers=HTML)
        assert late.status_code == 409


async def test_submitters_and_tenant_keys_cannot_see_or_act(rt: Runtime) -> None:
    app, service = app_with(rt)
    r = await service.start(RolloutCreate(image="registry.example/secret:9"), by="key:x")
    for role, tenant in ((Role.submitter, "acme"), (Role.operator, "acme"), (Role.auditor, "*")):
        key = (await rt.auth.create(f"{role.value}-{tenant}", role, tenant)).api_key
        async with browser_of(rt, key, app=app) as browser:
            for url in ("/ui/rollouts", f"/ui/rollouts/{r.id}"):
                denied = await browser.get(url, headers=HTML)
                assert denied.status_code == 403, (role, tenant, url, denied.status_code)
                assert "secret:9" not in denied.text
            csrf = await csrf_of(browser)
            acted: httpx.Response = await browser.post(
                f"/ui/rollouts/{r.id}/promote", data={"csrf": csrf}, headers=HTML
            )
            assert acted.status_code == 403, (role, tenant)
            home = await browser.get("/ui", headers=HTML)
            assert home.status_code == 200 and 'href="/ui/rollouts"' not in home.text
    assert (await service.get(r.id)).weight == 5
