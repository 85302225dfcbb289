"""The gateway bench's lean stand-in answers what the package's Messages API stand-in answers.

The bench swapped :class:`~quarterdeck.chaos.messages_api.MessagesAPIServer` for a cheaper
server (``benchmarks/upstream_server.py``); the figures stay comparable only while the bytes a
proxy relays and meters are the same: the JSON message, the SSE events one by one, the headers
a client or the meter reads. Ids differ by design (fresh per answer on both)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from benchmarks.upstream_server import StandIn

from quarterdeck.chaos.messages_api import MessagesAPIServer

BODY = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "hi"}],
}


def normalised(text: str) -> str:
    return re.sub(r'"(msg|req)_[A-Za-z0-9_]+"', r'"\1_ID"', text)


@pytest.fixture
async def lean() -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(StandIn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def chaos() -> Any:
    server = MessagesAPIServer(rate_limit_headers={}, record_requests=False).start()
    yield server
    server.stop()


def events(raw: bytes) -> list[tuple[str, Any]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if block:
            name, data = block.split("\n")
            out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


async def answer(base: str, stream: bool) -> tuple[httpx.Response, list[bytes]]:
    async with httpx.AsyncClient(base_url=base) as client:
        body = {**BODY, "stream": stream}
        async with client.stream("POST", "/v1/messages", json=body) as response:
            chunks = [c async for c in response.aiter_raw()]
    return response, chunks


async def test_the_json_answer_is_the_same(lean: str, chaos: Any) -> None:
    mine, mine_body = await answer(lean, False)
    theirs, their_body = await answer(chaos.base_url, False)
    assert mine.status_code == theirs.status_code == 200
    assert mine.headers["content-type"] == theirs.headers["content-type"]
    assert normalised(b"".join(mine_body).decode()) == normalised(b"".join(their_body).decode())
    assert mine.headers["request-id"].startswith("req_")


async def test_the_sse_answer_is_the_same_events_in_the_same_framing(lean: str, chaos: Any) -> None:
    mine, mine_chunks = await answer(lean, True)
    theirs, their_chunks = await answer(chaos.base_url, True)
    assert mine.headers["content-type"] == theirs.headers["content-type"]
    assert mine.headers["transfer-encoding"] == theirs.headers["transfer-encoding"] == "chunked"
    mine_raw, their_raw = b"".join(mine_chunks), b"".join(their_chunks)
    assert normalised(mine_raw.decode()) == normalised(their_raw.decode())
    assert [n for n, _ in events(mine_raw)] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


async def test_each_answer_has_fresh_ids_and_keep_alive_serves_many(lean: str) -> None:
    async with httpx.AsyncClient(base_url=lean) as client:
        first = await client.post("/v1/messages", json=BODY)
        second = await client.post("/v1/messages", json=BODY)
        assert first.json()["id"] != second.json()["id"]
        assert first.headers["request-id"] != second.headers["request-id"]
        models = await client.get("/v1/models")
        assert [m["id"] for m in models.json()["data"]] == list(MessagesAPIServer.models)
        assert (await client.post("/v1/messages", content=b"{not json")).status_code == 400
        assert (await client.get("/elsewhere")).status_code == 404
