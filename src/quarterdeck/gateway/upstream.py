"""Where the gateway's calls go: the :class:`Upstream` protocol and its HTTP implementation.

The relay needs exactly one thing from an upstream: send these bytes with these headers and
give back the status, the headers and the body *as it arrives*, unparsed. :class:`HttpUpstream`
does that over :class:`~quarterdeck.gateway.http1.Http1Client`, one pool of keep-alive
connections sized for hundreds of concurrent streams (a connection per call would add a TCP and
TLS handshake to every request). That client exists because the relay's HTTP client was the
gateway's largest own cost: relaying an 80 KB call took ~2.7 ms of CPU with
``httpx.AsyncClient``, ~1.2 ms with aiohttp, and aiohttp's own share of that (~260 us) is ~115 us
with the lean client (its module docstring has the measurements).
:class:`~quarterdeck.gateway.simulated.SimulatedUpstream` answers the same calls in process
when there is no upstream key.

Connection failures surface as :class:`~quarterdeck.exceptions.ProviderError` with
``error_type`` ``connection_error`` or ``timeout``, so the shared retry classification and
circuit breakers treat them like any provider failure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import structlog
from prometheus_client import Gauge
from starlette.responses import Response

from quarterdeck import metrics
from quarterdeck.config import Settings
from quarterdeck.exceptions import ProviderError
from quarterdeck.gateway.http1 import Http1Client, Http1Response

log = structlog.get_logger(__name__)

ANTHROPIC_API = "https://api.anthropic.com"
UPSTREAM_CONNECTIONS = Gauge(
    "quarterdeck_gateway_upstream_connections",
    "The gateway's connections to its upstream: in_use by a call, idle in the pool, and the "
    "pool's limit (calls past it wait for a connection)",
    ["state"],
    registry=metrics.REGISTRY,
)
DROPPED_REQUEST_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "authorization",
        "x-api-key",
        "cookie",
        "accept-encoding",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "upgrade",
        "expect",
        "proxy-authorization",
    }
)
"""Never forwarded: the client's credentials and hop-by-hop headers. Everything else is, the
``anthropic-*`` headers above all, unchanged and without an allowlist (research A1)."""
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "date",
        "server",
    }
)
"""Response headers that describe one connection, not the answer; our server sets its own."""


def forwarded_headers(headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The request headers that go upstream (lower-case names), in their order."""
    return [
        (k, v)
        for k, v in headers
        if k not in DROPPED_REQUEST_HEADERS and not k.startswith("x-quarterdeck-")
    ]


