"""The gateway relay end to end: the real ``anthropic`` SDK -> the gateway (uvicorn, real
Postgres for holds and call records) -> the Messages API stand-in as the upstream.

Nothing is patched. The stand-in is extended only to keep each request's raw bytes and query
and to answer ``count_tokens``, so the tests can compare what reached "Anthropic" byte for byte.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from quarterdeck.budgets.holds import BudgetHolds
from quarterdeck.budgets.service import BudgetService
from quarterdeck.chaos import messages_api as api
from quarterdeck.chaos.fake_http import RecordedRequest
from quarterdeck.chaos.messages_api import MessagesAPIServer
from quarterdeck.config import Settings
from quarterdeck.exceptions import QuarterdeckError
from quarterdeck.gateway import anthropic_error_response, is_gateway_path
from quarterdeck.gateway import api as gateway_api
from quarterdeck.gateway.meter import Metered
from quarterdeck.gateway.models import CallFilter, CallView
from quarterdeck.gateway.prices import GatewayPrices
from quarterdeck.gateway.recorder import CallRecorder
from quarterdeck.gateway.repository import list_calls
from quarterdeck.gateway.service import Gateway
from quarterdeck.kit.wiring import services
from quarterdeck.providers.pricing import PriceTable
from quarterdeck.providers.types import Usage
from quarterdeck.resilience.breaker import BreakerConfig, Breakers, breaker_name
from quarterdeck.resilience.retry import RetryPolicy
from quarterdeck.security.auth.service import AuthService
from quarterdeck.store.pool import Database

UPSTREAM_KEY = "sk-upstream-secret-0123456789"
CLIENT_KEY = "sk-client-key-must-not-travel"
ADMIN = "bootstrap-admin-key-for-gateway-tests-0123"
MODEL = "claude-sonnet-4-5"
FAST = RetryPolicy(schedule=(0.01,), jitter=0.0, max_attempts=2, max_retry_after=5.0)
TABLE = PriceTable.load()
PRICES = GatewayPrices(TABLE)


class RecordingAPI(MessagesAPIServer):
    """The stand-in, also keeping raw bodies and queries, and answering ``count_tokens``."""

    def __init__(self) -> None:
        super().__init__()
        self.raw: list[bytes] = []
        self.queries: list[str] = []

    async def record(self, request: Request) -> RecordedRequest:
        raw = await request.body()  # Starlette caches it; the base class reads it again
        with self._lock:
            self.raw.append(raw)
            self.queries.append(request.url.query)
        return await super().record(request)

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self.raw.clear()
            self.queries.clear()

    def routes(self) -> list[Route]:
        return [
            *super().routes(),
            Route("/v1/messages/count_tokens", self._count_tokens, methods=["POST"]),
        ]

    def _default(self, model: str, payload: Any) -> Any:
        """Echo the model asked for, as the real API does (the base stand-in names its own)."""
        return api.message(api.text("ok"), model=model) if model else super()._default(model, {})

    async def _count_tokens(self, request: Request) -> Response:
        await self.record(request)
        return JSONResponse({"input_tokens": 42}, headers={"request-id": "req_count"})


@pytest.fixture(scope="module")
def upstream_server() -> Iterator[RecordingAPI]:
    server = RecordingAPI().start()
    yield server
    server.stop()


@pytest.fixture
def upstream(upstream_server: RecordingAPI) -> RecordingAPI:
    upstream_server.reset()
    return upstream_server


def error_app(app: FastAPI) -> None:
    """What ``app.py``'s one handler does on gateway paths (the lead wires it there)."""

    async def handler(request: Request, exc: Exception) -> Response:
        assert is_gateway_path(request.url.path)
        return anthropic_error_response(exc)

    for kind in (QuarterdeckError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, handler)


