"""The one way out of a claude-code run's sandbox: a Unix socket piped to the gateway.

The sandbox has no network. Inside, a loopback port is bridged to a Unix socket bound into it
(``agents/sandbox``); this worker-side end accepts each connection on that socket and pipes its
bytes to the gateway's TCP address and back. Whatever the CLI (or a command it runs) sends
therefore reaches the gateway only, where its run token is checked, metered and budgeted; it
cannot name another host.

Only the gateway's routes, though: the gateway shares its port with the whole API, and with
authentication off (development) a request without a key acts as an admin. So every request on
a bridged connection is parsed (h11, as the server side would) and one for any other route ends
the connection with a 403 before its head is complete upstream; the bytes that pass are sent
unchanged. Plain HTTP only: the gateway is reached inside the cluster (a TLS gateway would present
a certificate for its own name, not for the loopback address the CLI dials).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

import h11
import structlog

from quarterdeck.exceptions import ConfigError
from quarterdeck.kit.unix_server import UnixServer

log = structlog.get_logger(__name__)
_CHUNK = 64 * 1024
ROUTES = {
    ("POST", "/v1/messages"),
    ("POST", "/v1/messages/count_tokens"),
    ("GET", "/v1/models"),
    ("HEAD", "/"),
    ("GET", "/"),
    ("HEAD", "/api/hello"),
    ("GET", "/api/hello"),
}
"""What a claude-code run may ask of the gateway's port: the Anthropic-compatible routes."""
_REFUSED = (
    b"HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s"
)


def allowed(method: bytes, target: bytes) -> bool:
    path = target.split(b"?", 1)[0].decode("latin-1")
    return (method.decode("latin-1").upper(), path) in ROUTES


class RequestFilter:
    """Finds every request head in a client's byte stream (pipelined and kept-alive ones too)
    and says whether all of them so far are for the gateway's routes."""

    def __init__(self) -> None:
        self._parser = h11.Connection(h11.SERVER)

    def feed(self, data: bytes) -> str | None:
        """None while every complete request head is allowed, else what was refused."""
        self._parser.receive_data(data)
        while True:
            try:
                event = self._parser.next_event()
            except h11.RemoteProtocolError as exc:
                return f"malformed HTTP ({exc})"
            if isinstance(event, h11.Request):
                if not allowed(event.method, event.target) or event.method == b"CONNECT":
                    return f"{event.method.decode('latin-1')} {event.target.decode('latin-1')}"
            elif event is h11.PAUSED:
                # The request ended; h11 waits for our response before parsing the next one,
                # which we do not send through it: a fresh parser takes the bytes after it.
                rest, closed = self._parser.trailing_data
                self._parser = h11.Connection(h11.SERVER)
                if rest:
                    self._parser.receive_data(rest)
                if closed:
                    self._parser.receive_data(b"")
            elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                return None


def gateway_address(url: str) -> tuple[str, int]:
    """(host, port) of an ``http://host[:port]`` gateway URL."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(
            [("QUARTERDECK_AGENT_GATEWAY_URL", f"must be http://host[:port], not {url!r}")]
        )
    return parts.hostname, parts.port or 80


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(_CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def _filtered(
    reader: asyncio.StreamReader, upstream: asyncio.StreamWriter, client: asyncio.StreamWriter
) -> None:
    """Client to gateway, one chunk at a time, each forwarded only once the request heads it
    completes are known to be allowed; a refused one gets a 403 and the connection ends."""
    check = RequestFilter()
    try:
        while chunk := await reader.read(_CHUNK):
            refused = check.feed(chunk)
            if refused is not None:
                log.warning("claude_code.bridge_refused", request=refused[:200])
                body = (
                    b'{"type":"error","error":{"type":"permission_error","message":'
                    b'"quarterdeck: a claude-code run may only call the gateway"}}'
                )
                client.write(_REFUSED % (len(body), body))
                await client.drain()
                upstream.close()
                client.close()
                return
            upstream.write(chunk)
            await upstream.drain()
        if upstream.can_write_eof():
            upstream.write_eof()
    except (ConnectionError, OSError):
        pass


class GatewayBridge(UnixServer):
    """Serves ``socket_path`` (mode 0666: the run's own uid connects from inside); every
    connection is piped to ``host:port``, request heads checked."""

    def __init__(self, socket_path: Path, host: str, port: int) -> None:
        super().__init__(socket_path, mode=0o666)
        self.host, self.port = host, port

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
            except OSError as exc:
                log.warning("claude_code.gateway_unreachable", error=str(exc))
                return
            try:
                await asyncio.gather(_filtered(reader, up_writer, writer), _pipe(up_reader, writer))
            finally:
                up_writer.close()
        finally:
            writer.close()