def relayed_headers(headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Upstream response headers minus the hop-by-hop ones."""
    return [(k, v) for k, v in headers if k not in HOP_BY_HOP]


@dataclass(slots=True)
class UpstreamReply:
    """An upstream answer whose body has not been read yet.

    ``body`` yields raw bytes as they arrive (no decoding, no re-chunking); ``close`` must be
    awaited once the relay is done with it, read to the end or not, to free the connection.
    """

    status: int
    headers: list[tuple[str, str]]
    body: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None]]

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    async def read(self) -> bytes:
        """The whole body, then close: for error answers the relay returns or retries."""
        try:
            return b"".join([chunk async for chunk in self.body])
        finally:
            await self.close()


class Upstream(Protocol):
    """An Anthropic Messages API: HTTP (:class:`HttpUpstream`) or simulated in process."""

    name: str
    """Breakers and metrics name calls by it: ``anthropic`` or ``simulated``."""

    async def send(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        *,
        tenant: str,
    ) -> UpstreamReply:
        """Send one request; ``path`` includes any query. Raises ProviderError when no HTTP
        answer came back."""
        ...

    async def aclose(self) -> None: ...


def upstream_url(settings: Settings) -> str:
    """``gateway_upstream_url``, else ``anthropic_base_url``, else Anthropic's API."""
    return (settings.gateway_upstream_url or settings.anthropic_base_url or ANTHROPIC_API).rstrip(
        "/"
    )


def upstream_keys(settings: Settings) -> tuple[str | None, dict[str, str]]:
    """The default upstream key and the per-tenant ones (both None/empty: no key at all)."""
    key = settings.gateway_upstream_api_key or settings.anthropic_api_key
    tenants = {t: k.get_secret_value() for t, k in settings.gateway_tenant_upstream_keys.items()}
    return (key.get_secret_value() if key is not None else None), tenants


class HttpUpstream:
    """Anthropic's API (or anything speaking it) over HTTP/1.1 keep-alive connections.

    Timeouts: connecting gets ``connect_timeout_s``; reading gets ``read_timeout_s`` (the
    provider timeout, 600 s by default) between bytes, never less, because a thinking model may
    stay silent for minutes between pings and a shorter timeout would cut healthy streams; a
    call waits as long for a free connection when all ``max_connections`` are busy.

    No cookies are kept or sent (the client has no jar): one client serves every tenant, so a
    cookie the upstream sets for one caller must never ride along on another's call. No
    decompression, and ``accept-encoding: identity``: the meter reads the bytes it relays, and
    the client gets them as the upstream sent them.
    """

    name = "anthropic"

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None,
        tenant_keys: Mapping[str, str] | None = None,
        read_timeout_s: float = 600.0,
        connect_timeout_s: float = 10.0,
        max_connections: int = 1000,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = api_key
        self._tenant_keys = dict(tenant_keys or {})
        client = self._client = Http1Client(
            self.base_url,
            max_connections=max_connections,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
        )
        # Read at scrape time: nothing is counted on the call path. The process's newest
        # upstream is the one reported (there is one per gateway).
        UPSTREAM_CONNECTIONS.labels("in_use").set_function(lambda: client.in_use)
        UPSTREAM_CONNECTIONS.labels("idle").set_function(lambda: client.idle)
        UPSTREAM_CONNECTIONS.labels("limit").set_function(lambda: client.max_connections)

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpUpstream:
        key, tenants = upstream_keys(settings)
        return cls(
            upstream_url(settings),
            api_key=key,
            tenant_keys=tenants,
            read_timeout_s=settings.provider_timeout,
        )

    def key_for(self, tenant: str) -> str | None:
        return self._tenant_keys.get(tenant, self._key)

    async def send(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        *,
        tenant: str,
    ) -> UpstreamReply:
        out = list(headers)
        key = self.key_for(tenant)
        if key is not None:
            out.append(("x-api-key", key))
        # Identity: the meter reads the bytes it relays, and a compressed body it could not.
        out.append(("accept-encoding", "identity"))
        try:
            response = await self._client.request(method, path, out, body)
        except TimeoutError as exc:
            raise ProviderError(
                f"upstream timed out: {exc!r}", error_type="timeout", retryable=True
            ) from exc
        except OSError as exc:  # refused, reset, closed early, malformed, TLS
            raise ProviderError(
                f"upstream unreachable: {exc!r}", error_type="connection_error", retryable=True
            ) from exc
        except ValueError as exc:  # a header value that cannot be sent (a line break in it)
            raise ProviderError(
                f"upstream request not sent: {exc}", error_type="connection_error", retryable=False
            ) from exc
        return UpstreamReply(
            status=response.status,
            headers=[
                (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in response.headers
            ],
            body=_raw(response),
            close=_closer(response),
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def _closer(response: Http1Response) -> Callable[[], Awaitable[None]]:
    """Free the connection: back to the pool when the body was read to its end, else closed."""

    async def close() -> None:
        response.release()

    return close


async def _raw(response: Http1Response) -> AsyncIterator[bytes]:
    """The body as the socket delivers it; a connection lost mid-body ends it as ProviderError."""
    try:
        async for chunk in response.body():
            yield chunk
    except (OSError, TimeoutError) as exc:
        raise ProviderError(
            f"upstream stream broke: {exc!r}", error_type="connection_error"
        ) from exc


class ModelList:
    """``GET /v1/models``: the upstream's list merged with the price table's models, cached.

    Clients give this 3 s (Claude Code's model discovery) and treat any redirect or error as a
    failure, so the upstream gets ``timeout_s``, a failed fetch still answers from the price
    table, and the answer is cached for ``ttl_s``: after the first call it costs nothing.
    """

    def __init__(
        self,
        upstream: Upstream,
        known: Sequence[str],
        *,
        ttl_s: float = 300.0,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.upstream = upstream
        self.known = list(known)
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._cached: tuple[float, bytes] | None = None
        self._lock = asyncio.Lock()

    async def body(self) -> bytes:
        cached = self._cached
        if cached is None or self._clock() - cached[0] > self.ttl_s:
            async with self._lock:  # one fetch at a time; the others wait for its answer
                cached = self._cached
                if cached is None or self._clock() - cached[0] > self.ttl_s:
                    cached = self._cached = (self._clock(), await self._fetch())
        return cached[1]

    async def _fetch(self) -> bytes:
        found: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(self.timeout_s):
                reply = await self.upstream.send("GET", "/v1/models?limit=1000", [], b"", tenant="")
                data = await reply.read()
            listed = orjson.loads(data).get("data") if reply.status == 200 else None
            if isinstance(listed, list):
                found = [m for m in listed if isinstance(m, dict) and "id" in m]
        except Exception as exc:  # any failure at all: the price table still answers
            log.info("gateway.models_upstream_unavailable", error=repr(exc))
        return models_body(found, self.known)


def models_body(upstream: list[dict[str, Any]], known: Sequence[str]) -> bytes:
    """A ``/v1/models`` page: the upstream's models, then the price table's it did not list."""
    seen = {str(m["id"]) for m in upstream}
    data = list(upstream)
    data.extend(
        {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
        for m in known
        if m not in seen
    )
    first = data[0]["id"] if data else None
    last = data[-1]["id"] if data else None
    return orjson.dumps({"data": data, "has_more": False, "first_id": first, "last_id": last})


class VerbatimResponse(Response):
    """An upstream answer read whole, bytes and headers as received (repeated headers kept)."""

    def __init__(self, status: int, body: bytes, headers: Sequence[tuple[str, str]]) -> None:
        self.status_code = status
        self.background = None
        self.body = body
        raw = [
            (k.encode("latin-1"), v.encode("latin-1")) for k, v in headers if k != "content-length"
        ]
        raw.append((b"content-length", str(len(body)).encode()))
        self.raw_headers = raw