@dataclass
class Stack:
    url: str
    gateway: Gateway
    recorder: CallRecorder
    breakers: Breakers
    db: Database
    auth: AuthService | None = None

    def client(self, key: str = CLIENT_KEY, **kwargs: Any) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(base_url=self.url, api_key=key, max_retries=0, **kwargs)

    async def calls(self, expected: int = 1) -> list[CallView]:
        """The recorded calls, oldest first, once ``expected`` of them are written."""
        for _ in range(200):
            await self.recorder.flush()
            async with self.db.acquire() as conn:
                page = await list_calls(conn, CallFilter(limit=100), None)
            if len(page.items) >= expected:
                return list(reversed(page.items))
            await asyncio.sleep(0.02)
        raise AssertionError(f"expected {expected} recorded call(s)")


Serve = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def serve(
    db: Database, make_settings: Callable[..., Settings], upstream: RecordingAPI
) -> AsyncIterator[Serve]:
    """Start a gateway (uvicorn on a free port) with the given settings over the stand-in."""
    stopped: list[Callable[[], Awaitable[None]]] = []

    async def start(
        *,
        auth: bool = False,
        simulated: bool = False,
        trip_after: int = 3,
        fast: bool = True,
        **overrides: Any,
    ) -> Stack:
        """``fast``: serve the hot routes as ``app.py`` does, through ``FastGateway`` before
        the app's stack; else through the routes themselves (any other app)."""
        base: dict[str, Any] = (
            {}
            if simulated
            else {
                "gateway_upstream_url": upstream.base_url,
                "gateway_upstream_api_key": UPSTREAM_KEY,
            }
        )
        settings = make_settings(**{**base, **overrides})
        recorder = CallRecorder(db, flush_interval_s=0.05)
        await recorder.start()
        breakers = Breakers(config=BreakerConfig(failure_threshold=trip_after, open_for_s=30.0))
        gateway = gateway_api.build_gateway(
            settings,
            prices=PRICES,
            recorder=recorder,
            holds=BudgetHolds(db),
            breakers=breakers,
            known_models=TABLE.models,
            policy=FAST,
        )
        app = FastAPI()
        services(app).add(Gateway, gateway)
        auth_service = AuthService(db, required=True, bootstrap_key=ADMIN) if auth else None
        if auth_service is not None:
            services(app).add(AuthService, auth_service)
        error_app(app)
        app.include_router(gateway_api.router)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        asgi = gateway_api.FastGateway(app) if fast else app
        server = uvicorn.Server(uvicorn.Config(asgi, log_level="warning", lifespan="off"))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)

        async def stop() -> None:
            server.should_exit = True
            await task
            await gateway.aclose()
            await recorder.aclose()

        stopped.append(stop)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return Stack(url, gateway, recorder, breakers, db, auth_service)

    yield start
    for stop in stopped:
        await stop()


def usage_of(view: CallView) -> Usage:
    return Usage(
        input_tokens=view.input_tokens,
        output_tokens=view.output_tokens,
        cache_creation_input_tokens=view.cache_write_5m_tokens + view.cache_write_1h_tokens,
        cache_creation_5m_tokens=view.cache_write_5m_tokens,
        cache_creation_1h_tokens=view.cache_write_1h_tokens,
        cache_read_input_tokens=view.cache_read_tokens,
    )


def priced(model: str, usage: dict[str, Any]) -> Decimal:
    metered = Metered(usage=Usage.from_dict(usage), finished=True)
    metered.usage.cache_creation_5m_tokens = usage["cache_creation"]["ephemeral_5m_input_tokens"]
    metered.usage.cache_creation_1h_tokens = usage["cache_creation"]["ephemeral_1h_input_tokens"]
    return PRICES.cost(model, metered)[0]


