"""The dashboard's route walk: every ``/ui`` route is guarded, and its guard behaves.

The API's walk (``test_auth_routes.py``) proves every ``/v1`` route checks its key; this one does
the same for the pages, which a session cookie opens instead of a key. For every route under
``/ui`` (the static files aside) it checks, as a browser and as a script would see it:

- exactly one ``page(...)``/``action(...)`` (``UiRequirement``) in its dependency tree, so a new
  page cannot ship unguarded (only the sign-in form is open);
- no session: a page sends a browser to sign in (303 to ``/ui/login?next=...``) and answers
  anything else 401 problem+json; a post is 401;
- a session whose role lacks the permission, or a single-tenant session for a platform-only
  permission: 403; a session that has it: neither 401 nor 403;
- a post without the session's CSRF token, or with another session's: 403;
- a tenant-owned object (made in ``acme``) asked for by a ``globex`` session that has the
  permission: 404, never 403 or 200.

The walk runs against a real server (uvicorn on a free port), not the in-process transport:
httpx's ASGI transport buffers a whole response, and the live routes (Server-Sent Events) never
end on their own. Every GET is streamed and closed after its headers when it is an event stream.

To teach the walk a new tenant-owned path parameter, add a factory to ``make_param`` that
creates the object in tenant ``acme``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute

from quarterdeck.app import create_app
from quarterdeck.exceptions import QuarterdeckError
from quarterdeck.runtime import Runtime
from quarterdeck.security.auth.permissions import (
    ALL_TENANT_ROLES,
    ROLE_PERMISSIONS,
    Permission,
    Role,
)
from quarterdeck.security.auth.sessions import SESSION_COOKIE
from quarterdeck.ui import is_ui_path
from quarterdeck.ui.guard import RunsReader, UiRequirement, action, page
from quarterdeck.ui.paths import LOGIN_PATH
from tests.support.live_app import serving
from tests.support.ui import HTML, sign_in

ADMIN = "ui-route-walk-bootstrap-admin-key-0123456789"
OWNER, OTHER = "acme", "globex"
OPEN = {("GET", LOGIN_PATH), ("POST", LOGIN_PATH)}
PROBLEM = "application/problem+json"
TIMEOUT = httpx.Timeout(20.0)


@dataclass(frozen=True)
class UiRoute:
    path: str
    methods: frozenset[str]
    requirements: tuple[UiRequirement, ...]


def ui_requirements(dependant: Any) -> list[UiRequirement]:
    """Every distinct ``page``/``action`` in a route's dependency tree (FastAPI runs each once)."""
    found: dict[int, UiRequirement] = {}
    stack = [dependant]
    while stack:
        node = stack.pop()
        if isinstance(node.call, UiRequirement):
            found[id(node.call)] = node.call
        stack.extend(node.dependencies)
    return list(found.values())


