"""A lean HTTP/1.1 client for one origin: the gateway's connections to its upstream.

Why not a general client: the relay sends one request shape (a body already in memory, a
handful of headers) to one origin, and wants the answer's bytes as they arrive. For that,
aiohttp's ``ClientSession`` (which served here before) spent ~260 us of CPU per 80 KB call on
request objects, header multidicts, tracing hooks, timers and its stream reader; this client
spends ~115 us (an 80 KB POST and its SSE answer, sequential, to the bench stand-in, process CPU
time, five rounds of 1,000 each). At 500 calls/s that is 7 % of a core, on the path every
gateway call takes before its first byte.

What it does: keep-alive connections (most recently used first, dropped once the server closed
them or after ``keepalive_s`` idle), at most ``max_connections`` in use (a caller waits up to
``pool_timeout_s`` for one), TLS for ``https`` origins (the system's trust store, as aiohttp
and OpenSSL's ``SSL_CERT_FILE`` have it), responses parsed by ``httptools`` (the parser uvicorn
serves with): bodies by ``Content-Length``, chunked or up to the connection's close, handed on
de-chunked and as they arrive (what one read delivered, joined), with reads paused while more
than ``READ_HIGH_WATER`` bytes wait for the consumer. A connection is reused only after its
answer was read to the end. What it does not do, because the relay never needs it: redirects,
cookies, decompression, proxies, ``Expect: 100-continue``, request bodies as streams.

Failures are the standard library's: ``TimeoutError`` (connecting, a free connection, the
answer's head, or a silence between body bytes longer than ``read_timeout_s``) and
``ConnectionError`` (refused, reset, closed early, or a malformed answer); ``ssl.SSLError`` is
an ``OSError``. The caller (:mod:`quarterdeck.gateway.upstream`) maps them onto
:class:`~quarterdeck.exceptions.ProviderError`.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import httptools
import structlog

log = structlog.get_logger(__name__)

READ_HIGH_WATER = 1 << 20
"""Body bytes buffered for a consumer that has not taken them yet before reading pauses."""
MAX_HEAD_BYTES = 256 * 1024
"""An answer whose headers pass this is refused as malformed (aiohttp allowed 8 KB per line)."""
DNS_TTL_S = 10.0
"""How long the origin's resolved addresses are reused for new connections (aiohttp's default):
a burst that opens hundreds of connections asks the resolver once, not once each."""


class Http1Response:
    """An answer whose head has arrived; :meth:`body` yields the rest, :meth:`release` frees the
    connection (back to the pool when the body was read to its end, else closed)."""

    __slots__ = ("_client", "_conn", "_timeout", "headers", "status")

    def __init__(self, client: Http1Client, conn: _Connection) -> None:
        self._client: Http1Client | None = client
        self._conn = conn
        self._timeout = client.read_timeout_s
        self.status = conn.status
        self.headers = conn.headers

    def body(self) -> AsyncIterator[bytes]:
        return self._conn.body(self._timeout)

    def release(self) -> None:
        """Idempotent; must be called once the caller is done, read to the end or not."""
        client, self._client = self._client, None
        if client is not None:
            client._release(self._conn)

    def __del__(self) -> None:
        # A caller that lost its answer without releasing it would hold a pool slot forever;
        # the slot comes back when the answer is collected (its connection reused if the
        # answer was read to its end, else closed).
        if self._client is not None:
            try:
                self.release()
                log.warning("gateway.upstream_answer_not_released")
            except Exception:  # a finaliser must not raise (the loop or the process is closing)
                pass


class Http1Client:
    """Keep-alive HTTP/1.1 connections to the origin of ``base_url`` (see the module doc)."""

    def __init__(
        self,
        base_url: str,
        *,
        max_connections: int = 1000,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 600.0,
        pool_timeout_s: float | None = None,
        keepalive_s: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.hostname = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self._host = parts.netloc.rpartition("@")[2]
        self._prefix = parts.path.rstrip("/")
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
            self._ssl.set_alpn_protocols(["http/1.1"])
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.pool_timeout_s = read_timeout_s if pool_timeout_s is None else pool_timeout_s
        self.keepalive_s = keepalive_s
        self.max_connections = max_connections
        self._slots: asyncio.Semaphore | None = None
        self.in_use = 0
        """Connections a call holds (a request sent, its answer not released yet)."""
        self._idle: list[_Connection] = []
        self._resolved: tuple[float, list[tuple[int, Any]]] | None = None
        self._closed = False

    @property
    def idle(self) -> int:
        """Connections waiting in the pool."""
        return len(self._idle)

    async def request(
        self, method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes = b""
    ) -> Http1Response:
        """Send one request (``target``: path and query, after the base URL's path) and return
        once the answer's head has arrived."""
        if self._closed:
            raise ConnectionError("the upstream client is closed")
        head = self._head(method, target, headers, body)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_connections)
        if self._slots.locked():  # only a wait needs a timer (the call path skips it)
            async with asyncio.timeout(self.pool_timeout_s):
                await self._slots.acquire()
        else:
            await self._slots.acquire()
        self.in_use += 1
        conn: _Connection | None = None
        try:
            conn = self._pooled() or await self._connect()
            await conn.exchange([head, body] if body else [head], self.read_timeout_s)
        except BaseException:
            if conn is not None:
                conn.close()
            self.in_use -= 1
            self._slots.release()
            raise
        return Http1Response(self, conn)

    def _head(
        self, method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes
    ) -> bytes:
        lines = [f"{method} {self._prefix}{target} HTTP/1.1\r\nhost: {self._host}\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, value in headers)
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"content-length: {len(body)}\r\n")
        lines.append("\r\n")
        text = "".join(lines)
        # As many line ends as lines written (the first entry is two: request line and host),
        # so a value carrying a line break cannot add a header or end the head early.
        ends = len(lines) + 1
        if text.count("\n") != ends or text.count("\r") != ends or " " in target:
            raise ValueError("a header or the target holds a line break or a space")
        return text.encode("latin-1")

    def _pooled(self) -> _Connection | None:
        """The most recently used idle connection that is still open and fresh, if any."""
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.lost and now - conn.idle_since < self.keepalive_s:
                return conn
            conn.close()
        return None

    async def _connect(self) -> _Connection:
        """A new connection to the first of the origin's addresses that accepts one."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout_s):
            failure: OSError | None = None
            for family, address in await self._addresses(loop):
                try:
                    _, conn = await loop.create_connection(
                        lambda: _Connection(loop),
                        address[0],
                        address[1],
                        family=family,
                        ssl=self._ssl,
                        server_hostname=self.hostname if self._ssl is not None else None,
                    )
                except OSError as exc:
                    failure = exc
                    continue
                return conn
        self._resolved = None  # none answered: ask the resolver again next time
        raise failure or ConnectionError(f"{self.hostname} resolved to no address")

    async def _addresses(self, loop: asyncio.AbstractEventLoop) -> list[tuple[int, Any]]:
        now = time.monotonic()
        resolved = self._resolved
        if resolved is None or now - resolved[0] > DNS_TTL_S:
            infos = await loop.getaddrinfo(self.hostname, self.port, type=socket.SOCK_STREAM)
            resolved = self._resolved = (now, [(info[0], info[4]) for info in infos])
        return resolved[1]

    def _release(self, conn: _Connection) -> None:
        if conn.reusable and not self._closed:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()
        self.in_use -= 1
        if self._slots is not None:
            self._slots.release()

    async def aclose(self) -> None:
        """Close the idle connections; those in use close when released."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()