# -- the happy paths, through the real SDK ----------------------------------------------------
@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "routed"])
async def test_non_streaming_message(serve: Serve, upstream: RecordingAPI, fast: bool) -> None:
    stack = await serve(fast=fast)
    usage = api.make_usage(12, 7, cache_read=300, cache_5m=40, cache_1h=60)
    upstream.script([api.message(api.text("hello there"), usage=usage, model=MODEL)])
    msg = await stack.client().messages.create(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    )
    assert msg.content[0].type == "text" and msg.content[0].text == "hello there"
    assert msg.usage.cache_read_input_tokens == 300
    (call,) = await stack.calls()
    assert (call.model, call.status, call.stream, call.tenant) == (MODEL, 200, False, "default")
    assert (call.input_tokens, call.output_tokens, call.cache_read_tokens) == (12, 7, 300)
    assert (call.cache_write_5m_tokens, call.cache_write_1h_tokens) == (40, 60)
    assert call.cost_usd == priced(MODEL, usage) and not call.cost_estimated
    assert call.upstream_request_id and call.upstream_request_id.startswith("req_")


async def test_streaming_thinking_tool_use_and_cache(serve: Serve, upstream: RecordingAPI) -> None:
    stack = await serve(gateway_tenant_upstream_keys={"acme": "sk-acme-upstream"})
    usage = api.make_usage(20, 90, cache_read=2000, cache_5m=0, cache_1h=100)
    reply = api.message(
        api.thinking("Let me look at the file first."),
        api.text("Reading it."),
        api.tool_use("read_file", {"path": "src/app.py"}),
        usage=usage,
        model=MODEL,
    )
    upstream.script([reply])
    async with stack.client().messages.stream(
        model=MODEL,
        max_tokens=2000,
        messages=[{"role": "user", "content": "fix it"}],
        extra_headers={
            "x-claude-code-session-id": "sess-1",
            "x-quarterdeck-run": "run_01M95CK6W5QJCMBZXQT6TNPDWQ",
            "x-quarterdeck-tenant": "acme",  # honoured: the dev principal acts for every tenant
        },
    ) as stream:
        final = await stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use"]
    assert final.content[2].input == {"path": "src/app.py"}  # type: ignore[union-attr]
    assert final.usage.output_tokens == 90 and final.usage.cache_read_input_tokens == 2000
    (call,) = await stack.calls()
    assert call.stream and call.status == 200 and call.ttfb_ms is not None
    assert (call.session_id, call.run_id) == ("sess-1", "run_01M95CK6W5QJCMBZXQT6TNPDWQ")
    assert (call.input_tokens, call.output_tokens, call.cache_write_1h_tokens) == (20, 90, 100)
    assert call.cost_usd == priced(MODEL, usage) and not call.cost_estimated
    assert call.tenant == "acme"
    got = upstream.requests[0].headers
    assert "x-quarterdeck-run" not in got and got["x-api-key"] == "sk-acme-upstream"


