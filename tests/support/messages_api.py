"""A local, scripted fake of the Anthropic Messages API, for driving the real SDK in tests.

Tests push what the "API" should do next with ``server.script([...])``: a message (served as JSON,
or converted to a faithful SSE stream when the request asked for ``stream: true``), an HTTP error
(429 with ``retry-after``, 529 ``overloaded_error``, 500, 400...), a slow reply, or a stream that
breaks with an ``error`` event part-way. Every request received is recorded in
``server.requests`` so a test can assert what the SDK actually put on the wire. Nothing patches the
SDK: the only seam is the base URL.

:class:`ScriptedServer` is the transport-agnostic part (uvicorn in a background thread, a FIFO of
scripted replies, the request log); :mod:`tests.support.openai_api` reuses it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

_ids = itertools.count(1)


def _next_id(prefix: str) -> str:
    return f"{prefix}_{next(_ids):06d}"


@dataclass
class Reply:
    """One scripted response.

    ``body`` is the JSON body (a message, or an error). For a streaming request a 200 ``body`` is
    turned into SSE events by the server; ``events`` overrides that with an explicit list of
    ``(event_name, data)`` pairs (``event_name`` may be ``None`` for data-only SSE, as OpenAI uses).
    ``delay`` is slept before the status line is sent, ``event_delay`` between SSE events.
    """

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    events: list[tuple[str | None, Any]] | None = None
    event_delay: float = 0.0


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    json: Any


class ScriptedServer:
    """uvicorn + starlette on a free localhost port, in a daemon thread with its own event loop."""

    def __init__(self) -> None:
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- scripting ------------------------------------------------------------------------
    def script(self, replies: Iterable[Reply]) -> None:
        """Queue replies; each request consumes the next one (FIFO)."""
        with self._lock:
            self._queue.extend(replies)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self.requests.clear()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def _next_reply(self) -> Reply | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None

    async def _record(self, request: Request) -> RecordedRequest:
        raw = await request.body()
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw.decode("utf-8", "replace")
        recorded = RecordedRequest(
            method=request.method,
            path=request.url.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            json=payload,
        )
        with self._lock:
            self.requests.append(recorded)
        return recorded

    @staticmethod
    async def pause(request: Request, seconds: float) -> bool:
        """Sleep up to ``seconds``; False as soon as the client hangs up (timed-out tests)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            if await request.is_disconnected():
                return False
            await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))
        return True

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self) -> list[Route]:
        raise NotImplementedError

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            Starlette(routes=self.routes()),
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        server = self._server

        def run() -> None:
            asyncio.run(server.serve(sockets=[sock]))

        self._thread = threading.Thread(target=run, name=type(self).__name__, daemon=True)
        self._thread.start()
        for _ in range(500):
            if server.started:
                return
            threading.Event().wait(0.01)
        raise RuntimeError("test API server did not start")

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- helpers for subclasses -----------------------------------------------------------
    @staticmethod
    def sse_body(events: list[tuple[str | None, Any]], event_delay: float) -> AsyncIterator[bytes]:
        async def gen() -> AsyncIterator[bytes]:
            for name, data in events:
                if event_delay:
                    await asyncio.sleep(event_delay)
                text = data if isinstance(data, str) else json.dumps(data)
                head = f"event: {name}\n" if name else ""
                yield f"{head}data: {text}\n\n".encode()

        return gen()

    def respond(
        self, reply: Reply, stream: bool, to_events: Any, base_headers: dict[str, str]
    ) -> Response:
        headers = {**base_headers, **reply.headers}
        if reply.status != 200 or not stream:
            return JSONResponse(reply.body, status_code=reply.status, headers=headers)
        events = reply.events if reply.events is not None else to_events(reply.body)
        return StreamingResponse(
            self.sse_body(events, reply.event_delay),
            media_type="text/event-stream",
            headers={**headers, "cache-control": "no-cache"},
        )


# --- Anthropic content helpers -------------------------------------------------------------
def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def thinking(value: str, signature: str = "sig") -> dict[str, Any]:
    return {"type": "thinking", "thinking": value, "signature": signature}


def tool_use(name: str, input: dict[str, Any], id: str | None = None) -> dict[str, Any]:
    return {"type": "tool_use", "id": id or _next_id("toolu"), "name": name, "input": input}


