"""The sandbox's one way out reaches the gateway's routes and nothing else on its port."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from quarterdeck.agents.claude_code.bridge import GatewayBridge, RequestFilter, gateway_address
from quarterdeck.exceptions import ConfigError

MESSAGES = (
    b'POST /v1/messages?beta=true HTTP/1.1\r\nhost: x\r\ncontent-length: 11\r\n\r\n{"model":1}'
)


def test_gateway_requests_pass_kept_alive_and_pipelined() -> None:
    check = RequestFilter()
    assert check.feed(MESSAGES + MESSAGES[:20]) is None  # a head split across chunks
    assert check.feed(MESSAGES[20:]) is None
    assert check.feed(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n") is None
    assert check.feed(b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\n") is None
    assert check.feed(b"POST /v1/messages/count_tokens HTTP/1.1\r\nhost: x\r\n") is None


@pytest.mark.parametrize(
    "head",
    [
        b"GET /v1/runs HTTP/1.1\r\nhost: x\r\n\r\n",
        b"POST /v1/admin/keys HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n",
        b"GET /v1/messages/../admin/keys HTTP/1.1\r\nhost: x\r\n\r\n",
        b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com\r\n\r\n",
        b"DELETE /v1/messages HTTP/1.1\r\nhost: x\r\n\r\n",
        b"this is not http\r\n\r\n",
    ],
)
def test_anything_else_is_refused_even_after_an_allowed_request(head: bytes) -> None:
    check = RequestFilter()
    assert check.feed(MESSAGES) is None
    assert check.feed(head) is not None


def test_only_plain_http_gateway_urls() -> None:
    assert gateway_address("http://claude-agent-service:8080") == ("claude-agent-service", 8080)
    assert gateway_address("http://127.0.0.1") == ("127.0.0.1", 80)
    with pytest.raises(ConfigError):
        gateway_address("https://gateway.example")


async def test_a_refused_request_never_reaches_the_gateway(tmp_path: Path) -> None:
    seen: list[bytes] = []

    async def gateway(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            seen.append(data)
            if b"\r\n\r\n" in data:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(gateway, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    bridge = GatewayBridge(tmp_path / "gw.sock", "127.0.0.1", port)
    await bridge.start()
    try:
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "gw.sock"))
        writer.write(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n")
        assert (await reader.readexactly(40)).endswith(b"ok")
        writer.write(b"GET /v1/runs HTTP/1.1\r\nhost: x\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), timeout=5)
        assert answer.startswith(b"HTTP/1.1 403") and b"only call the gateway" in answer
        writer.close()
    finally:
        await bridge.close()
        server.close()
    assert b"/v1/runs" not in b"".join(seen)