async def test_tokens_per_minute_per_key(serve: Serve, upstream: RecordingAPI) -> None:
    stack = await serve(gateway_key_tokens_per_minute=100)
    upstream.script([api.message(api.text("ok"), usage=api.make_usage(60, 40))])
    messages = [{"role": "user", "content": "x" * 120}]
    await stack.client().messages.create(model=MODEL, max_tokens=5, messages=messages)
    with pytest.raises(anthropic.RateLimitError) as info:  # 100 tokens used this minute
        await stack.client().messages.create(model=MODEL, max_tokens=5, messages=messages)
    assert info.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert int(info.value.response.headers["retry-after"]) >= 1
    assert "x-should-retry" not in info.value.response.headers  # a throttle: retrying works
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "routed"])
async def test_headers_and_body_bytes_arrive_unchanged(
    serve: Serve, upstream: RecordingAPI, fast: bool
) -> None:
    stack = await serve(fast=fast)
    # Odd spacing, key order and non-ASCII text: any re-serialisation would change the bytes.
    body = (
        '{"messages":[{"role":"user","content":"h\\u00e9llo  \u00e9"}],  "max_tokens": 5,'
        '"model":"claude-sonnet-4-5","system":[{"type":"text","text":"x-anthropic-billing-'
        'header: cc_version=1","cache_control":{"type":"ephemeral"}}]}'
    ).encode()
    sent = {
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "claude-code-20250219,made-up-beta-2099-01-01,context-1m-2025-08-07",
        "anthropic-workspace-id": "wrkspc_123",
        "anthropic-dangerous-direct-browser-access": "true",
        "x-claude-code-session-id": "5d1c7c1e-0000-4000-8000-000000000000",
        "content-type": "application/json",
        "authorization": f"Bearer {CLIENT_KEY}",
    }
    async with httpx.AsyncClient(base_url=stack.url) as client:
        r = await client.post("/v1/messages?beta=true", content=body, headers=sent)
    assert r.status_code == 200, r.text
    assert upstream.raw == [body]
    assert upstream.queries == ["beta=true"]
    got = upstream.requests[0].headers
    for name, value in sent.items():
        if name != "authorization":
            assert got[name] == value, name
    assert got["x-api-key"] == UPSTREAM_KEY and "authorization" not in got
    assert all(CLIENT_KEY not in v for v in got.values())
    assert r.headers["x-quarterdeck-served-model"] == MODEL
    assert r.headers["anthropic-ratelimit-requests-limit"] == "50"  # passed through


async def test_upstream_cookies_never_ride_along(serve: Serve, upstream: RecordingAPI) -> None:
    stack = await serve()  # one shared client serves every tenant: it must keep no cookies
    upstream.script([api.message(api.text("a"), headers={"set-cookie": "__cf_bm=abc; Path=/"})] * 2)
    for _ in range(2):
        await stack.client().messages.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert [r.headers.get("cookie") for r in upstream.requests] == [None, None]