class _Connection(asyncio.Protocol):
    """One connection and the answer being read on it (``httptools`` calls the ``on_*``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.idle_since = 0.0
        self._head: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self.complete = False
        self.keep_alive = False
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._paused = False

    @property
    def reusable(self) -> bool:
        transport = self.transport
        return (
            self.complete
            and self.keep_alive
            and not self.lost
            and self._error is None
            and transport is not None
            and not transport.is_closing()
            # An answer that came before the whole request was written (an early 413) leaves
            # the rest of the body queued: on a reused connection it would read as a request.
            and not transport.get_write_buffer_size()
        )

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- a request ---------------------------------------------------------------------------
    async def exchange(self, data: list[bytes], timeout: float) -> None:
        """Write the request; return once the answer's head is in (or raise why not)."""
        self._reset()
        head = self._head = self._loop.create_future()
        assert self.transport is not None
        self.transport.writelines(data)
        async with asyncio.timeout(timeout):
            await head

    async def body(self, timeout: float) -> AsyncIterator[bytes]:
        """The answer's body as it arrives; raises ConnectionError if it breaks off."""
        while True:
            if self._chunks:
                chunks, self._chunks, self._buffered = self._chunks, [], 0
                if self._paused and not self.lost and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                yield chunks[0] if len(chunks) == 1 else b"".join(chunks)
            elif self._error is not None:
                raise self._error
            elif self.complete:
                return
            else:
                waiter = self._waiter = self._loop.create_future()
                try:
                    async with asyncio.timeout(timeout):
                        await waiter
                finally:
                    self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self._error is None and not self.complete:
            self._error = error
        head = self._head
        if head is not None and not head.done():
            head.set_exception(error)
        self._wake()

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        head = self._head
        if head is None or self.complete:
            return
        if head.done() and self._until_close():
            self.complete = True  # a body delimited by the end of the connection
            self.keep_alive = False
            self._wake()
            return
        why = f": {exc!r}" if exc is not None else ""
        self._fail(ConnectionError(f"the upstream closed the connection{why}"))

    def data_received(self, data: bytes) -> None:
        if self._head is None or self.complete:  # nothing asked: the server broke protocol
            self.lost = True
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"malformed upstream response: {exc}"))
            self.close()

    def _until_close(self) -> bool:
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"content-length" or (
                lowered == b"transfer-encoding" and b"chunked" in value.lower()
            ):
                return False
        return True

    # -- httptools callbacks -------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > MAX_HEAD_BYTES:
            raise httptools.HttpParserError(f"headers longer than {MAX_HEAD_BYTES} bytes")

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # 1xx (103 Early Hints): the real head follows
            return
        self.status = status
        self.keep_alive = self._parser.should_keep_alive()
        head = self._head
        if head is not None and not head.done():
            head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > READ_HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status < 200:  # the end of an informational answer
            self.headers = []
            return
        self.complete = True
        self._wake()
