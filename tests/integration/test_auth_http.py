"""Access control over HTTP on the full app (real Postgres): 401, 403, 404, 429 and headers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from quarterdeck.app import create_app
from quarterdeck.runtime import Runtime
from quarterdeck.security.audit.models import EventFilter
from quarterdeck.security.auth import limiter as limiter_module
from quarterdeck.security.auth.permissions import Role

ADMIN = "bootstrap-admin-key-for-tests-0123456789"
PROBLEM = "application/problem+json"


class Deployment:
    def __init__(self, runtime: Runtime, client: httpx.AsyncClient) -> None:
        self.runtime = runtime
        self.client = client

    async def key(self, role: Role | str, tenant: str, name: str = "test") -> str:
        created = await self.runtime.auth.create(name, role, tenant)
        return created.api_key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


Deploy = Callable[..., Awaitable[Deployment]]


@pytest.fixture
async def deploy(make_settings: Callable[..., Any]) -> AsyncIterator[Deploy]:
    """Start a runtime with auth on and the given settings; everything is stopped at the end."""
    started: list[tuple[Runtime, httpx.AsyncClient]] = []

    async def start(**overrides: Any) -> Deployment:
        settings = make_settings(
            auth_enabled=True,
            admin_api_key=ADMIN,
            health_monitor_enabled=False,
            **{"rate_limit_key_per_minute": 0, "rate_limit_tenant_per_minute": 0, **overrides},
        )
        rt = Runtime(settings, with_workers=False)
        await rt.start()
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(settings, rt)), base_url="http://qd"
        )
        started.append((rt, client))
        return Deployment(rt, client)

    yield start
    for rt, client in started:
        await client.aclose()
        await rt.stop()


@pytest.fixture
async def dep(deploy: Deploy) -> Deployment:
    return await deploy()


async def test_no_key_is_401_with_a_bearer_challenge(dep: Deployment):
    r = await dep.client.get("/v1/agent-types")
    assert r.status_code == 401
    assert r.headers["content-type"] == PROBLEM
    assert r.headers["www-authenticate"] == 'Bearer realm="quarterdeck"'
    body = r.json()
    assert body["type"].endswith("/unauthenticated") and body["status"] == 401


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer qd_dev_abcdefgh_" + "x" * 40},
        {"Authorization": "Bearer not-a-key"},
        {"x-api-key": "not-a-key"},
        {"Authorization": f"Basic {ADMIN}"},
    ],
)
async def test_a_wrong_key_is_401_invalid_token(dep: Deployment, headers: dict[str, str]):
    r = await dep.client.get("/v1/agent-types", headers=headers)
    assert r.status_code == 401, r.text
    assert r.headers["content-type"] == PROBLEM
    assert "Bearer" in r.headers["www-authenticate"]


async def test_keys_work_as_bearer_tokens_and_as_x_api_key(dep: Deployment):
    key = await dep.key(Role.submitter, "acme")
    assert (await dep.client.get("/v1/agent-types", headers=bearer(key))).status_code == 200
    assert (await dep.client.get("/v1/agent-types", headers={"x-api-key": key})).status_code == 200
    assert (await dep.client.get("/v1/agent-types", headers=bearer(ADMIN))).status_code == 200


async def test_probes_and_docs_stay_open(dep: Deployment):
    for path in ("/health", "/ready", "/docs", "/openapi.json"):
        assert (await dep.client.get(path)).status_code == 200, path


async def test_a_role_without_the_permission_is_403(dep: Deployment):
    submitter = await dep.key(Role.submitter, "acme")
    r = await dep.client.get("/v1/incidents", headers=bearer(submitter))
    assert r.status_code == 403 and r.headers["content-type"] == PROBLEM
    assert r.json()["permission"] == "incidents:read"
    auditor = await dep.key(Role.auditor, "*")
    assert (await dep.client.get("/v1/agent-types", headers=bearer(auditor))).status_code == 403


async def test_a_tenant_key_cannot_use_a_platform_permission_its_role_has(dep: Deployment):
    local_operator = await dep.key(Role.operator, "acme")
    r = await dep.client.get("/v1/incidents", headers=bearer(local_operator))
    assert r.status_code == 403 and "across tenants" in r.json()["detail"]
    platform_operator = await dep.key(Role.operator, "*")
    assert (await dep.client.get("/v1/incidents", headers=bearer(platform_operator))).is_success


async def test_budgets_another_tenants_is_404_and_setting_one_is_for_the_platform(
    dep: Deployment,
):
    acme = await dep.key(Role.submitter, "acme")
    mine = await dep.client.get("/v1/tenants/acme/budget", headers=bearer(acme))
    assert mine.status_code == 200 and mine.json()["tenant"] == "acme"
    theirs = await dep.client.get("/v1/tenants/globex/budget", headers=bearer(acme))
    assert theirs.status_code == 404 and theirs.headers["content-type"] == PROBLEM
    assert "globex" in theirs.json()["detail"]
    local_operator = await dep.key(Role.operator, "acme")
    put = {"daily_usd": 5}
    r = await dep.client.put("/v1/tenants/acme/budget", json=put, headers=bearer(local_operator))
    assert r.status_code == 403
    ops = await dep.key(Role.operator, "*")
    r = await dep.client.put("/v1/tenants/acme/budget", json=put, headers=bearer(ops))
    assert r.status_code == 200 and r.json()["daily_limit_usd"] == 5


async def test_admins_manage_keys_over_http(dep: Deployment):
    c = dep.client
    r = await c.post(
        "/v1/admin/keys",
        json={"name": "ci", "role": "submitter", "tenant": "acme"},
        headers=bearer(ADMIN),
    )
    assert r.status_code == 201, r.text
    created = r.json()
    key, key_id = created["api_key"], created["id"]
    assert created["created_by"] == "key:bootstrap" and created["status"] == "active"
    me = (await c.get("/v1/me", headers=bearer(key))).json()
    assert me["key_id"] == key_id and me["role"] == "submitter" and me["tenant"] == "acme"
    assert "runs:write" in me["permissions"] and "incidents:read" not in me["permissions"]
    listed = await c.get("/v1/admin/keys", params={"tenant": "acme"}, headers=bearer(ADMIN))
    assert [k["id"] for k in listed.json()["items"]] == [key_id]
    assert "api_key" not in listed.json()["items"][0]
    one = await c.get(f"/v1/admin/keys/{key_id}", headers=bearer(ADMIN))
    assert one.json()["prefix"] == f"qd_dev_{key_id}"
    assert (await c.get("/v1/admin/keys", headers=bearer(key))).status_code == 403
    revoked = await c.delete(f"/v1/admin/keys/{key_id}", headers=bearer(ADMIN))
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    after = await c.get("/v1/me", headers=bearer(key))
    assert after.status_code == 401 and "revoked" in after.json()["detail"]
    assert (await c.delete("/v1/admin/keys/zzzzzzzz", headers=bearer(ADMIN))).status_code == 404
    assert (await c.delete("/v1/admin/keys/NOT-AN-ID", headers=bearer(ADMIN))).status_code == 422


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "role": "admin", "tenant": "acme"}, "tenant"),
        ({"name": "x", "role": "submitter", "tenant": "*"}, "tenant"),
        ({"name": "x", "role": "root", "tenant": "*"}, "role"),
        (
            {"name": "x", "role": "auditor", "tenant": "*", "expires_at": "2001-01-01T00:00:00Z"},
            "expires_at",
        ),
    ],
)
async def test_impossible_keys_are_422_naming_the_field(
    dep: Deployment, body: dict[str, str], field: str
):
    r = await dep.client.post("/v1/admin/keys", json=body, headers=bearer(ADMIN))
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == [field]


async def test_throttled_calls_get_429_with_retry_after_and_ratelimit_headers(
    deploy: Deploy, monkeypatch: pytest.MonkeyPatch
):
    events: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(
        limiter_module,
        "log",
        SimpleNamespace(warning=lambda event, **kw: events.append((event, kw))),
    )
    dep = await deploy(rate_limit_key_per_minute=2, rate_limit_tenant_per_minute=100)
    key = await dep.key(Role.submitter, "acme")
    first = await dep.client.get("/v1/agent-types", headers=bearer(key))
    assert first.status_code == 200
    assert first.headers["ratelimit-limit"] == "2"
    assert first.headers["ratelimit-remaining"] == "1"
    assert int(first.headers["ratelimit-reset"]) in range(1, 31)
    other_tenant = await dep.client.get("/v1/tenants/globex/budget", headers=bearer(key))
    assert other_tenant.status_code == 404  # errors after the count carry the headers too
    assert other_tenant.headers["ratelimit-remaining"] == "0"
    throttled = await dep.client.get("/v1/agent-types", headers=bearer(key))
    assert throttled.status_code == 429
    assert throttled.headers["content-type"] == PROBLEM
    assert throttled.json()["type"].endswith("/rate-limited")
    assert 1 <= int(throttled.headers["retry-after"]) <= 30
    assert throttled.headers["ratelimit-limit"] == "2"
    assert throttled.headers["ratelimit-remaining"] == "0"
    key_id = key.split("_")[2]
    assert events == [
        (
            "auth.rate_limited",
            {
                "key_id": key_id,
                "tenant": "acme",
                "limited_by": ["key"],
                "retry_after_s": int(throttled.headers["retry-after"]),
                "shared": False,
                "suppressed": 0,
            },
        )
    ]
    # another key of the same tenant is not affected by this key's limit
    other = await dep.key(Role.submitter, "acme")
    assert (await dep.client.get("/v1/agent-types", headers=bearer(other))).status_code == 200


async def test_the_tenant_limit_covers_all_its_keys(deploy: Deploy):
    dep = await deploy(rate_limit_key_per_minute=100, rate_limit_tenant_per_minute=2)
    keys = [await dep.key(Role.submitter, "acme", f"k{i}") for i in range(3)]
    codes = [(await dep.client.get("/v1/agent-types", headers=bearer(k))).status_code for k in keys]
    assert codes == [200, 200, 429]
    globex = await dep.key(Role.submitter, "globex")
    assert (await dep.client.get("/v1/agent-types", headers=bearer(globex))).status_code == 200


async def test_development_mode_needs_no_key_and_acts_as_admin(client: httpx.AsyncClient):
    me = await client.get("/v1/me")
    assert me.status_code == 200
    body = me.json()
    assert body["role"] == "admin" and body["method"] == "disabled"
    assert "ratelimit-limit" not in me.headers
    assert (await client.get("/v1/incidents")).status_code == 200


async def test_an_app_requiring_auth_without_the_service_fails_closed(
    make_settings: Callable[..., Any],
):
    settings = make_settings(auth_enabled=True, admin_api_key=ADMIN)
    app = create_app(settings)  # owns its runtime, not started: no lifespan here
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://qd") as c:
        r = await c.get("/v1/agent-types", headers=bearer(ADMIN))
    assert r.status_code == 503


async def test_key_management_over_http_is_refused_while_authentication_is_off(
    client: httpx.AsyncClient,
):
    """Every caller is an anonymous admin with auth off: a key it made would outlive that."""
    attempts = [
        client.post("/v1/admin/keys", json={"name": "x", "role": "admin", "tenant": "*"}),
        client.get("/v1/admin/keys"),
        client.get("/v1/admin/keys/k7m2x9qa"),
        client.delete("/v1/admin/keys/k7m2x9qa"),
    ]
    for attempt in attempts:
        r = await attempt
        assert r.status_code == 409, r.text
        assert r.headers["content-type"] == PROBLEM
        body = r.json()
        assert body["type"].endswith("/auth-off")
        assert "authentication is off" in body["detail"]
        assert "quarterdeck keys create" in body["detail"]
    me = await client.get("/v1/me")  # the rest of development mode is unchanged
    assert me.status_code == 200


async def test_keys_made_while_auth_was_off_are_refused_and_revoked_at_start(deploy: Deploy):
    """Keys an anonymous caller made over HTTP before that was refused (``created_by`` the
    development principal's) never authenticate, and start-up with auth on revokes them."""
    first = await deploy()
    legacy = await first.runtime.auth.create("made-anonymously", Role.admin, "*", actor="key:dev")
    kept = await first.runtime.auth.create("made-properly", Role.admin, "*", actor="cli:alice")
    r = await first.client.get("/v1/me", headers=bearer(legacy.api_key))
    assert r.status_code == 401 and "created while authentication was off" in r.json()["detail"]
    assert (await first.client.get("/v1/me", headers=bearer(kept.api_key))).status_code == 200

    with capture_logs() as logs:
        second = await deploy()  # a process starting with authentication on
    said = [e for e in logs if e["event"] == "auth.keys_made_while_auth_off_revoked"]
    assert [e["key_ids"] for e in said] == [[legacy.id]]
    listed = await second.client.get(f"/v1/admin/keys/{legacy.id}", headers=bearer(ADMIN))
    assert listed.json()["status"] == "revoked" and listed.json()["revoked_by"] == "system:auth-on"
    assert (await second.client.get("/v1/me", headers=bearer(kept.api_key))).status_code == 200
    await second.runtime.audit.flush()
    page = await second.runtime.audit.search(EventFilter(tenant="platform", limit=100))
    revoked = [e for e in page.items if e.event_type == "key.revoked"]
    assert [e.data_accessed[0]["key_id"] for e in revoked] == [legacy.id]
