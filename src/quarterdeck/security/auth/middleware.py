"""Adds the ``RateLimit-*`` headers to every response of a rate-limited request.

The limit is counted in the route dependency, which cannot reach the response of a route that
builds its own (streams, plain text) or of an error raised later (404, 409). This ASGI
middleware reads the decision the dependency left in the request state as the response
starts, so every answer says where the caller stands. Pure ASGI (not ``BaseHTTPMiddleware``)
so Server-Sent Events stream through untouched.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from quarterdeck.security.auth.dependencies import RATELIMIT_STATE
from quarterdeck.security.auth.quota import Decision


class RateLimitHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                decision = state.get(RATELIMIT_STATE)
                if isinstance(decision, Decision):
                    headers = MutableHeaders(scope=message)
                    for name, value in decision.headers().items():
                        if name not in headers:
                            headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