# -- errors: upstream verbatim, the gateway's own in Anthropic's envelope ----------------------
@pytest.mark.parametrize(
    ("status", "error_type", "message", "headers", "attempts"),
    [
        (400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000", {}, 1),
        (404, "not_found_error", "model: claude-nope", {}, 1),
        (
            429,
            "rate_limit_error",
            "Number of request tokens has exceeded",
            {"retry-after": "30"},
            1,
        ),
        (529, "overloaded_error", "Overloaded", {}, 2),
    ],
)
async def test_upstream_errors_come_back_verbatim(
    serve: Serve,
    upstream: RecordingAPI,
    status: int,
    error_type: str,
    message: str,
    headers: dict[str, str],
    attempts: int,
) -> None:
    stack = await serve(gateway_retry_after_cap=5.0)
    fixed = {"request-id": "req_upstream_fixed", **headers}
    upstream.script([api.error(status, error_type, message, headers=fixed) for _ in range(2)])
    expected = JSONResponse(api.error(status, error_type, message).body).body
    async with httpx.AsyncClient(base_url=stack.url) as client:
        r = await client.post(
            "/v1/messages",
            json={"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        )
    assert r.status_code == status
    assert r.content == expected
    assert r.headers["request-id"] == "req_upstream_fixed"
    for name, value in headers.items():
        assert r.headers[name] == value
    assert len(upstream.requests) == attempts  # 429 retry-after 30 s > cap: no retry
    (call,) = await stack.calls()
    assert (call.status, call.error_type) == (status, error_type) and call.cost_usd == 0


async def test_sdk_sees_upstream_error_types(serve: Serve, upstream: RecordingAPI) -> None:
    stack = await serve()
    upstream.script([api.error(400, "invalid_request_error", "prompt is too long")])
    with pytest.raises(anthropic.BadRequestError) as info:
        await stack.client().messages.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "prompt is too long"},
    }


async def test_529_is_retried_before_the_first_byte(serve: Serve, upstream: RecordingAPI) -> None:
    stack = await serve()
    upstream.script([api.error(529, "overloaded_error", "Overloaded"), api.message(api.text("ok"))])
    async with stack.client().messages.stream(
        model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
    ) as stream:
        text = await stream.get_final_text()
    assert text == "ok" and len(upstream.requests) == 2
    (call,) = await stack.calls()
    assert call.status == 200


async def test_no_retry_after_the_first_byte(serve: Serve, upstream: RecordingAPI) -> None:
    stack = await serve()
    reply = api.message(api.text("a fairly long answer, cut short"), model=MODEL)
    upstream.script([api.stream_error(reply, after=4), api.message(api.text("never"))])
    payload = {"model": MODEL, "max_tokens": 50, "stream": True, "messages": []}
    async with httpx.AsyncClient(base_url=stack.url) as client:
        r = await client.post("/v1/messages", json=payload)
    assert r.status_code == 200
    assert b"event: error" in r.content and b"overloaded_error" in r.content
    assert b"never" not in r.content and len(upstream.requests) == 1
    (call,) = await stack.calls()
    assert call.error_type == "overloaded_error" and call.input_tokens == 10
    assert call.cost_estimated  # no message_stop: the output is a floor estimate


async def test_open_breaker_answers_529_overloaded(serve: Serve, upstream: RecordingAPI) -> None:
    stack = await serve()
    for _ in range(3):
        await stack.breakers.record_failure(breaker_name("anthropic", MODEL))
    with pytest.raises(anthropic.APIStatusError) as info:
        await stack.client().messages.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == 529
    assert info.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert int(info.value.response.headers["retry-after"]) >= 1
    assert upstream.requests == []


async def test_fallback_names_the_model_that_served(serve: Serve, upstream: RecordingAPI) -> None:
    stack = await serve(
        gateway_fallback=True, model_fallbacks={"claude-opus-4-1": ["claude-haiku-4-5"]}
    )
    upstream.set_fault("529", model="claude-opus-4-1")
    raw = await stack.client().messages.with_raw_response.create(
        model="claude-opus-4-1", max_tokens=5, messages=[{"role": "user", "content": "x"}]
    )
    assert raw.headers["x-quarterdeck-served-model"] == "claude-haiku-4-5"
    assert [json.loads(b)["model"] for b in upstream.raw] == [
        "claude-opus-4-1",
        "claude-opus-4-1",
        "claude-haiku-4-5",
    ]
    (call,) = await stack.calls()
    assert (call.model, call.served_model, call.status) == (
        "claude-opus-4-1",
        "claude-haiku-4-5",
        200,
    )


async def _ask(stack: Stack, key: str, model: str) -> tuple[int, str, str | None]:
    """Status, the body's ``model`` (or error type) and the served-model header of one call."""
    client = stack.client(key)
    try:
        raw = await client.messages.with_raw_response.create(
            model=model, max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
        message = await raw.parse()
        return raw.status_code, message.model, raw.headers["x-quarterdeck-served-model"]
    except anthropic.APIStatusError as exc:
        error = exc.body["error"]["type"]  # type: ignore[index]
        return exc.status_code, error, exc.response.headers.get("x-quarterdeck-served-model")
    finally:
        await client.close()


async def test_fallback_is_per_key(serve: Serve, upstream: RecordingAPI, db: Database) -> None:
    """Only a key whose config allows it fails over; the response then names the model that
    served it. The deployment's switch is off, so a key without config gets the error."""
    stack = await serve(
        auth=True, trip_after=100, model_fallbacks={"claude-opus-4-1": ["claude-sonnet-4-5"]}
    )
    auth = stack.auth
    assert auth is not None
    own = await auth.create("own", "submitter", "acme", gateway_fallback=["claude-haiku-4-5"])
    chain = await auth.create("chain", "submitter", "acme", gateway_fallback=["*"])
    plain = await auth.create("plain", "submitter", "acme")
    never = await auth.create("never", "submitter", "acme", gateway_fallback=[])
    assert (own.gateway_fallback, plain.gateway_fallback, never.gateway_fallback) == (
        ["claude-haiku-4-5"],
        None,
        [],
    )
    upstream.set_fault("529", model="claude-opus-4-1")
    primary = "claude-opus-4-1"
    assert await _ask(stack, own.api_key, primary) == (200, "claude-haiku-4-5", "claude-haiku-4-5")
    assert await _ask(stack, chain.api_key, primary) == (
        200,
        "claude-sonnet-4-5",
        "claude-sonnet-4-5",
    )
    for key in (plain, never):
        assert await _ask(stack, key.api_key, primary) == (529, "overloaded_error", primary)
    # Two attempts on the primary per call (one retry), then the key's fallback or nothing.
    assert [json.loads(b)["model"] for b in upstream.raw] == [
        *(primary, primary, "claude-haiku-4-5"),
        *(primary, primary, "claude-sonnet-4-5"),
        *(primary, primary),
        *(primary, primary),
    ]
    calls = await stack.calls(4)
    assert [(c.key_id, c.served_model, c.status) for c in calls] == [
        (own.id, "claude-haiku-4-5", 200),
        (chain.id, "claude-sonnet-4-5", 200),
        (plain.id, primary, 529),
        (never.id, primary, 529),
    ]
    # Changed on the live key: it now fails over, at once (this process's key cache is told;
    # another replica's within its TTL).
    changed = await auth.set_gateway_fallback(plain.id, ["claude-haiku-4-5"])
    assert changed.gateway_fallback == ["claude-haiku-4-5"]
    assert (await _ask(stack, plain.api_key, primary))[:2] == (200, "claude-haiku-4-5")


async def test_the_budget_hold_covers_the_dearest_model_a_key_may_fail_over_to(
    serve: Serve, upstream: RecordingAPI, db: Database
) -> None:
    """A fallback may cost more than the model asked for: the hold reserves the dearest."""
    stack = await serve(auth=True)
    assert stack.auth is not None
    cheap, dear = "claude-haiku-4-5", "claude-opus-4-1"
    plain = await stack.auth.create("plain", "submitter", "acme")
    upgrade = await stack.auth.create("up", "submitter", "acme", gateway_fallback=[dear])
    body = {"model": cheap, "max_tokens": 1000, "messages": [{"role": "user", "content": "x"}]}
    estimate = len(json.dumps(body, separators=(",", ":"))) + 1
    low, high = PRICES.worst_case(cheap, estimate, 1000), PRICES.worst_case(dear, estimate, 1000)
    assert high > 2 * low
    await BudgetService(db).set("acme", (low + high) / 2, None)  # room for cheap, not dear
    async with httpx.AsyncClient(base_url=stack.url) as client:
        refused = await client.post(
            "/v1/messages",
            content=json.dumps(body, separators=(",", ":")),
            headers={"x-api-key": upgrade.api_key},
        )
        served = await client.post(
            "/v1/messages",
            content=json.dumps(body, separators=(",", ":")),
            headers={"x-api-key": plain.api_key},
        )
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "billing_error"
    assert served.status_code == 200, served.text
    assert [json.loads(b)["model"] for b in upstream.raw] == [cheap]


async def test_a_key_that_opts_out_never_fails_over_when_the_deployment_allows_it(
    serve: Serve, upstream: RecordingAPI, db: Database
) -> None:
    stack = await serve(
        auth=True,
        gateway_fallback=True,
        model_fallbacks={"claude-opus-4-1": ["claude-haiku-4-5"]},
    )
    auth = stack.auth
    assert auth is not None
    never = await auth.create("never", "submitter", "acme", gateway_fallback=[])
    plain = await auth.create("plain", "submitter", "acme")
    upstream.set_fault("529", model="claude-opus-4-1")
    assert (await _ask(stack, never.api_key, "claude-opus-4-1"))[:2] == (529, "overloaded_error")
    assert (await _ask(stack, plain.api_key, "claude-opus-4-1"))[:2] == (200, "claude-haiku-4-5")


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "routed"])
async def test_bad_json_and_missing_fields_are_400_envelopes(serve: Serve, fast: bool) -> None:
    stack = await serve(fast=fast)
    async with httpx.AsyncClient(base_url=stack.url) as client:
        bad = await client.post("/v1/messages", content=b"{not json")
        no_model = await client.post("/v1/messages", json={"messages": []})
    for r in (bad, no_model):
        assert r.status_code == 400
        body = r.json()
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
        assert body["request_id"] == r.headers["request-id"]
    assert "model" in no_model.json()["error"]["message"]