def make_usage(
    input_tokens: int = 10,
    output_tokens: int = 5,
    cache_read: int = 0,
    cache_5m: int = 0,
    cache_1h: int = 0,
    split: bool = True,
) -> dict[str, Any]:
    """A usage object as the API sends it; ``split=False`` omits the ``cache_creation`` split."""
    data: dict[str, Any] = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": cache_5m + cache_1h,
        "cache_read_input_tokens": cache_read,
    }
    if split:
        data["cache_creation"] = {
            "ephemeral_5m_input_tokens": cache_5m,
            "ephemeral_1h_input_tokens": cache_1h,
        }
    return data


def message(
    *content: dict[str, Any],
    stop_reason: str | None = None,
    usage: dict[str, Any] | None = None,
    model: str = "claude-sonnet-4-5-20250929",
    headers: dict[str, str] | None = None,
    delay: float = 0.0,
    event_delay: float = 0.0,
) -> Reply:
    """A successful reply; ``stop_reason`` defaults to tool_use when a tool_use block is present."""
    if stop_reason is None:
        stop_reason = "tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn"
    body = {
        "id": _next_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": list(content) or [text("ok")],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage or make_usage(),
    }
    return Reply(body=body, headers=headers or {}, delay=delay, event_delay=event_delay)


def error(
    status: int,
    error_type: str,
    message: str = "scripted failure",
    headers: dict[str, str] | None = None,
    delay: float = 0.0,
) -> Reply:
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return Reply(status=status, body=body, headers=headers or {}, delay=delay)


def _chunks(value: str, size: int) -> list[str]:
    return [value[i : i + size] for i in range(0, len(value), size)] or [""]


def message_events(body: dict[str, Any], chunk: int = 4) -> list[tuple[str | None, Any]]:
    """Convert a message into the SSE event sequence the real API sends for it.

    ``message_start`` carries the input-side usage (and the cache TTL split); ``message_delta``
    carries the *cumulative* usage, as the API documents. A ``ping`` follows the first block start.
    """
    u = body["usage"]
    start_usage = {**u, "output_tokens": 1}
    start = {**body, "content": [], "stop_reason": None, "usage": start_usage}
    events: list[tuple[str | None, Any]] = [
        ("message_start", {"type": "message_start", "message": start})
    ]
    for index, block in enumerate(body["content"]):
        if block["type"] == "text":
            empty: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": c} for c in _chunks(block["text"], chunk)]
        elif block["type"] == "thinking":
            empty = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": c} for c in _chunks(block["thinking"], chunk)
            ]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        else:
            empty = {**block, "input": {}}
            raw = json.dumps(block["input"])
            deltas = [
                {"type": "input_json_delta", "partial_json": c} for c in _chunks(raw, chunk * 2)
            ]
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": empty},
            )
        )
        if index == 0:
            events.append(("ping", {"type": "ping"}))
        for delta in deltas:
            events.append(
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    cumulative = {k: v for k, v in u.items() if k != "cache_creation"}
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": body["stop_reason"], "stop_sequence": None},
                "usage": cumulative,
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def stream_error(
    reply: Reply, after: int, error_type: str = "overloaded_error", message: str = "Overloaded"
) -> Reply:
    """``reply`` streamed, but cut after ``after`` events by an ``error`` event (HTTP 200)."""
    events = message_events(reply.body)[:after]
    events.append(("error", {"type": "error", "error": {"type": error_type, "message": message}}))
    return Reply(body=reply.body, headers=reply.headers, events=events)


RATE_LIMIT_HEADERS = {
    "anthropic-ratelimit-requests-limit": "50",
    "anthropic-ratelimit-requests-remaining": "49",
    "anthropic-ratelimit-input-tokens-remaining": "39000",
}


class MessagesAPIServer(ScriptedServer):
    """``POST /v1/messages`` and ``GET /v1/models``; unscripted requests get a short text reply."""

    models = ("claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001")

    def routes(self) -> list[Route]:
        return [
            Route("/v1/messages", self._messages, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
        ]

    async def _messages(self, request: Request) -> Response:
        recorded = await self._record(request)
        reply = self._next_reply() or message(text("ok"))
        if reply.delay and not await self.pause(request, reply.delay):
            return Response(status_code=499)
        payload = recorded.json if isinstance(recorded.json, dict) else {}
        base = {"request-id": _next_id("req"), **RATE_LIMIT_HEADERS}
        return self.respond(reply, bool(payload.get("stream")), message_events, base)

    async def _models(self, request: Request) -> Response:
        await self._record(request)
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
            for m in self.models
        ]
        return JSONResponse(
            {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
        )
