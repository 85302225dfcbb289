"""The full app (``create_app``) serves the gateway's hot routes before its middleware stack
(``FastGateway``), and keeps what that stack did for them: auth with ``gateway:use``, the key's
request limit with ``RateLimit-*`` headers, and every error, unexpected ones too, in Anthropic's
envelope. A runtime with the built-in simulated upstream answers, on real Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from quarterdeck.app import create_app
from quarterdeck.gateway.service import Gateway
from quarterdeck.kit.wiring import services
from quarterdeck.runtime import Runtime
from quarterdeck.security.auth.permissions import Role

ADMIN = "bootstrap-admin-key-for-the-fast-path-0123456789"
BODY = {
    "model": "simulated-sonnet",
    "max_tokens": 50,
    "messages": [{"role": "user", "content": "hi"}],
}


class Seen:
    """A user middleware that notes every path it sees: which requests went through the stack."""

    paths: list[str] = []

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            Seen.paths.append(scope["path"])
        await self.app(scope, receive, send)


@pytest.fixture
async def full(
    make_settings: Callable[..., Any],
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient, FastAPI]]:
    settings = make_settings(
        auth_enabled=True,
        admin_api_key=ADMIN,
        health_monitor_enabled=False,
        provider="simulated",
        rate_limit_key_per_minute=3,
        rate_limit_tenant_per_minute=0,
    )
    rt = Runtime(settings, with_workers=False)
    await rt.start()
    app = create_app(settings, rt)
    app.add_middleware(Seen)
    Seen.paths = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://qd"
    ) as client:
        yield rt, client, app
    await rt.stop()


async def test_hot_routes_skip_the_stack_and_keep_auth_limits_and_envelopes(
    full: tuple[Runtime, httpx.AsyncClient, FastAPI],
) -> None:
    rt, c, _ = full
    key = (await rt.auth.create("cc", Role.submitter, "acme")).api_key
    auditor = (await rt.auth.create("aud", Role.auditor, "acme")).api_key

    ok = await c.post("/v1/messages?beta=true", json=BODY, headers={"x-api-key": key})
    assert ok.status_code == 200, ok.text
    assert ok.json()["model"] == "simulated-sonnet"
    assert (ok.headers["ratelimit-limit"], ok.headers["ratelimit-remaining"]) == ("3", "2")
    counted = await c.post(
        "/v1/messages/count_tokens", json=BODY, headers={"authorization": f"Bearer {key}"}
    )
    assert counted.status_code == 200 and counted.json()["input_tokens"] > 0
    assert counted.headers["ratelimit-remaining"] == "1"
    junk = await c.post("/v1/messages", content=b"{nope", headers={"x-api-key": key})
    assert junk.status_code == 400 and junk.json()["error"]["type"] == "invalid_request_error"
    assert junk.headers["ratelimit-remaining"] == "0"  # errors after the count carry them too
    throttled = await c.post("/v1/messages", json=BODY, headers={"x-api-key": key})
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) >= 1
    assert throttled.json()["error"]["type"] == "rate_limit_error"
    assert throttled.headers["ratelimit-remaining"] == "0"

    nobody = await c.post("/v1/messages", json=BODY)
    assert nobody.status_code == 401
    assert nobody.json()["error"]["type"] == "authentication_error"
    forbidden = await c.post("/v1/messages", json=BODY, headers={"x-api-key": auditor})
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["type"] == "permission_error"

    # None of those went through the app's middleware stack; the other routes still do.
    me = await c.get("/v1/me", headers={"x-api-key": auditor})
    assert me.status_code == 200
    assert Seen.paths == ["/v1/me"]
    # a GET of the same path is not a hot route: the router answers it, in the envelope
    wrong = await c.get("/v1/messages", headers={"x-api-key": key})
    assert wrong.status_code == 405 and wrong.json()["type"] == "error"
    assert Seen.paths == ["/v1/me", "/v1/messages"]


async def test_unexpected_errors_and_a_missing_gateway_answer_in_the_envelope(
    full: tuple[Runtime, httpx.AsyncClient, FastAPI],
) -> None:
    rt, c, app = full
    key = (await rt.auth.create("cc", Role.submitter, "acme")).api_key
    registry = services(app)
    gateway = registry.get(Gateway)
    assert gateway is not None

    class Broken:
        config = gateway.config

        async def messages(self, *args: Any) -> Any:
            raise RuntimeError("a bug")

    registry.add(Gateway, Broken())  # type: ignore[arg-type]
    broken = await c.post("/v1/messages", json=BODY, headers={"x-api-key": key})
    assert broken.status_code == 500 and broken.json()["error"]["type"] == "api_error"
    assert "a bug" not in broken.text  # no internals to the client
    registry._by_key.pop(Gateway)  # this process does not run the gateway
    missing = await c.post("/v1/messages", json=BODY, headers={"x-api-key": key})
    assert missing.status_code == 503 and missing.json()["type"] == "error"
