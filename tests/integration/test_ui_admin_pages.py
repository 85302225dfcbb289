"""The dashboard's audit, budgets and API-keys pages: the API's reach, forms, confirmations.

Each test signs browsers in with real keys against a real runtime (embedded Postgres) and
checks what each role sees and may do, as the matching ``/v1`` routes decide it.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest

from quarterdeck.app import create_app
from quarterdeck.runtime import Runtime
from quarterdeck.security.auth import Role
from tests.support.ui import HTML, csrf_of, sign_in

ADMIN = "ui-admin-pages-bootstrap-admin-key-0123456789"
SEQ_ROW = re.compile(r'<tr data-audit-seq="\d+" data-tenant="([^"]+)">')


@pytest.fixture
async def rt(make_settings: object) -> AsyncIterator[Runtime]:
    runtime = Runtime(
        make_settings(  # type: ignore[operator]
            auth_enabled=True,
            admin_api_key=ADMIN,
            rate_limit_key_per_minute=0,
            rate_limit_tenant_per_minute=0,
        ),
        with_workers=False,
    )
    await runtime.start()
    yield runtime
    await runtime.stop()


@pytest.fixture
async def app(rt: Runtime) -> object:
    return create_app(rt.settings, rt)


def browser(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
        base_url="http://qd",
    )


async def signed_in(app: object, key: str) -> httpx.AsyncClient:
    client = browser(app)
    response = await sign_in(client, key)
    assert response.status_code == 303, response.text[:300]
    return client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_audit_search_reach_verify_and_export(rt: Runtime, app: object) -> None:
    acme = (await rt.auth.create("acme-dev", Role.submitter, "acme")).api_key
    globex = (await rt.auth.create("globex-dev", Role.submitter, "globex")).api_key
    acme_auditor = (await rt.auth.create("acme-audit", Role.auditor, "acme")).api_key
    auditor = (await rt.auth.create("auditor", Role.auditor, "*")).api_key
    async with browser(app) as api:
        acme_run = (await api.post("/v1/runs", json={"prompt": "a"}, headers=bearer(acme))).json()
        globex_run = (
            await api.post("/v1/runs", json={"prompt": "g"}, headers=bearer(globex))
        ).json()
    await rt.audit.flush()

    everyone = await signed_in(app, auditor)
    page = await everyone.get("/ui/audit", headers=HTML)
    assert page.status_code == 200 and "<h1>Audit log</h1>" in page.text
    assert {"acme", "globex"} <= set(SEQ_ROW.findall(page.text))
    # Search by run id: that run's events only, linked to its page.
    found = await everyone.get(f"/ui/audit?session_id={acme_run['id']}", headers=HTML)
    assert set(SEQ_ROW.findall(found.text)) == {"acme"}
    assert f'href="/ui/runs/{acme_run["id"]}"' in found.text and globex_run["id"] not in found.text
    paged = await everyone.get("/ui/audit?limit=1", headers=HTML)
    assert len(SEQ_ROW.findall(paged.text)) == 1 and 'id="audit-next"' in paged.text
    bad = await everyone.get("/ui/audit?since=yesterday", headers=HTML)
    assert bad.status_code == 422 and 'id="audit-error"' in bad.text
    # The scheduled daily verification of every chain: its last result, once it has run.
    assert "has not run yet" in page.text
    assert rt.maintenance is not None
    ran = await rt.maintenance.tick()
    assert ran["audit.verify"][0] is True
    checked = (await everyone.get("/ui/audit", headers=HTML)).text
    scheduled = checked.split('id="audit-scheduled"')[1].split("</p>")[0]
    assert "Last scheduled verification of every chain" in scheduled and "intact" in scheduled

    # A tenant's auditor: its own chain only; naming another tenant is not found.
    own = await signed_in(app, acme_auditor)
    mine = await own.get("/ui/audit", headers=HTML)
    assert set(SEQ_ROW.findall(mine.text)) == {"acme"}
    assert 'id="audit-scheduled"' not in mine.text  # it covers every tenant's chain
    assert 'name="tenant"' not in mine.text.split('id="audit-search"')[1].split("</form>")[0]
    assert (await own.get("/ui/audit?tenant=globex", headers=HTML)).status_code == 404
    other = await own.get(f"/ui/audit?session_id={globex_run['id']}", headers=HTML)
    assert SEQ_ROW.findall(other.text) == []
    assert (await own.get("/ui/audit/export?tenant=globex", headers=HTML)).status_code == 404

    # Verifying is a costly post: the CSRF token is required.
    assert (await own.post("/ui/audit/verify", headers=HTML)).status_code == 403
    csrf = await csrf_of(own, "/ui/audit")
    verified = await own.post("/ui/audit/verify", data={"csrf": csrf}, headers=HTML)
    assert verified.status_code == 200 and 'id="verify-result"' in verified.text
    assert "intact" in verified.text and "Events checked" in verified.text
    fragment = await own.post(
        "/ui/audit/verify", data={"csrf": csrf}, headers={**HTML, "HX-Request": "true"}
    )
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert "Tenants checked</dt><dd>1<" in fragment.text

    # An edited event: the report says the chain is broken, and where.
    async with rt.db.transaction() as conn:
        await conn.execute("SET LOCAL session_replication_role = replica")  # triggers off
        await conn.execute(
            "UPDATE audit_events SET actor = 'key:innocent' WHERE tenant = 'acme' AND seq = 1"
        )
    broken = await own.post("/ui/audit/verify", data={"csrf": csrf}, headers=HTML)
    assert broken.status_code == 200 and "verify-broken" in broken.text
    assert 'id="verify-problems"' in broken.text and "edited" in broken.text

    # The export is the API's, byte for byte, as a download.
    download = await own.get("/ui/audit/export", headers=HTML)
    assert download.status_code == 200
    assert download.headers["content-disposition"].startswith('attachment; filename="audit-acme-')
    lines = [json.loads(line) for line in download.text.splitlines()]
    assert lines and {line["tenant"] for line in lines} == {"acme"}
    assert all("record" in line and "prev_hash" in line for line in lines)
    async with browser(app) as api:
        exported = await api.get("/v1/audit/export", headers=bearer(acme_auditor))
    assert exported.text == download.text

    # Auditors read budgets but cannot set them, and have no keys page; a submitter has no
    # audit page and no keys page.
    assert (await everyone.get("/ui/budgets", headers=HTML)).status_code == 200
    csrf = await csrf_of(everyone, "/ui/budgets")
    refused = await everyone.post(
        "/ui/budgets/acme", data={"csrf": csrf, "daily_usd": "1"}, headers=HTML
    )
    assert refused.status_code == 403
    assert (await everyone.get("/ui/keys", headers=HTML)).status_code == 403
    submitter = await signed_in(app, acme)
    assert (await submitter.get("/ui/audit", headers=HTML)).status_code == 403
    assert (await submitter.get("/ui/keys", headers=HTML)).status_code == 403
    for client in (everyone, own, submitter):
        await client.aclose()


async def test_budgets_page_reach_editing_and_lowering_below_spend(
    rt: Runtime, app: object
) -> None:
    acme_key = await rt.auth.create("acme-dev", Role.submitter, "acme")
    globex_key = await rt.auth.create("globex-dev", Role.submitter, "globex")
    admin = await signed_in(app, ADMIN)
    page = await admin.get("/ui/budgets", headers=HTML)
    assert page.status_code == 200 and "<h1>Budgets</h1>" in page.text
    csrf = await csrf_of(admin, "/ui/budgets")

    assert (
        await admin.post("/ui/budgets/acme", data={"daily_usd": "5"}, headers=HTML)
    ).status_code == 403  # no CSRF token
    invalid = await admin.post(
        "/ui/budgets/acme", data={"csrf": csrf, "daily_usd": "-3"}, headers=HTML
    )
    assert invalid.status_code == 422 and 'id="budget-error"' in invalid.text
    assert "daily_usd" in invalid.text and await rt.budgets.get("acme") is None
    saved = await admin.post(
        "/ui/budgets/acme",
        data={"csrf": csrf, "daily_usd": "5", "monthly_usd": ""},
        headers=HTML,
    )
    assert saved.status_code == 303 and saved.headers["location"] == "/ui/budgets"
    status = await rt.budgets.status("acme")
    assert status.daily_limit_usd == Decimal(5) and status.monthly_limit_usd is None
    await rt.budgets.set("globex", None, 50)
    keyed = await admin.post(
        f"/ui/budgets/keys/{acme_key.id}",
        data={"csrf": csrf, "monthly_usd": "3"},
        headers=HTML,
    )
    assert keyed.status_code == 303
    assert (await rt.budgets.key_status(acme_key.id)).monthly_limit_usd == Decimal(3)
    listed = await admin.get("/ui/budgets", headers=HTML)
    for row in ('data-budget="tenant:acme"', 'data-budget="tenant:globex"'):
        assert row in listed.text
    assert f'data-budget="key:{acme_key.id}"' in listed.text and "Edit" in listed.text

    # $2 in flight counts as spent: a daily limit of $1 is asked about first.
    assert (
        await rt.holds.reserve(tenant="acme", key_id=None, run_id=None, amount=Decimal(2))
        is not None
    )
    lower = {"csrf": csrf, "daily_usd": "1"}
    asked = await admin.post("/ui/budgets/acme", data=lower, headers=HTML)
    assert asked.status_code == 200 and 'id="confirm-message"' in asked.text
    assert "already spent" in asked.text and 'name="daily_usd" value="1"' in asked.text
    assert (await rt.budgets.status("acme")).daily_limit_usd == Decimal(5)
    done = await admin.post("/ui/budgets/acme", data={**lower, "confirmed": "yes"}, headers=HTML)
    assert done.status_code == 303
    assert (await rt.budgets.status("acme")).daily_limit_usd == Decimal(1)

    await rt.budgets.set_key(globex_key.id, 1, None)
    # A tenant's submitter: its own tenant and keys, read only; the rest is not found.
    submitter = await signed_in(app, acme_key.api_key)
    own = await submitter.get("/ui/budgets", headers=HTML)
    assert own.status_code == 200 and 'data-budget="tenant:acme"' in own.text
    assert "globex" not in own.text and globex_key.id not in own.text
    assert f'data-budget="key:{acme_key.id}"' in own.text
    assert "budget-edit" not in own.text
    assert (await submitter.get("/ui/budgets?tenant=globex", headers=HTML)).status_code == 404
    probe = await submitter.get(f"/ui/budgets?key={globex_key.id}", headers=HTML)
    assert probe.status_code == 404
    csrf = await csrf_of(submitter, "/ui/budgets")
    refused = await submitter.post(
        "/ui/budgets/acme", data={"csrf": csrf, "daily_usd": "100"}, headers=HTML
    )
    assert refused.status_code == 403
    for client in (admin, submitter):
        await client.aclose()


async def test_keys_page_creates_shows_the_key_once_and_revokes(rt: Runtime, app: object) -> None:
    admin = await signed_in(app, ADMIN)
    page = await admin.get("/ui/keys", headers=HTML)
    assert page.status_code == 200 and "<h1>API keys</h1>" in page.text
    csrf = await csrf_of(admin, "/ui/keys")
    form = {"csrf": csrf, "name": "ci bot", "role": "submitter", "tenant": "acme"}
    form |= {"expires_at": "", "gateway_fallback": ""}
    assert (
        await admin.post("/ui/keys", data={**form, "csrf": ""}, headers=HTML)
    ).status_code == 403
    invalid = await admin.post("/ui/keys", data={**form, "tenant": "*"}, headers=HTML)
    assert invalid.status_code == 422 and 'id="key-error"' in invalid.text
    assert 'value="ci bot"' in invalid.text  # the form keeps what was typed

    created = await admin.post("/ui/keys", data=form, headers=HTML)
    assert created.status_code == 201 and "will not be shown again" in created.text
    assert "no-store" in created.headers["cache-control"]
    secret = re.search(r'id="new-key"[^>]* value="(qd_[^"]+)"', created.text)
    assert secret, created.text[:500]
    key_id = re.search(r"Key (\w{8}) created", created.text)
    assert key_id
    listing = await admin.get("/ui/keys?tenant=acme&role=submitter", headers=HTML)
    assert f'data-key-id="{key_id.group(1)}"' in listing.text
    assert secret.group(1) not in listing.text

    bot = await signed_in(app, secret.group(1))  # the key works for signing in
    assert (await bot.get("/ui", headers=HTML)).status_code == 200

    revoke = f"/ui/keys/{key_id.group(1)}/revoke"
    asked = await admin.post(revoke, data={"csrf": csrf}, headers=HTML)
    assert asked.status_code == 200 and 'id="confirm-message"' in asked.text
    assert (await rt.auth.get(key_id.group(1))).status.value == "active"
    done = await admin.post(revoke, data={"csrf": csrf, "confirmed": "yes"}, headers=HTML)
    assert done.status_code == 303
    revoked = await rt.auth.get(key_id.group(1))
    assert revoked.status.value == "revoked" and revoked.revoked_by == "key:bootstrap"
    assert (await bot.get("/ui", headers=HTML)).status_code == 303  # its session ended
    again = await sign_in(bot, secret.group(1))
    assert again.status_code == 401

    # Revoking the key one is signed in with: done, and the next page is the sign-in form.
    mine = await rt.auth.create("me", Role.admin, "*")
    me = await signed_in(app, mine.api_key)
    csrf = await csrf_of(me, "/ui/keys")
    gone = await me.post(
        f"/ui/keys/{mine.id}/revoke", data={"csrf": csrf, "confirmed": "yes"}, headers=HTML
    )
    assert gone.status_code == 303
    after = await me.get("/ui/keys", headers=HTML)
    assert after.status_code == 303 and after.headers["location"].startswith("/ui/login")
    for client in (admin, bot, me):
        await client.aclose()
