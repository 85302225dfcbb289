"""RelayResponse at the ASGI level: chunks go out as they come, and every ending (finished,
upstream broke, client left with or without a drain) is reported once, with what was metered.

The upstream reply is a plain :class:`UpstreamReply` over an async generator of SSE bytes; the
client is an ASGI ``receive``/``send`` pair. No sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from quarterdeck.exceptions import ProviderError
from quarterdeck.gateway.relay import DrainSlots, RelayResponse, StreamEnd
from quarterdeck.gateway.simulated import sse_events
from quarterdeck.gateway.upstream import UpstreamReply

MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [{"type": "text", "text": "one two three four five six seven eight"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 30,
        "output_tokens": 12,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
    },
}
CHUNKS = [
    b"event: " + name.encode() + b"\ndata: " + json.dumps(data).encode() + b"\n\n"
    for name, data in sse_events(MESSAGE)
]


class Upstream:
    """Yields ``CHUNKS`` (optionally failing after ``fail_after``) and notes its closing."""

    def __init__(self, fail_after: int | None = None, pause: float = 0.0) -> None:
        self.fail_after = fail_after
        self.pause = pause
        self.sent = 0
        self.closed = False

    async def body(self) -> AsyncIterator[bytes]:
        for i, chunk in enumerate(CHUNKS):
            if self.fail_after is not None and i == self.fail_after:
                raise ProviderError("reset", error_type="connection_error")
            if self.pause:
                await asyncio.sleep(self.pause)
            self.sent += 1
            yield chunk

    async def close(self) -> None:
        self.closed = True

    def reply(self) -> UpstreamReply:
        headers = [("content-type", "text/event-stream"), ("request-id", "req_1")]
        return UpstreamReply(200, headers, self.body(), self.close)


class Client:
    """An ASGI client that leaves after ``leave_after`` body messages (never, by default)."""

    def __init__(self, leave_after: int | None = None, raise_on_send: bool = False) -> None:
        self.leave_after = leave_after
        self.raise_on_send = raise_on_send
        self.messages: list[dict[str, Any]] = []
        self.left = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        if self.raise_on_send:  # this server only says so by failing the next send
            await asyncio.Event().wait()
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if self.left.is_set() and self.raise_on_send:
            raise OSError("client gone")
        self.messages.append(message)
        bodies = sum(1 for m in self.messages if m["type"] == "http.response.body")
        if self.leave_after is not None and bodies >= self.leave_after:
            self.left.set()
            await asyncio.sleep(0)  # let the disconnect be noticed, as a server would

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])


async def relay(
    upstream: Upstream, client: Client, *, drain: bool = True, slots: int = 4
) -> tuple[list[StreamEnd], DrainSlots]:
    ends: list[StreamEnd] = []
    drains = DrainSlots(slots)
    response = RelayResponse(
        upstream.reply(),
        [("content-type", "text/event-stream"), ("x-quarterdeck-served-model", "m")],
        started=0.0,
        finish=ends.append,
        drains=drains,
        drain_on_disconnect=drain,
    )
    await response({"type": "http"}, client.receive, client.send)  # type: ignore[arg-type]
    return ends, drains


async def test_every_chunk_goes_out_as_it_came_and_is_metered() -> None:
    upstream, client = Upstream(), Client()
    (end,), _ = await relay(upstream, client)
    assert client.messages[0]["status"] == 200
    bodies = [m["body"] for m in client.messages[1:]]
    assert bodies == CHUNKS  # one send per upstream chunk: nothing held back or merged
    # The chunk holding message_stop ends the response: no empty last message after it.
    assert [m["more_body"] for m in client.messages[1:]] == [True] * (len(CHUNKS) - 1) + [False]
    assert end.metered.finished and end.metered.usage.output_tokens == 12
    assert not end.client_disconnected and end.ttfb_s is not None and upstream.closed


async def test_upstream_breaking_mid_stream_is_reported_not_retried() -> None:
    upstream, client = Upstream(fail_after=4), Client()
    (end,), _ = await relay(upstream, client)
    assert end.upstream_failed and not end.metered.finished
    assert end.metered.usage.input_tokens == 30  # from message_start: still billable
    assert client.body == b"".join(CHUNKS[:4])
    assert client.messages[-1].get("more_body") is True  # never completed: the client sees a cut
    assert upstream.closed


async def test_a_client_that_leaves_is_drained_to_the_end() -> None:
    upstream, client = Upstream(), Client(leave_after=2)
    (end,), drains = await relay(upstream, client)
    assert end.client_disconnected and end.drained
    assert upstream.sent == len(CHUNKS)  # read to its end...
    assert len(client.messages) == 3  # ...but nothing more went to the gone client
    assert end.metered.finished and end.metered.usage.output_tokens == 12  # exact bill
    assert drains.active == 0 and upstream.closed


async def test_without_drain_slots_the_stream_stops_and_the_floor_bills() -> None:
    upstream, client = Upstream(), Client(leave_after=4)
    (end,), _ = await relay(upstream, client, slots=0)
    assert end.client_disconnected and not end.drained
    assert upstream.sent < len(CHUNKS) and upstream.closed
    assert not end.metered.finished and end.metered.text_chars > 0  # the floor's basis


async def test_drain_off_stops_at_once() -> None:
    upstream, client = Upstream(), Client(leave_after=3)
    (end,), _ = await relay(upstream, client, drain=False)
    assert end.client_disconnected and not end.drained and upstream.sent == 3


async def test_a_send_that_raises_oserror_counts_as_a_disconnect() -> None:
    upstream, client = Upstream(), Client(leave_after=2, raise_on_send=True)
    (end,), _ = await relay(upstream, client, slots=0)
    assert end.client_disconnected and not end.drained and upstream.closed