def ui_routes(app: FastAPI) -> list[UiRoute]:
    """Every API route of ``app`` under ``/ui`` (the static mount is not an ``APIRoute``)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # pragma: no cover - FastAPI before lazy router inclusion
        routed: list[Any] = [r for r in app.routes if isinstance(r, APIRoute)]
        pairs = [(r.path, r.methods, r.dependant) for r in routed]
    else:
        pairs = [
            (c.path or "", c.methods, c.dependant)
            for c in iter_route_contexts(app.routes)
            if isinstance(c.original_route, APIRoute)
        ]
    return [
        UiRoute(path, frozenset(methods or ()), tuple(ui_requirements(dependant)))
        for path, methods, dependant in pairs
        if is_ui_path(path)
    ]


@dataclass
class Session:
    client: httpx.AsyncClient
    csrf: str


class Walk:
    def __init__(self, app: FastAPI, runtime: Runtime, url: str) -> None:
        self.app = app
        self.rt = runtime
        self.url = url
        self._keys: dict[tuple[Role, str], str] = {}
        self._sessions: dict[tuple[Role, str], Session] = {}
        self._params: dict[str, str] = {}
        self._clients: list[httpx.AsyncClient] = []

    def client(self) -> httpx.AsyncClient:
        made = httpx.AsyncClient(base_url=self.url, timeout=TIMEOUT)
        self._clients.append(made)
        return made

    async def close(self) -> None:
        for made in self._clients:
            await made.aclose()

    async def key(self, role: Role, tenant: str) -> str:
        if (role, tenant) not in self._keys:
            created = await self.rt.auth.create(f"ui-walk-{role}-{tenant}", role, tenant)
            self._keys[(role, tenant)] = created.api_key
        return self._keys[(role, tenant)]

    async def session(self, role: Role, tenant: str) -> Session:
        """A signed-in browser for a key of ``role`` in ``tenant`` (kept while it lives)."""
        if (role, tenant) in self._sessions:
            known = self._sessions[(role, tenant)]
            if await self._alive(known):
                return known
        browser = self.client()
        signed = await sign_in(browser, await self.key(role, tenant))
        assert signed.status_code == 303, f"{role}@{tenant} cannot sign in: {signed.text[:300]}"
        token = browser.cookies.get(SESSION_COOKIE)
        made = Session(browser, (await self.rt.sessions.resolve(token)).csrf)
        self._sessions[(role, tenant)] = made
        return made

    async def _alive(self, session: Session) -> bool:
        """False once a walked route (signing out) ended the session."""
        try:
            await self.rt.sessions.resolve(session.client.cookies.get(SESSION_COOKIE))
        except QuarterdeckError:
            return False
        return True

    async def make_param(self, name: str) -> str | None:
        """A value for path parameter ``name``; tenant-owned objects belong to OWNER."""
        if name in self._params:
            return self._params[name]
        value: str | None
        if name == "run_id":
            from quarterdeck.runs.models import RunCreate

            run, _ = await self.rt.runs.submit(RunCreate(prompt="ui route walk"), tenant=OWNER)
            value = run.id
        elif name == "tenant":
            value = OWNER
        elif name == "incident_id":
            incident, _ = await self.rt.incidents.open_or_update(
                "ui-route-walk", "low", "ui route walk", "", "ui-route-walk"
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
                tool_use_id="toolu_ui_walk",
                tool="run_command",
                tool_input={"command": "sudo true"},
                rule_id="ui-walk",
                severity="high",
                reason="ui route walk",
            )
            value = approval.id
        elif name == "key_id":
            value = (await self.rt.auth.create("ui-walk-target", Role.submitter, OWNER)).id
        else:
            value = None
        if value is not None:
            self._params[name] = value
        return value

    async def call(
        self,
        client: httpx.AsyncClient,
        method: str,
        url: str,
        *,
        html: bool = True,
        csrf: str | None = None,
    ) -> httpx.Response:
        """One request as a browser makes it; an event stream is closed after its headers."""
        headers = dict(HTML) if html else {}
        if method == "GET":
            async with client.stream("GET", url, headers=headers) as response:
                if not response.headers.get("content-type", "").startswith("text/event-stream"):
                    await response.aread()
                return response
        form = {"csrf": csrf} if csrf is not None else {}
        return await client.request(method, url, headers=headers, data=form)


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
    try:
        async with serving(rt) as url:
            # The routes are read from an app built as the served one is (``serving`` builds
            # its own with ``create_app`` and does not hand it out).
            walked = Walk(create_app(settings, rt), rt, url)
            try:
                yield walked
            finally:
                await walked.close()
    finally:
        await rt.stop()


def holders(permission: Permission, *, all_tenants: bool) -> list[Role]:
    return [
        r
        for r in Role
        if permission in ROLE_PERMISSIONS[r]
        and (not all_tenants or r in ALL_TENANT_ROLES)
        and (all_tenants or r is not Role.admin)
    ]


def tenant_of(role: Role) -> str:
    return "*" if role is Role.admin else OWNER


async def check_route(walk: Walk, method: str, route: UiRoute) -> list[str]:
    """Every problem with one page or form, as readable lines."""
    where = f"{method} {route.path}"
    if (method, route.path) in OPEN:
        if route.requirements:
            return [f"{where}: the sign-in form must stay open but requires {route.requirements}"]
        if method != "GET":
            return []  # signing in is walked by every session the walk opens
        r = await walk.call(walk.client(), method, route.path)
        return [] if r.status_code == 200 else [f"{where}: the sign-in form answered {r}"]
    if len(route.requirements) != 1:
        return [f"{where}: needs exactly one page(...)/action(...) guard, has {route.requirements}"]
    (requirement,) = route.requirements
    perm = requirement.permission
    if requirement.mutation != (method != "GET"):
        kind = "action" if method != "GET" else "page"
        return [f"{where}: guarded by {requirement!r}; a {method} needs {kind}(...)"]
    url = route.path
    for name in re.findall(r"{([^}:]+)(?::[^}]*)?}", route.path):
        value = await walk.make_param(name)
        if value is None:
            return [f"{where}: the walk cannot make a {{{name}}}; add it to Walk.make_param"]
        url = re.sub(r"{" + name + r"(?::[^}]*)?}", value, url)
    tenant_owned = not perm.platform_only and "{" in route.path
    post = method != "GET"
    problems: list[str] = []

    def expect(response: httpx.Response, wanted: int, who: str) -> None:
        if response.status_code != wanted:
            problems.append(
                f"{where} as {who}: {response.status_code}, expected {wanted}: {snippet(response)}"
            )

    # No session at all.
    stranger = walk.client()
    r = await walk.call(stranger, method, url)
    if post:
        expect(r, 401, "no session (a browser)")
    else:
        expect(r, 303, "no session (a browser)")
        wanted = f"{LOGIN_PATH}?next={quote(url, safe='')}"
        if r.status_code == 303 and r.headers.get("location") != wanted:
            problems.append(f"{where}: sends a stranger to {r.headers.get('location')!r}")
    r = await walk.call(stranger, method, url, html=False)
    expect(r, 401, "no session (not a browser)")
    if r.status_code == 401 and r.headers.get("content-type") != PROBLEM:
        problems.append(f"{where}: 401 to a script is not problem+json")

    # Roles without the permission; single-tenant holders of a platform-only one.
    lacking = [(role, tenant_of(role)) for role in Role if perm not in ROLE_PERMISSIONS[role]]
    if perm.platform_only:
        lacking += [(role, OWNER) for role in holders(perm, all_tenants=False)]
    for role, tenant in lacking:
        session = await walk.session(role, tenant)
        r = await walk.call(session.client, method, url, csrf=session.csrf)
        expect(r, 403, f"{role}@{tenant}")

    allowed_here = holders(perm, all_tenants=perm.platform_only) or [Role.admin]
    owner_role = allowed_here[0]
    owner_tenant = "*" if perm.platform_only or owner_role is Role.admin else OWNER

    if post:
        owner = await walk.session(owner_role, owner_tenant)
        r = await walk.call(owner.client, method, url)
        expect(r, 403, f"{owner_role}@{owner_tenant} without the CSRF token")
        stranger_csrf = (await walk.session(Role.auditor, OTHER)).csrf
        r = await walk.call(owner.client, method, url, csrf=stranger_csrf)
        expect(r, 403, f"{owner_role}@{owner_tenant} with another session's CSRF token")

    if tenant_owned:
        for role in holders(perm, all_tenants=False):
            session = await walk.session(role, OTHER)
            r = await walk.call(session.client, method, url, csrf=session.csrf)
            expect(r, 404, f"{role}@{OTHER} (another tenant's object)")

    owner = await walk.session(owner_role, owner_tenant)
    r = await walk.call(owner.client, method, url, csrf=owner.csrf)
    if (
        r.status_code in (401, 403)
        or r.status_code >= 500
        or (tenant_owned and r.status_code == 404)
    ):
        problems.append(
            f"{where} as {owner_role}@{owner_tenant}, who may: {r.status_code} {snippet(r)}"
        )
    return problems


def snippet(response: httpx.Response) -> str:
    """What an answer says, for a failure line: a page's main text, not its markup."""
    try:
        text = response.text
    except httpx.ResponseNotRead:
        return "(an event stream)"
    if "<main" in text:
        text = re.sub(r"<[^>]*>", " ", text[text.index("<main") :])
    return " ".join(text.split())[:200]


