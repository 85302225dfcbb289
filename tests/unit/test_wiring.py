"""``kit.wiring``: services keyed by type, and the FastAPI dependencies that hand them out."""

from __future__ import annotations

from typing import Annotated, Protocol

import httpx
from fastapi import Depends, FastAPI

from quarterdeck.app import install_error_handlers
from quarterdeck.kit.wiring import Services, provide, provide_optional, services


class Greeter:
    def __init__(self, word: str) -> None:
        self.word = word


class Named(Protocol):
    @property
    def name(self) -> str: ...


class Thing:
    name = "thing"


Greeting = Annotated[Greeter, Depends(provide(Greeter))]
MaybeGreeting = Annotated[Greeter | None, Depends(provide_optional(Greeter))]
NamedThing = Annotated[Named, Depends(provide(Named, unavailable="nothing named here"))]


def build() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/greet")
    async def greet(greeter: Greeting) -> dict[str, str]:
        return {"word": greeter.word}

    @app.get("/maybe")
    async def maybe(greeter: MaybeGreeting) -> dict[str, str | None]:
        return {"word": greeter.word if greeter else None}

    @app.get("/name")
    async def name(named: NamedThing) -> dict[str, str]:
        return {"name": named.name}

    return app


async def get(app: FastAPI, path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        return await c.get(path)


def test_registry_returns_what_was_added_under_its_key() -> None:
    registry = Services()
    greeter = Greeter("hi")
    assert registry.get(Greeter) is None and Greeter not in registry
    registry.add(Greeter, greeter)
    assert registry.get(Greeter) is greeter and Greeter in registry
    registry.add(Greeter, Greeter("hello"))  # replaces
    assert registry.get(Greeter) is not greeter


def test_each_app_has_its_own_registry() -> None:
    one, two = FastAPI(), FastAPI()
    services(one).add(Greeter, Greeter("hi"))
    assert services(one) is services(one)
    assert services(two).get(Greeter) is None


def test_provide_returns_the_same_dependency_for_the_same_key() -> None:
    assert provide(Greeter) is provide(Greeter)
    assert provide(Greeter) is not provide(Greeter, unavailable="x")
    assert provide_optional(Greeter) is provide_optional(Greeter)


async def test_a_registered_service_reaches_the_route() -> None:
    app = build()
    services(app).add(Greeter, Greeter("hi"))
    services(app).add(Named, Thing())
    assert (await get(app, "/greet")).json() == {"word": "hi"}
    assert (await get(app, "/maybe")).json() == {"word": "hi"}
    assert (await get(app, "/name")).json() == {"name": "thing"}


async def test_a_missing_service_is_a_503_and_an_optional_one_is_none() -> None:
    app = build()
    r = await get(app, "/greet")
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert "Greeter is not available" in r.json()["detail"]
    assert (await get(app, "/name")).json()["detail"] == "nothing named here"
    assert (await get(app, "/maybe")).json() == {"word": None}


async def test_overrides_can_target_the_provided_dependency() -> None:
    app = build()
    app.dependency_overrides[provide(Greeter)] = lambda: Greeter("stub")
    assert (await get(app, "/greet")).json() == {"word": "stub"}
