"""The Messages API stand-in of ``benchmarks.gateway``: the same answers, at a fraction of the CPU.

``python -m benchmarks.upstream_server PORT`` serves ``POST /v1/messages`` and ``GET /v1/models``
on ``127.0.0.1:PORT`` until SIGTERM. Every message answer is the default reply of the package's
:class:`~quarterdeck.chaos.messages_api.MessagesAPIServer` (a plain ``"ok"`` message, the same
usage), as JSON with a ``Content-Length`` or, for ``"stream": true``, as the SSE events that
stand-in sends, one chunk of a chunked body per event, each written on its own (as an upstream
writes events as it makes them). Each answer carries a fresh ``request-id`` and message id.

Why not that stand-in itself (it served here until the gateway's sixteenth bench session): on
this 2-core machine the upstream shares the cores with the proxy it measures, and the Starlette
stand-in spent ~780 us of CPU per streamed 80 KB call (~420 us per JSON one), most of it
parsing the body with the standard library's ``json`` and Starlette's streaming machinery. At
500 requests/s that took ~0.4 of a core from the proxy under test, which a real deployment,
whose upstream is Anthropic's servers, never pays. This one parses the body with ``orjson``
(the model and ``stream`` decide the answer, as upstream) and writes pre-rendered bytes from an
``asyncio.Protocol`` with the ``httptools`` parser uvicorn uses; the answers' bytes are the
other stand-in's (checked by ``tests/unit/test_bench_upstream.py``). It serves every path the
same way: direct, through Quarterdeck and through LiteLLM.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import sys
from typing import Any

import httptools
import orjson

from quarterdeck.chaos.messages_api import MessagesAPIServer, message, message_events, text
from quarterdeck.kit.heap import freeze_startup_heap

MESSAGE_ID = "msg_bench_000000000000"
"""Placeholder in the pre-rendered answers, replaced by a fresh id of the same length."""


def _event_bytes(name: str, data: Any) -> bytes:
    """One SSE event as the chaos stand-in writes it (``event:`` line, ``data:`` as JSON)."""
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


class Answers:
    """The stand-in's answers, rendered once: the JSON body and the SSE events of one message."""

    def __init__(self) -> None:
        body = message(text("ok")).body
        body["id"] = MESSAGE_ID
        # Starlette's JSONResponse: compact separators, UTF-8 as is
        self.json = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        self.events = [_event_bytes(name, data) for name, data in message_events(body)]
        self.models = json.dumps(
            {
                "data": [
                    {
                        "type": "model",
                        "id": m,
                        "display_name": m,
                        "created_at": "2025-01-01T00:00:00Z",
                    }
                    for m in MessagesAPIServer.models
                ],
                "has_more": False,
                "first_id": MessagesAPIServer.models[0],
                "last_id": MessagesAPIServer.models[-1],
            }
        ).encode()


ANSWERS = Answers()
_ids = itertools.count(1)


class StandIn(asyncio.Protocol):
    """One client connection: HTTP/1.1 keep-alive, requests answered in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._send(400, b"application/json", b'{"type":"error"}', close=True)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0]
        keep = self.parser.should_keep_alive()
        if method == b"POST" and path == b"/v1/messages":
            self._messages(keep)
        elif method == b"GET" and path == b"/v1/models":
            self._send(200, b"application/json", ANSWERS.models, close=not keep)
        else:
            self._send(404, b"application/json", b'{"type":"error"}', close=not keep)

    def _messages(self, keep: bool) -> None:
        try:
            payload = orjson.loads(b"".join(self.body))
            stream = payload.get("stream") is True
        except (orjson.JSONDecodeError, AttributeError):
            self._send(400, b"application/json", b'{"type":"error"}', close=not keep)
            return
        n = next(_ids)
        request_id = b"req_bench_%012d" % n
        message_id = b"msg_bench_%012d" % n
        transport = self.transport
        assert transport is not None
        if not stream:
            body = ANSWERS.json.replace(MESSAGE_ID.encode(), message_id, 1)
            self._send(200, b"application/json", body, close=not keep, request_id=request_id)
            return
        transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"cache-control: no-cache\r\nrequest-id: %s\r\ntransfer-encoding: chunked\r\n%s\r\n"
            % (request_id, b"" if keep else b"connection: close\r\n")
        )
        first, *rest = ANSWERS.events
        for event in (first.replace(MESSAGE_ID.encode(), message_id, 1), *rest):
            transport.write(b"%x\r\n%s\r\n" % (len(event), event))
        transport.write(b"0\r\n\r\n")
        if not keep:
            transport.close()

    def _send(
        self,
        status: int,
        content_type: bytes,
        body: bytes,
        *,
        close: bool,
        request_id: bytes = b"req_bench",
    ) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}[status]
        transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\nrequest-id: %s\r\ncontent-length: %d\r\n%s\r\n%s"
            % (
                status,
                reason,
                content_type,
                request_id,
                len(body),
                b"connection: close\r\n" if close else b"",
                body,
            )
        )
        if close:
            transport.close()


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(StandIn, "127.0.0.1", port, backlog=2048)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    freeze_startup_heap()  # as ``quarterdeck up`` does: no full collections of start-up objects
    async with server:
        await stop.wait()


def main(port: int) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        asyncio.run(serve(port))
    else:
        uvloop.run(serve(port))


if __name__ == "__main__":
    main(int(sys.argv[1]))
