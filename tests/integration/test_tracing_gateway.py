"""``chat {model}`` spans of gateway calls, through the full app (``FastGateway``, before the
middleware stack) with the built-in simulated upstream and real Postgres.

A client's ``traceparent`` becomes the span's parent; the span carries the tenant, the Claude
Code session and, once the stream ended (or the client left), the usage and cost; and tracing
never changes a byte of the answer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from starlette.types import Message

from quarterdeck.app import create_app
from quarterdeck.gateway.recorder import CallRecorder
from quarterdeck.gateway.service import Gateway
from quarterdeck.runtime import Runtime
from quarterdeck.security.auth.permissions import Role

if TYPE_CHECKING:
    from tests.support.tracing import Recorded

pytest_plugins = ["tests.support.fixtures", "tests.support.tracing"]
pytestmark = pytest.mark.asyncio

ADMIN = "bootstrap-admin-key-for-the-tracing-tests-0123"
MODEL = "simulated-sonnet"
SESSION = "0b6a2f6e-5d3c-4f1e-9a77-3c1d2e4f5a6b"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def body(stream: bool, prompt: str = "explain the failing test") -> bytes:
    return json.dumps(
        {
            "model": MODEL,
            "max_tokens": 200,
            "stream": stream,
            "messages": [{"role": "user", "content": prompt}],
        }
    ).encode()


class Deployment:
    def __init__(self, rt: Runtime, client: httpx.AsyncClient, app: Any, key: str) -> None:
        self.rt, self.client, self.app, self.key = rt, client, app, key

    @property
    def gateway(self) -> Gateway:
        assert self.rt.gateway is not None
        return self.rt.gateway

    def headers(self, **extra: str) -> dict[str, str]:
        return {
            "x-api-key": self.key,
            "content-type": "application/json",
            "x-claude-code-session-id": SESSION,
            **extra,
        }

    async def upstream_answer(self, raw: bytes) -> tuple[bytes, str | None]:
        """What the upstream itself sends for ``raw``: the bytes the client must get."""
        reply = await self.gateway.upstream.send(
            "POST",
            "/v1/messages",
            [("content-type", "application/json"), ("x-claude-code-session-id", SESSION)],
            raw,
            tenant="acme",
        )
        try:
            data = b"".join([chunk async for chunk in reply.body])
        finally:
            await reply.close()
        return data, reply.header("request-id")

    async def recorded(self) -> list[dict[str, Any]]:
        await cast(CallRecorder, self.gateway.recorder).flush()
        page = await self.client.get(
            "/v1/gateway/calls", params={"session_id": SESSION}, headers={"x-api-key": ADMIN}
        )
        assert page.status_code == 200, page.text
        return list(page.json()["items"])


@pytest.fixture
async def dep(make_settings: Callable[..., Any]) -> AsyncIterator[Deployment]:
    settings = make_settings(
        auth_enabled=True,
        admin_api_key=ADMIN,
        health_monitor_enabled=False,
        provider="simulated",
        gateway_secrets="refuse",
    )
    rt = Runtime(settings, with_workers=False)
    await rt.start()
    try:
        app = create_app(settings, rt)
        key = (await rt.auth.create("claude-code", Role.submitter, "acme")).api_key
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://qd"
        ) as client:
            yield Deployment(rt, client, app, key)
    finally:
        await rt.stop()


def sse_usage(data: bytes) -> dict[str, Any]:
    """The usage an SSE answer reports: ``message_start``'s, updated by ``message_delta``'s."""
    usage: dict[str, Any] = {}
    for line in data.decode().splitlines():
        if not line.startswith("data: "):
            continue
        event = json.loads(line[6:])
        if event["type"] == "message_start":
            usage.update(event["message"]["usage"])
            usage["id"] = event["message"]["id"]
        elif event["type"] == "message_delta":
            usage.update(event["usage"])
            usage["stop_reason"] = event["delta"]["stop_reason"]
    return usage


def the_chat(spans: Recorded) -> ReadableSpan:
    (span,) = spans.named("chat ")
    return span


async def test_a_streamed_call_continues_the_clients_trace_with_session_tenant_and_usage(
    dep: Deployment, spans: Recorded
) -> None:
    raw = body(stream=True)
    reply = await dep.client.post(
        "/v1/messages", content=raw, headers=dep.headers(traceparent=TRACEPARENT)
    )
    assert reply.status_code == 200, reply.text
    expected, request_id = await dep.upstream_answer(raw)
    assert reply.content == expected  # tracing on: not a byte changed

    span = the_chat(spans)
    assert span.name == f"chat {MODEL}" and span.kind is SpanKind.CLIENT
    assert span.context is not None and span.parent is not None
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert f"{span.parent.span_id:016x}" == PARENT_ID and span.parent.is_remote
    attrs = span.attributes or {}
    (call,) = await dep.recorded()
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "simulated"
    assert attrs["gen_ai.request.model"] == MODEL
    assert attrs["gen_ai.request.max_tokens"] == 200
    assert attrs["quarterdeck.tenant"] == "acme"
    assert attrs["quarterdeck.key.id"] == call["key_id"] and call["key_id"]
    assert attrs["quarterdeck.gateway.call_id"] == call["id"]
    assert attrs["gen_ai.conversation.id"] == SESSION
    assert "gen_ai.agent.id" not in attrs  # not a run's call
    assert attrs["quarterdeck.stream"] is True
    assert attrs["http.response.status_code"] == 200
    assert "quarterdeck.client_disconnected" not in attrs and "error.type" not in attrs

    usage = sse_usage(reply.content)
    assert usage["output_tokens"] > 0 and usage["input_tokens"] > 0
    assert attrs["gen_ai.usage.input_tokens"] == usage["input_tokens"] == call["input_tokens"]
    assert attrs["gen_ai.usage.output_tokens"] == usage["output_tokens"] == call["output_tokens"]
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == usage["cache_read_input_tokens"]
    assert attrs["gen_ai.response.id"] == usage["id"]
    assert attrs["gen_ai.response.finish_reasons"] == (usage["stop_reason"],)
    assert attrs["quarterdeck.upstream.request_id"] == request_id == call["upstream_request_id"]
    assert Decimal(call["cost_usd"]) > 0
    assert attrs["quarterdeck.cost_usd"] == pytest.approx(float(Decimal(call["cost_usd"])))


async def test_without_a_wellformed_traceparent_the_call_is_a_new_root(
    dep: Deployment, spans: Recorded
) -> None:
    for extra in ({}, {"traceparent": "00-not-a-trace-01"}):
        spans.clear()
        reply = await dep.client.post(
            "/v1/messages", content=body(False), headers=dep.headers(**extra)
        )
        assert reply.status_code == 200, reply.text
        span = the_chat(spans)
        assert span.parent is None and span.context is not None
        assert f"{span.context.trace_id:032x}" != TRACE_ID
        assert (span.attributes or {})["quarterdeck.stream"] is False
        assert (span.attributes or {})["gen_ai.usage.output_tokens"] > 0

    # A call the gateway refuses itself (a secret in the prompt) ends its span with the error.
    spans.clear()
    refused = await dep.client.post(
        "/v1/messages",
        content=body(False, prompt="deploy with AKIAIOSFODNN7EXAMPLE"),
        headers=dep.headers(traceparent=TRACEPARENT),
    )
    assert refused.status_code == 400, refused.text
    span = the_chat(spans)
    assert span.parent is not None and f"{span.parent.span_id:016x}" == PARENT_ID
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["http.response.status_code"] == 400
    assert (span.attributes or {})["error.type"] == "invalid_request_error"


async def test_a_client_that_leaves_mid_stream_is_on_the_span(
    dep: Deployment, spans: Recorded
) -> None:
    raw = body(stream=True, prompt="a long answer please")
    sent: list[Message] = []
    request_done = False

    async def receive() -> Message:
        nonlocal request_done
        if not request_done:
            request_done = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await _forever()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and sent:
            raise OSError("the client went away")  # how an ASGI 2.4 server says so
        if message["type"] == "http.response.body":
            sent.append(message)

    headers = [(k.encode(), v.encode()) for k, v in dep.headers(traceparent=TRACEPARENT).items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/messages",
        "raw_path": b"/v1/messages",
        "query_string": b"",
        "root_path": "",
        "headers": [*headers, (b"content-length", str(len(raw)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("qd", 80),
    }
    await dep.app(scope, receive, send)
    assert len(sent) == 1
    span = the_chat(spans)
    attrs = span.attributes or {}
    assert attrs["quarterdeck.client_disconnected"] is True
    assert attrs["gen_ai.usage.input_tokens"] > 0  # billed at the end (drained or estimated)
    (call,) = await dep.recorded()
    assert call["client_disconnected"] is True
    assert attrs["gen_ai.usage.output_tokens"] == call["output_tokens"]


async def _forever() -> None:
    import asyncio

    await asyncio.Event().wait()


async def test_with_tracing_off_the_answer_is_byte_identical(dep: Deployment) -> None:
    for stream in (True, False):
        raw = body(stream)
        reply = await dep.client.post(
            "/v1/messages", content=raw, headers=dep.headers(traceparent=TRACEPARENT)
        )
        assert reply.status_code == 200, reply.text
        expected, request_id = await dep.upstream_answer(raw)
        assert reply.content == expected
        assert reply.headers["request-id"] == request_id
        assert not any(k.startswith(("traceparent", "tracestate")) for k in reply.headers)
