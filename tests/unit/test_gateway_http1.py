"""The gateway's HTTP/1.1 client against scripted servers on localhost sockets (and TLS).

Each server is an asyncio server whose handler reads one request head (and body, by its
Content-Length) at a time and answers with whatever bytes the test scripts, so the framings
the upstream may choose (length, chunked, until close), its timing, and its misbehaviour
(silence, early close, garbage) are all exercised over real connections."""

from __future__ import annotations

import asyncio
import datetime
import gc
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from quarterdeck.gateway.http1 import MAX_HEAD_BYTES, READ_HIGH_WATER, Http1Client

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


class Server:
    def __init__(self) -> None:
        self.connections = 0
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.port = 0


async def read_request(reader: asyncio.StreamReader, server: Server) -> bool:
    """One request head and its body; False at the end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return False
    server.heads.append(head)
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    server.bodies.append(await reader.readexactly(length) if length else b"")
    return True


@asynccontextmanager
async def serve(
    handler: Handler, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Server]:
    state = Server()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            await handler(reader, writer, state)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=ssl_context)
    state.port = server.sockets[0].getsockname()[1]
    async with server:
        yield state


def keep_answering(answer: bytes) -> Handler:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        while await read_request(reader, server):
            writer.write(answer)
            await writer.drain()

    return handler


def answer_once(answer: bytes, linger_s: float = 0.0) -> Handler:
    """Read one request, write ``answer``, wait ``linger_s``, then close the connection."""

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server
    ) -> None:
        await read_request(reader, server)
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(linger_s)

    return handler


OK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}'


async def read_all(client: Http1Client, body: bytes = b"{}") -> tuple[int, bytes]:
    response = await client.request("POST", "/v1/messages", [("x-test", "1")], body)
    try:
        return response.status, b"".join([c async for c in response.body()])
    finally:
        response.release()


async def test_a_length_delimited_answer_and_the_connection_is_reused() -> None:
    async with serve(keep_answering(OK)) as server:
        client = Http1Client(f"http://127.0.0.1:{server.port}/base/")
        assert await read_all(client, b'{"a":1}') == (200, b'{"ok":true}')
        assert await read_all(client) == (200, b'{"ok":true}')
        assert server.connections == 1
        head = server.heads[0].decode()
        assert head.startswith("POST /base/v1/messages HTTP/1.1\r\n")
        assert f"host: 127.0.0.1:{server.port}\r\n" in head
        assert "x-test: 1\r\n" in head and "content-length: 7\r\n" in head
        assert server.bodies[0] == b'{"a":1}'
        await client.aclose()


async def test_chunks_are_handed_on_as_they_arrive_not_when_the_answer_ends() -> None:
    go_on = asyncio.Event()

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server
    ) -> None:
        await read_request(reader, s)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await go_on.wait()  # the rest only once the client has the first chunk
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()
        await read_request(reader, s)

    async with serve(handler) as server:
        client = Http1Client(f"http://127.0.0.1:{server.port}")
        response = await client.request("POST", "/v1/messages", [], b"{}")
        body = response.body()
        assert await anext(body) == b"first"
        go_on.set()
        assert [c async for c in body] == [b"second"]
        response.release()
        assert client.idle == 1  # read to the end: back to the pool
        await client.aclose()


async def test_a_body_that_ends_with_the_connection_and_is_not_reused() -> None:
    async with serve(
        answer_once(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it")
    ) as server:
        client = Http1Client(f"http://127.0.0.1:{server.port}")
        assert await read_all(client) == (200, b"all of it")
        assert client.idle == 0
        assert await read_all(client) == (200, b"all of it")
        assert server.connections == 2


async def test_a_connection_the_server_closed_while_idle_is_not_used_again() -> None:
    async with serve(answer_once(OK, 0.05)) as server:
        client = Http1Client(f"http://127.0.0.1:{server.port}")
        assert await read_all(client) == (200, b'{"ok":true}')
        await asyncio.sleep(0.3)
        assert await read_all(client) == (200, b'{"ok":true}')
        assert server.connections == 2


async def test_an_idle_connection_older_than_keepalive_is_dropped() -> None:
    async with serve(keep_answering(OK)) as server:
        client = Http1Client(f"http://127.0.0.1:{server.port}", keepalive_s=0.1)
        await read_all(client)
        await asyncio.sleep(0.2)
        await read_all(client)
        assert server.connections == 2


async def test_a_connection_lost_mid_body_raises_and_is_not_reused() -> None:
    async with serve(
        answer_once(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
    ) as server:
        client = Http1Client(f"http://127.0.0.1:{server.port}")
        response = await client.request("POST", "/v1/messages", [], b"{}")
        got = []
        with pytest.raises(ConnectionError):
            async for chunk in response.body():
                got.append(chunk)
        assert b"".join(got) == b"only part"  # what arrived before the break is handed on
        response.release()
        assert client.idle == 0


async def test_silence_before_the_head_and_between_body_bytes_times_out() -> None:
    async with serve(answer_once(b"", 5)) as server:
        client = Http1Client(f"http://127.0.0.1:{server.port}", read_timeout_s=0.2)
        with pytest.raises(TimeoutError):
            await client.request("POST", "/v1/messages", [], b"{}")

    async with serve(
        answer_once(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n", 5)
    ) as server:
        client = Http1Client(f"http://127.0.0.1:{server.port}", read_timeout_s=0.2)
        response = await client.request("POST", "/v1/messages", [], b"{}")
        body = response.body()
        assert await anext(body) == b"hi"
        with pytest.raises(TimeoutError):
            await anext(body)
        response.release()


async def test_a_refused_connection_is_a_connection_error() -> None:
    async with serve(keep_answering(OK)) as server:
        port = server.port
    client = Http1Client(f"http://127.0.0.1:{port}")
    with pytest.raises(ConnectionError):
        await client.request("POST", "/v1/messages", [], b"{}")


async def test_a_line_break_in_a_header_is_refused_before_anything_is_sent() -> None:
    async with serve(keep_answering(OK)) as server:
        client = Http1Client(f"http://127.0.0.1:{server.port}")
        for headers, target in (
            ([("x-a", "1\r\nx-api-key: stolen")], "/v1/messages"),
            ([("x-a", "1\nx: y")], "/v1/messages"),
            ([("x-a", "1\r")], "/v1/messages"),
            ([], "/v1/messages HTTP/1.0\r\nx: y"),
        ):
            with pytest.raises(ValueError):
                await client.request("POST", target, headers, b"{}")
        assert server.connections == 0
        assert await read_all(client) == (200, b'{"ok":true}')  # no slot was leaked


async def test_at_most_max_connections_and_a_bounded_wait_for_one() -> None:
    async with serve(keep_answering(OK)) as server:
        client = Http1Client(f"http://127.0.0.1:{server.port}", max_connections=1)
        first = await client.request("POST", "/v1/messages", [], b"{}")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await client.request("POST", "/v1/messages", [], b"{}")
        waiting = asyncio.create_task(read_all(client))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        assert b"".join([c async for c in first.body()]) == b'{"ok":true}'
        first.release()
        first.release()  # idempotent: the slot is freed once
        assert await waiting == (200, b'{"ok":true}')
        assert server.connections == 1


async def test_an_answer_released_before_its_end_closes_its_connection() -> None:
    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server
    ) -> None:
        while await read_request(reader, s):
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n")
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async with serve(handler) as server:
        client = Http1Client(f"http://127.0.0.1:{server.port}")
        response = await client.request("POST", "/v1/messages", [], b"{}")
        response.release()  # the client went away before the end: nothing to reuse
        assert client.idle == 0
        assert await read_all(client) == (200, b"hi")
        assert client.idle == 1  # read to its end: reusable
        assert server.connections == 2


async def test_an_answer_lost_without_release_gives_its_slot_back_when_collected() -> None:
    async with serve(keep_answering(OK)) as server:
        client = Http1Client(f"http://127.0.0.1:{server.port}", max_connections=1)
        response = await client.request("POST", "/v1/messages", [], b"{}")
        del response
        gc.collect()
        async with asyncio.timeout(2):
            assert await read_all(client) == (200, b'{"ok":true}')


async def test_informational_answers_are_skipped() -> None:
    early = b"HTTP/1.1 103 Early Hints\r\nlink: </a>; rel=preload\r\n\r\n"
    async with serve(keep_answering(early + OK)) as server:
        client = Http1Client(f"http://127.0.0.1:{server.port}")
        response = await client.request("POST", "/v1/messages", [], b"{}")
        assert response.status == 200
        assert (b"link", b"</a>; rel=preload") not in response.headers
        assert b"".join([c async for c in response.body()]) == b'{"ok":true}'
        response.release()
        assert client.idle == 1


async def test_a_malformed_answer_is_a_connection_error() -> None:
    pad = b"x-pad: " + b"a" * 1000 + b"\r\n"
    endless = b"HTTP/1.1 200 OK\r\n" + pad * (MAX_HEAD_BYTES // 1000 + 1) + b"\r\n"
    fine = (
        b"HTTP/1.1 200 OK\r\n" + pad * (MAX_HEAD_BYTES // 1000 - 10) + b"content-length: 0\r\n\r\n"
    )
    async with serve(keep_answering(fine)) as server:
        assert await read_all(Http1Client(f"http://127.0.0.1:{server.port}")) == (200, b"")
    for answer in (b"SMTP ready\r\n\r\n", endless):
        async with serve(keep_answering(answer)) as server:
            client = Http1Client(f"http://127.0.0.1:{server.port}")
            with pytest.raises(ConnectionError, match="malformed"):
                await client.request("POST", "/v1/messages", [], b"{}")


async def test_a_large_answer_to_a_slow_reader_pauses_reading_and_arrives_whole() -> None:
    payload = bytes(range(256)) * (4 * READ_HIGH_WATER // 256)
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(payload) + payload
    async with serve(keep_answering(answer)) as server:
        client = Http1Client(f"http://127.0.0.1:{server.port}")
        response = await client.request("POST", "/v1/messages", [], b"{}")
        await asyncio.sleep(0.3)  # the server writes everything it can meanwhile
        conn = response._conn
        assert conn._paused and conn._buffered <= READ_HIGH_WATER + (1 << 18)
        got = b"".join([c async for c in response.body()])
        assert got == payload
        response.release()
        assert client.idle == 1


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_verifies_the_server_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    async with serve(keep_answering(OK), server_ctx) as server:
        trusting = ssl.create_default_context(cafile=str(cert))
        client = Http1Client(f"https://localhost:{server.port}", ssl_context=trusting)
        assert await read_all(client) == (200, b'{"ok":true}')
        assert await read_all(client) == (200, b'{"ok":true}')
        assert server.connections == 1
        assert f"host: localhost:{server.port}\r\n" in server.heads[0].decode()
        await client.aclose()
        untrusting = Http1Client(f"https://localhost:{server.port}")  # the system's store
        with pytest.raises(ssl.SSLError):
            await untrusting.request("POST", "/v1/messages", [], b"{}")


async def test_an_answer_before_the_whole_request_was_written_is_not_reused() -> None:
    async def early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the head only: the body is never read
        too_large = b'{"type":"error","error":{"type":"request_too_large"}}'
        writer.write(
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: %d\r\n\r\n" % len(too_large)
        )
        writer.write(too_large)
        await writer.drain()
        await asyncio.sleep(1)

    async with serve(early) as server:
        client = Http1Client(f"http://127.0.0.1:{server.port}")
        status, _ = await read_all(client, b"x" * (32 << 20))
        assert status == 413
        assert client.idle == 0


async def test_the_upstream_pool_is_visible_in_the_metrics() -> None:
    from quarterdeck import metrics
    from quarterdeck.gateway.upstream import HttpUpstream

    def sample(state: str) -> float | None:
        return metrics.REGISTRY.get_sample_value(
            "quarterdeck_gateway_upstream_connections", {"state": state}
        )

    async with serve(keep_answering(OK)) as server:
        upstream = HttpUpstream(
            f"http://127.0.0.1:{server.port}", api_key="sk-up", max_connections=7
        )
        reply = await upstream.send("POST", "/v1/messages", [], b"{}", tenant="t")
        assert (sample("in_use"), sample("idle"), sample("limit")) == (1, 0, 7)
        await reply.read()
        assert (sample("in_use"), sample("idle")) == (0, 1)
        assert b"x-api-key: sk-up\r\n" in server.heads[0]
        await upstream.aclose()
        assert sample("idle") == 0