async def test_body_over_the_limit_is_413(serve: Serve, upstream: RecordingAPI) -> None:
    stack = await serve(gateway_max_body_bytes=2048)
    big = b'{"model":"m","messages":[],"pad":"' + b"x" * 5000 + b'"}'

    async def chunked() -> AsyncIterator[bytes]:  # no content-length: caught while reading
        for i in range(0, len(big), 512):
            yield big[i : i + 512]

    async with httpx.AsyncClient(base_url=stack.url) as client:
        declared = await client.post("/v1/messages", content=big)
        streamed = await client.post("/v1/messages", content=chunked())
    for r in (declared, streamed):
        assert r.status_code == 413
        assert r.json()["error"]["type"] == "request_too_large"
    assert upstream.requests == []


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "routed"])
async def test_auth_errors_use_the_envelope_and_keys_stay_home(
    serve: Serve, upstream: RecordingAPI, fast: bool
) -> None:
    stack = await serve(auth=True, fast=fast)
    with pytest.raises(anthropic.AuthenticationError) as info:
        await stack.client("not-a-key").messages.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    upstream.script([api.message(api.text("ok"))])
    msg = await stack.client(ADMIN).messages.create(
        model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
    )
    assert msg.content[0].type == "text"
    got = upstream.requests[0].headers
    assert got["x-api-key"] == UPSTREAM_KEY and all(ADMIN not in v for v in got.values())


