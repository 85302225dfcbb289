"""The base every local stand-in for a remote HTTP API is built on: one server, one way to script it.

Tests and the chaos suite talk to services this machine cannot reach (the Anthropic and
OpenAI-compatible APIs, the Kubernetes API server) through local fakes, so the real client
libraries run unmodified and the only seam is a base URL. Every such fake needs the same four
things, and they live here once:

- a lifecycle: uvicorn + Starlette on a free loopback port, in a daemon thread with its own event
  loop, so a synchronous test or the chaos runner can start, drive and stop it with method calls;
- a FIFO script: :meth:`ScriptedServer.script` queues :class:`Reply` objects and each request
  consumes the next, so a test says exactly what "the API" answers, in order;
- a request log: every request is recorded as a :class:`RecordedRequest` (method, path,
  lower-cased headers, parsed JSON) so a test can assert what the client put on the wire;
- one SSE encoder (:func:`sse_body`) and one responder (:meth:`ScriptedServer.respond`) that turn a
  reply into JSON or a ``text/event-stream``, with optional per-event delays for stall tests.

Subclasses only declare :meth:`ScriptedServer.routes` and say how a 200 body becomes stream
events (see :mod:`.messages_api`; the OpenAI and Kubernetes fakes in ``tests/support`` do the
same). Nothing here knows about any particular API.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

Event = tuple[str | None, Any]  # (SSE event name or None for data-only SSE, data)
_ids = itertools.count(1)


def next_id(prefix: str) -> str:
    """A process-unique id such as ``msg_000042``: unique across every fake, like real ids."""
    return f"{prefix}_{next(_ids):06d}"


def chunks(value: str, size: int) -> list[str]:
    """``value`` cut into ``size``-character pieces (one empty piece for ``""``), as APIs stream."""
    return [value[i : i + size] for i in range(0, len(value), size)] or [""]


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
    events: list[Event] | None = None
    event_delay: float = 0.0


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    json: Any


def sse_body(events: list[Event], event_delay: float = 0.0) -> AsyncIterator[bytes]:
    """The wire form of ``events``: ``event:`` line when named, ``data:`` as JSON or raw text."""

    async def gen() -> AsyncIterator[bytes]:
        for name, data in events:
            if event_delay:
                await asyncio.sleep(event_delay)
            text = data if isinstance(data, str) else json.dumps(data)
            head = f"event: {name}\n" if name else ""
            yield f"{head}data: {text}\n\n".encode()

    return gen()


class ScriptedServer:
    """uvicorn + starlette on a free localhost port, in a daemon thread with its own event loop.

    ``record_requests=False`` keeps the request log empty, for long load runs (the chaos suite)
    where nobody reads it and it would only grow.
    """

    def __init__(self, *, record_requests: bool = True) -> None:
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self.record_requests = record_requests
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
        """Forget the script and the request log; subclasses also drop their own state."""
        with self._lock:
            self._queue.clear()
            self.requests.clear()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def next_reply(self) -> Reply | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None

    async def record(self, request: Request) -> RecordedRequest:
        """Read the body (JSON if it parses, else text) and log the request."""
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
        if self.record_requests:
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

    def respond(
        self,
        reply: Reply,
        stream: bool,
        to_events: Callable[[Any], list[Event]],
        base_headers: dict[str, str],
    ) -> Response:
        """``reply`` as JSON, or as SSE (``to_events(body)`` unless it scripted its own events)."""
        headers = {**base_headers, **reply.headers}
        if reply.status != 200 or not stream:
            return JSONResponse(reply.body, status_code=reply.status, headers=headers)
        events = reply.events if reply.events is not None else to_events(reply.body)
        return StreamingResponse(
            sse_body(events, reply.event_delay),
            media_type="text/event-stream",
            headers={**headers, "cache-control": "no-cache"},
        )

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self) -> list[Route]:
        raise NotImplementedError

    def start(self) -> Self:
        """Bind a free port, serve in a daemon thread, return once uvicorn is accepting."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            Starlette(routes=self.routes()),
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
            backlog=2048,  # the chaos suite opens hundreds of connections at once
        )
        server = self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])),
            name=type(self).__name__,
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        if not server.started:
            raise RuntimeError(f"{type(self).__name__} did not start")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
