"""Bounded request bodies, and the caller's key checked before any body byte is read.

Why: FastAPI reads and parses a route's whole JSON body before it resolves the route's
dependencies, so the ``require(...)`` that answers 401 ran only after the body was in memory: an
unauthenticated 400 MB upload took a process from 112 MB to 1.28 GB before its 401 (issue 16).
:class:`BodyGate` sits in front of the routes and, for a request that carries a body:

1. with authentication on, checks the presented key from the headers alone (401, or 503 while
   authentication is not ready), reading nothing; the route's own ``require(...)`` still counts
   the request against the limits and checks the permission (the key is cached, so the second
   look costs a hash);
2. refuses a declared ``Content-Length`` over the route's limit at once (413);
   On the web dashboard's paths (``cookie_paths``) the session cookie stands in for the key:
   a post there needs a live session (``sessions.py``), except the sign-in form itself
   (``cookie_open``), whose body is one key and is capped like any other;
3. counts the bytes of any other body (chunked, or with no length) as the route reads them and
   cuts it at the limit (413), so no route ever holds more than the limit.

A refusal goes through the app's one error handler (``refuse``, given by ``app.py``): problem+json,
or Anthropic's envelope on the gateway's paths. Then the rest of the body (:func:`keep_alive`):
most clients (httpx, the SDKs, curl) send a whole body before they read the answer, and a server
that closes while they still send makes their kernel reset the connection, losing the answer; but
uvicorn, left a refused body, reads and discards all of it, however long the client keeps
sending. So up to :data:`DRAIN_MAX` bytes are skipped (by uvicorn after the answer for a declared
length, here before it for a chunked one) and the connection stays open; beyond that, or for a
client waiting on ``Expect: 100-continue``, the answer says ``Connection: close`` and the server
closes instead of reading an upload it already refused.

The gateway's hot routes never pass here (``FastGateway`` serves them before the middleware
stack); they check the key before reading too, cap with the gateway's own limit, and end a
refusal the same way (:func:`keep_alive`).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from quarterdeck.exceptions import QuarterdeckError, Unavailable
from quarterdeck.kit.wiring import services
from quarterdeck.security.auth.dependencies import auth_service
from quarterdeck.security.auth.run_tokens import is_run_token
from quarterdeck.security.auth.sessions import SESSION_COOKIE, SessionService

DRAIN_MAX = 1024 * 1024
"""The most of a refused body skipped to keep the connection (and the client able to read the
answer); a longer one gets ``Connection: close``."""
DRAIN_SECONDS = 2.0
"""How long a chunked refused body may take to end before the connection is closed instead."""

Refuse = Callable[[Request, Exception], Response | Awaitable[Response]]
"""The app's error handler for :class:`QuarterdeckError` (Starlette's handler signature)."""


class BodyTooLarge(QuarterdeckError):
    """413: a request body over its route's limit; refused before the rest is read."""

    status = 413
    type_slug = "request-too-large"
    title = "Request body too large"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the request body is larger than this route's limit of {limit} bytes",
            extra={"limit": limit},
        )
        self.limit = limit


@dataclass(frozen=True)
class BodyLimits:
    """The largest body each path takes: ``exact`` paths first, then the first of ``under``
    whose prefix is the path or a parent of it, else ``default``."""

    default: int
    exact: Mapping[str, int] = field(default_factory=dict)
    under: tuple[tuple[str, int], ...] = ()

    def limit_for(self, path: str) -> int:
        found = self.exact.get(path)
        if found is not None:
            return found
        for prefix, limit in self.under:
            if path == prefix or path.startswith(prefix + "/"):
                return limit
        return self.default


def declared_length(headers: Headers) -> int | None:
    """The ``Content-Length`` as a number, or None (absent, or not a plain number: then the
    bytes are counted as they come instead)."""
    value = headers.get("content-length")
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isascii() and value.isdigit() else None  # not '²', say


def carries_body(headers: Headers, length: int | None) -> bool:
    """Whether a body follows: a positive length, or a ``Transfer-Encoding`` (chunked)."""
    if length is not None:
        return length > 0
    return "transfer-encoding" in headers or "content-length" in headers


