"""``require(...)`` is introspectable, and routers mounted without an auth service stay usable."""

from __future__ import annotations

from typing import Annotated

import httpx
from fastapi import APIRouter, Depends, FastAPI

from quarterdeck.security.auth import Permission, Principal, require
from quarterdeck.security.auth.dependencies import served_routes


def build() -> FastAPI:
    router = APIRouter(prefix="/v1/things")

    @router.get("/{thing_id}")
    async def get_thing(
        thing_id: str, principal: Annotated[Principal, Depends(require(Permission.RUNS_READ))]
    ) -> dict[str, str]:
        return {"tenant": principal.tenant, "key": principal.key_id}

    @router.post("", dependencies=[Depends(require(Permission.RUNS_WRITE))])
    async def make_thing() -> dict[str, str]:
        return {}

    @router.get("/twice", dependencies=[Depends(require(Permission.RUNS_READ))])
    async def twice(
        principal: Annotated[Principal, Depends(require(Permission.RUNS_READ))],
    ) -> dict[str, str]:
        return {}

    @router.get("/open/list")
    async def open_list() -> list[str]:
        return []

    guarded = APIRouter()

    @guarded.get("/v1/guarded-by-include")
    async def guarded_route() -> dict[str, str]:
        return {}

    app = FastAPI()
    app.include_router(router)
    app.include_router(guarded, dependencies=[Depends(require(Permission.HEALTH_READ))])
    return app


def test_served_routes_report_each_routes_permissions_with_full_paths():
    found = {(r.path, m): r.permissions for r in served_routes(build()) for m in r.methods}
    assert found[("/v1/things/{thing_id}", "GET")] == {Permission.RUNS_READ}
    assert found[("/v1/things", "POST")] == {Permission.RUNS_WRITE}
    assert found[("/v1/things/open/list", "GET")] == frozenset()
    assert found[("/v1/guarded-by-include", "GET")] == {Permission.HEALTH_READ}
    twice = next(r for r in served_routes(build()) if r.path == "/v1/things/twice")
    assert len(twice.requirements) == 2  # the route walk refuses this: it counts twice


def test_require_names_its_permission():
    assert repr(require(Permission.KEYS_WRITE)) == "require('keys:write')"


async def test_an_app_without_an_auth_service_runs_as_development():
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build()), base_url="http://t"
    ) as client:
        r = await client.get("/v1/things/x")
    assert r.status_code == 200
    assert r.json() == {"tenant": "*", "key": "dev"}
