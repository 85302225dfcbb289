"""The route walk: every route of the full app is guarded, and its guard behaves.

For every operation in the OpenAPI spec (and every other API route) this calls it with no key
(401), a wrong key (401), a revoked key (401), a role without the permission and, for
platform-only permissions, a single-tenant key whose role has it (403), a key of the right role
(neither 401 nor 403), and, for routes addressing a tenant-owned object, a key of another
tenant (404, never 403). A route without a ``require(...)`` dependency fails the walk, so a
new endpoint cannot ship unguarded. Failures are collected so one run lists every bad route.

To teach the walk a new tenant-owned path parameter, add a factory to ``make_param`` that
creates the object in tenant ``acme``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from quarterdeck.app import create_app
from quarterdeck.gateway import is_gateway_path
from quarterdeck.runtime import Runtime
from quarterdeck.security.auth.dependencies import ServedRoute, served_routes
from quarterdeck.security.auth.permissions import (
    ALL_TENANT_ROLES,
    ROLE_PERMISSIONS,
    Permission,
    Role,
)

ADMIN = "route-walk-bootstrap-admin-key-0123456789"
OWNER, OTHER = "acme", "globex"
OPEN = {("GET", "/health"), ("GET", "/ready")}
OPEN_UNLISTED = ("/docs", "/openapi.json", "/redoc")
# Query parameters every call carries: keeps routes that wait (``/wait``) from waiting.
QUERY = {"timeout": "0"}


class Walk:
    def __init__(self, app: FastAPI, runtime: Runtime, client: httpx.AsyncClient) -> None:
        self.app = app
        self.rt = runtime
        self.client = client
        self._keys: dict[tuple[Role, str], str] = {}
        self._params: dict[str, str] = {}

    async def key(self, role: Role, tenant: str) -> str:
        if (role, tenant) not in self._keys:
            created = await self.rt.auth.create(f"walk-{role}-{tenant}", role, tenant)
            self._keys[(role, tenant)] = created.api_key
        return self._keys[(role, tenant)]

    async def revoked_key(self, role: Role, tenant: str) -> str:
        created = await self.rt.auth.create("walk-revoked", role, tenant)
        await self.rt.auth.revoke(created.id)
        return created.api_key

    async def wrong_key(self) -> str:
        """A real key id with a wrong secret."""
        real = await self.key(Role.admin, "*")
        return real[: -len("x" * 40)] + ("x" * 40 if not real.endswith("x" * 40) else "y" * 40)

    async def make_param(self, name: str) -> str | None:
        """A value for path parameter ``name``; tenant-owned objects belong to OWNER."""
        if name in self._params:
            return self._params[name]
        value: str | None
        if name == "run_id":
            from quarterdeck.runs.models import RunCreate

            run, _ = await self.rt.runs.submit(RunCreate(prompt="route walk"), tenant=OWNER)
            value = run.id
        elif name == "tenant":
            value = OWNER
        elif name == "incident_id":
            incident, _ = await self.rt.incidents.open_or_update(
                "route-walk", "low", "route walk", "", "route-walk"
            )
            value = incident.id
        elif name == "rollout_id":
            from quarterdeck.rollouts.models import RolloutCreate

            value = (await self.rt.rollouts.start(RolloutCreate(image="walk:1"), by=None)).id
        elif name == "approval_id":
            run_id = await self.make_param("run_id")
            assert run_id is not None
            approval = await self.rt.approvals.request(
                run_id=run_id,
                tenant=OWNER,
                tool_use_id="toolu_walk",
                tool="run_command",
                tool_input={"command": "sudo true"},
                rule_id="walk",
                severity="high",
                reason="route walk",
            )
            value = approval.id
        elif name == "key_id":
            value = (await self.rt.auth.create("walk-target", Role.submitter, OWNER)).id
        elif name == "window_id":
            from datetime import UTC, datetime, timedelta

            from quarterdeck.health.maintenance import MaintenanceRequest, MaintenanceService

            start = datetime.now(UTC) + timedelta(days=1)
            request = MaintenanceRequest(
                starts_at=start, ends_at=start + timedelta(hours=1), reason="route walk"
            )
            value = (await MaintenanceService(self.rt.db).create(request, None)).id
        else:
            value = None
        if value is not None:
            self._params[name] = value
        return value

    async def call(self, method: str, url: str, key: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        body = {} if method in ("POST", "PUT", "PATCH") else None
        return await self.client.request(method, url, headers=headers, params=QUERY, json=body)


@pytest.fixture
async def walk(make_settings: Any) -> AsyncIterator[Walk]:
    settings = make_settings(
        auth_enabled=True,
        admin_api_key=ADMIN,
        rate_limit_key_per_minute=0,
        rate_limit_tenant_per_minute=0,
    )
    rt = Runtime(settings, with_workers=False)
    await rt.start()
    app = create_app(settings, rt)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://qd"
    ) as client:
        yield Walk(app, rt, client)
    await rt.stop()


def holders(permission: Permission, *, all_tenants: bool) -> list[Role]:
    return [
        r
        for r in Role
        if permission in ROLE_PERMISSIONS[r]
        and (not all_tenants or r in ALL_TENANT_ROLES)
        and (all_tenants or r is not Role.admin)
    ]


async def check_route(walk: Walk, method: str, route: ServedRoute) -> list[str]:
    """Every problem with one operation, as readable lines."""
    where = f"{method} {route.path}"
    perms = route.permissions
    if (method, route.path) in OPEN:
        if perms:
            return [f"{where}: a probe must stay open but requires {sorted(perms)}"]
        r = await walk.call(method, route.path, None)
        return [] if r.status_code != 401 else [f"{where}: a probe answered 401"]
    if len(route.requirements) != 1:
        found = sorted(r.permission.value for r in route.requirements)
        return [f"{where}: needs exactly one require(Permission.X) dependency, has {found}"]
    (perm,) = perms
    url = route.path
    for name in re.findall(r"{([^}:]+)(?::[^}]*)?}", route.path):
        value = await walk.make_param(name)
        if route.path == "/v1/tenants/{tenant}/erase":  # destructive: never erase OWNER's keys
            value = "walk-erased"  # nothing of it exists: the key that may gets 404
        if value is None:
            return [f"{where}: the walk cannot make a {{{name}}}; add it to Walk.make_param"]
        url = re.sub(r"{" + name + r"(?::[^}]*)?}", value, url)
    tenant_owned = not perm.platform_only and "{" in route.path
    problems: list[str] = []

    def expect(response: httpx.Response, wanted: int, who: str) -> None:
        if response.status_code != wanted:
            problems.append(f"{where} as {who}: {response.status_code}, expected {wanted}")
        elif is_gateway_path(route.path):  # Anthropic's clients read Anthropic's envelope
            if response.json().get("type") != "error" or "error" not in response.json():
                problems.append(f"{where} as {who}: {wanted} is not Anthropic's error envelope")
        elif response.headers.get("content-type") != "application/problem+json":
            problems.append(f"{where} as {who}: {wanted} is not problem+json")

    r = await walk.call(method, url, None)
    expect(r, 401, "no key")
    if r.status_code == 401 and "Bearer" not in r.headers.get("www-authenticate", ""):
        problems.append(f"{where}: 401 without a WWW-Authenticate: Bearer challenge")
    expect(await walk.call(method, url, await walk.wrong_key()), 401, "a wrong key")

    allowed_here = holders(perm, all_tenants=perm.platform_only) or [Role.admin]
    owner_role = allowed_here[0]
    owner_tenant = "*" if perm.platform_only or owner_role is Role.admin else OWNER
    revoked = await walk.revoked_key(owner_role, owner_tenant)
    expect(await walk.call(method, url, revoked), 401, "a revoked key")

    lacking = [r for r in Role if perm not in ROLE_PERMISSIONS[r]]
    for role in lacking:
        tenant = "*" if role is Role.admin else OWNER
        expect(await walk.call(method, url, await walk.key(role, tenant)), 403, f"{role}@{tenant}")
    if perm.platform_only:
        for role in holders(perm, all_tenants=False):
            who = f"{role}@{OWNER}"
            expect(await walk.call(method, url, await walk.key(role, OWNER)), 403, who)

    if tenant_owned:
        for role in holders(perm, all_tenants=False):
            r = await walk.call(method, url, await walk.key(role, OTHER))
            expect(r, 404, f"{role}@{OTHER} (another tenant's object)")

    r = await walk.call(method, url, await walk.key(owner_role, owner_tenant))
    if r.status_code in (401, 403) or (tenant_owned and r.status_code == 404):
        problems.append(
            f"{where} as {owner_role}@{owner_tenant}, who may: {r.status_code} {r.text[:200]}"
        )
    return problems


async def test_every_route_is_guarded_and_the_guard_behaves(walk: Walk):
    spec = (await walk.client.get("/openapi.json")).json()
    documented = {
        (method.upper(), path)
        for path, ops in spec["paths"].items()
        for method in ops
        if method in ("get", "post", "put", "patch", "delete")
    }
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    # The dashboard (/ui: a session cookie, not a key) has its own walk: test_ui_route_walk.py.
    for route in [r for r in served_routes(walk.app) if not r.path.startswith("/ui")]:
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            seen.add((method, route.path))
            problems += await check_route(walk, method, route)
            op = spec["paths"].get(route.path, {}).get(method.lower())
            if (method, route.path) not in OPEN and op is not None and not op.get("security"):
                problems.append(f"{method} {route.path}: the OpenAPI operation shows no security")
    assert documented <= seen, f"operations without a route: {documented - seen}"
    assert len(seen) >= 15, "the walk found suspiciously few routes"
    assert problems == [], "\n".join(problems)


async def test_the_documentation_stays_open(walk: Walk):
    for path in OPEN_UNLISTED:
        assert (await walk.client.get(path)).status_code == 200, path