async def test_head_probes_answer_without_a_key(serve: Serve) -> None:
    stack = await serve(auth=True)
    async with httpx.AsyncClient(base_url=stack.url) as client:
        for path in ("/", "/api/hello"):
            assert (await client.head(path)).status_code == 200


# -- budgets, count_tokens, models ------------------------------------------------------------
async def test_spent_budget_is_429_billing_error_but_count_tokens_passes(
    serve: Serve, upstream: RecordingAPI, db: Database
) -> None:
    stack = await serve()
    await BudgetService(db).set("default", Decimal(0), None)
    with pytest.raises(anthropic.RateLimitError) as info:
        await stack.client().messages.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    response = info.value.response
    assert response.headers["x-should-retry"] == "false"
    assert 1 <= int(response.headers["retry-after"]) <= 86400
    assert info.value.body["error"]["type"] == "billing_error"  # type: ignore[index]
    assert upstream.requests == []
    counted = await stack.client().messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "x"}]
    )
    assert counted.input_tokens == 42
    assert upstream.requests[0].path == "/v1/messages/count_tokens"
    assert upstream.requests[0].headers["x-api-key"] == UPSTREAM_KEY
    (call,) = await stack.calls()  # the refusal is recorded; count_tokens is not
    assert (call.status, call.error_type) == (429, "billing_error")


async def test_a_budgeted_call_holds_and_settles(
    serve: Serve, upstream: RecordingAPI, db: Database
) -> None:
    stack = await serve()
    await BudgetService(db).set("default", Decimal(100), None)
    upstream.script([api.message(api.text("ok"), event_delay=0.05)])
    async with stack.client().messages.stream(
        model=MODEL, max_tokens=1000, messages=[{"role": "user", "content": "x"}]
    ) as stream:
        async for _ in stream:
            async with db.acquire() as conn:  # while the call runs, its worst case is held
                held = await conn.fetchval("SELECT count(*) FROM budget_holds")
            assert held == 1
            break
        await stream.get_final_message()
    await stack.calls()
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM budget_holds") == 0