async def keep_alive(headers: Headers, length: int | None, receive: Receive) -> bool:
    """Whether the connection may stay open after a refusal that left the body unread (or read
    up to its limit): a declared length up to :data:`DRAIN_MAX` is skipped by the server after
    the answer; a chunked body is read and dropped here until it ends, if it does within
    :data:`DRAIN_MAX` bytes and :data:`DRAIN_SECONDS`. Never for ``Expect: 100-continue``: that
    client sends no body until told to, so none would come to skip."""
    if "100-continue" in headers.get("expect", "").lower():
        return False
    if length is not None:
        return length <= DRAIN_MAX
    left = DRAIN_MAX
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return False  # the client left
                left -= len(message.get("body", b""))
                if not message.get("more_body", False):
                    return True
                if left < 0:
                    return False
    except TimeoutError:
        return False


def presented_key(headers: Headers) -> str | None:
    """The key as ``require(...)`` reads it: ``Authorization: Bearer``, else ``x-api-key``."""
    scheme, credentials = get_authorization_scheme_param(headers.get("authorization"))
    if scheme.lower() == "bearer" and credentials:
        return credentials
    return headers.get("x-api-key") or None


class _Overflow(Exception):
    """Raised into the route reading the body once it passes the limit."""


class _Counter:
    """The route's ``receive`` and ``send``, counting body bytes and, after an overflow that
    came before the response started, holding back whatever the route answers instead."""

    def __init__(self, receive: Receive, send: Send, limit: int) -> None:
        self._receive = receive
        self._send = send
        self.limit = limit
        self.size = 0
        self.overflowed = False
        self.finished = False  # the body's last message arrived (nothing left to skip)
        self.started = False

    async def receive(self) -> Message:
        if self.overflowed:
            raise _Overflow
        message = await self._receive()
        self.finished = message["type"] != "http.request" or not message.get("more_body", False)
        if message["type"] == "http.request":
            self.size += len(message.get("body", b""))
            if self.size > self.limit:
                self.overflowed = True
                raise _Overflow
        return message

    async def send(self, message: Message) -> None:
        if self.overflowed and not self.started:
            return  # the route's answer to the cut body (a 400, say) is replaced by the 413
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


class BodyGate:
    """Pure ASGI middleware; see the module docstring. Requests without a body pass untouched."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limits: BodyLimits,
        refuse: Refuse,
        cookie_paths: Callable[[str], bool] = lambda path: False,
        cookie_open: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.limits = limits
        self._refuse = refuse
        self._cookie_paths = cookie_paths
        self._cookie_open = cookie_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = declared_length(headers)
        if not carries_body(headers, length):
            await self.app(scope, receive, send)
            return
        request = Request(scope)  # no receive: nothing here may read the body
        limit = self.limits.limit_for(scope["path"])
        try:
            await self._authenticate(request, headers)
            if length is not None and length > limit:
                raise BodyTooLarge(limit)
        except QuarterdeckError as exc:
            await self._answer(request, exc, length, finished=False, receive=receive, send=send)
            return
        counter = _Counter(receive, send, limit)
        try:
            await self.app(scope, counter.receive, counter.send)
        except Exception:
            if not counter.overflowed or counter.started:
                raise
        if counter.overflowed and not counter.started:
            too_large = BodyTooLarge(limit)
            done = counter.finished
            await self._answer(
                request, too_large, length, finished=done, receive=receive, send=send
            )

    async def _authenticate(self, request: Request, headers: Headers) -> None:
        path = request.url.path
        if self._cookie_paths(path):
            if path in self._cookie_open:
                return
            sessions = services(request.app).get(SessionService)
            if sessions is None:
                raise Unavailable("the dashboard is not ready yet")
            await sessions.resolve(request.cookies.get(SESSION_COOKIE))
            return
        service = auth_service(request)  # 503 when auth is required but not ready
        key = presented_key(headers)
        # A run token is resolved even with auth off, as ``require(...)`` does (see there).
        if service is not None and (service.required or is_run_token(key)):
            await service.authenticate(key)

    async def _answer(
        self,
        request: Request,
        exc: QuarterdeckError,
        length: int | None,
        *,
        finished: bool,
        receive: Receive,
        send: Send,
    ) -> None:
        answer = self._refuse(request, exc)
        response = await answer if inspect.isawaitable(answer) else answer
        if not finished and not await keep_alive(request.headers, length, receive):
            response.headers["connection"] = "close"
        await response(request.scope, receive, send)