async def test_every_page_is_guarded_and_the_guard_behaves(walk: Walk) -> None:
    routes = ui_routes(walk.app)
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    # Signing out ends the walking session; walk it last so nothing after it needs a new one.
    for route in sorted(routes, key=lambda r: (r.path.endswith("/logout"), r.path)):
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            seen.add((method, route.path))
            problems += await check_route(walk, method, route)
    print(f"\nwalked {len(seen)} dashboard routes: {sorted(seen)}")
    assert OPEN <= seen, f"the sign-in routes moved: {sorted(seen)}"
    assert ("GET", "/ui") in seen and ("POST", "/ui/logout") in seen
    assert problems == [], "\n".join(problems)


def test_a_page_without_a_guard_fails_the_walk() -> None:
    """The walk's own check: a route with no guard, or two, is found out."""
    app = FastAPI()
    router = APIRouter()

    @router.get("/ui/naked")
    async def naked() -> None: ...

    @router.get("/ui/twice", dependencies=[Depends(page(Permission.RUNS_READ))])
    async def twice(viewer: RunsReader) -> None: ...

    @router.post("/ui/once")
    async def once(viewer: Any = Depends(action(Permission.RUNS_WRITE))) -> None: ...

    app.include_router(router)
    found = {r.path: len(r.requirements) for r in ui_routes(app)}
    assert found == {"/ui/naked": 0, "/ui/twice": 2, "/ui/once": 1}