async def test_models_lists_upstream_and_price_table_fast(
    serve: Serve, upstream: RecordingAPI
) -> None:
    stack = await serve()
    client = stack.client()
    first = [m.id async for m in client.models.list(limit=1000)]
    assert "claude-haiku-4-5-20251001" in first and "claude-opus-4-1" in first
    loop = asyncio.get_running_loop()
    started = loop.time()
    again = [m.id async for m in client.models.list(limit=1000)]
    assert loop.time() - started < 0.5 and again == first
    assert sum(r.path == "/v1/models" for r in upstream.requests) == 1  # cached


# -- the client leaves mid-stream --------------------------------------------------------------
async def _leave_early(url: str) -> None:
    payload = {"model": MODEL, "max_tokens": 500, "stream": True, "messages": []}
    async with httpx.AsyncClient(base_url=url) as client:
        async with client.stream("POST", "/v1/messages", json=payload) as r:
            async for _ in r.aiter_raw():
                break  # leave after the first bytes


@pytest.mark.parametrize("drain", [True, False])
async def test_client_disconnect_is_billed(
    serve: Serve, upstream: RecordingAPI, drain: bool
) -> None:
    stack = await serve(gateway_drain_on_disconnect=drain)
    usage = api.make_usage(50, 400)
    upstream.script([api.message(api.text("word " * 60), usage=usage, event_delay=0.02)])
    await _leave_early(stack.url)
    (call,) = await stack.calls()
    assert call.client_disconnected and call.input_tokens == 50
    if drain:  # read to the end: the upstream's own final usage, exactly priced
        assert call.output_tokens == 400 and not call.cost_estimated
        assert call.cost_usd == priced(MODEL, usage)
    else:  # stopped: the floor estimate, marked as such, never free
        assert call.cost_estimated and call.cost_usd > 0
    assert stack.gateway.drains.active == 0


# -- no upstream key: the simulated upstream ---------------------------------------------------
async def test_simulated_upstream_with_the_sdk(serve: Serve, upstream: RecordingAPI) -> None:
    stack = await serve(simulated=True)
    client = stack.client()
    async with client.messages.stream(
        model="simulated-sonnet",
        max_tokens=2000,
        messages=[{"role": "user", "content": "fix the bug in src/parser.py"}],
        thinking={"type": "enabled", "budget_tokens": 1024},
        # A breakpoint, or the simulated upstream (like the API) caches nothing.
        system=[{"type": "text", "text": "be careful", "cache_control": {"type": "ephemeral"}}],
    ) as stream:
        events = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert "parser" in final.content[1].text  # type: ignore[union-attr]
    assert final.usage.output_tokens > 0 and final.usage.cache_creation_input_tokens
    assert "text" in events and events[-1] == "message_stop"
    plain = await client.messages.create(
        model="claude-sonnet-4-5", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    )
    assert plain.model == "claude-sonnet-4-5" and plain.stop_reason == "end_turn"
    assert (await client.messages.count_tokens(model="x", messages=[])).input_tokens >= 1
    async with httpx.AsyncClient(base_url=stack.url) as raw:
        junk = await raw.post("/v1/messages/count_tokens", json={"junk": True})
    assert junk.status_code == 400  # as the real API answers, through the gateway verbatim
    assert junk.json()["error"] == {
        "type": "invalid_request_error",
        "message": "model: Field required",
    }
    assert "simulated-opus" in [m.id async for m in client.models.list()]
    calls = await stack.calls(2)
    assert [c.stream for c in calls] == [True, False] and all(c.cost_usd > 0 for c in calls)
    assert upstream.requests == []
