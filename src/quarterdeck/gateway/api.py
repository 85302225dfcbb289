"""The Anthropic-compatible routes: ``/v1/messages``, ``count_tokens``, ``/v1/models``, probes.

Thin: read the body within the size limit, parse it once, read the attribution headers, check
the caller's ``gateway:use``, and hand it all to the :class:`~quarterdeck.gateway.service.Gateway`.
The body is read here as a stream, so an oversized one is refused at the limit rather than
buffered whole first (Claude Code bodies reach the API's 32 MB). Errors on these paths are
answered in Anthropic's envelope by the app's error handler
(:func:`quarterdeck.gateway.errors.is_gateway_path`).

The two hot routes (``POST /v1/messages`` and ``count_tokens``) are also served by
:class:`FastGateway`, which ``app.py`` runs before its middleware stack and router; the routes
declared here serve every other app (tests mounting the router) and document them.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Annotated, Any

import orjson
import structlog
from fastapi import APIRouter, Depends, Request, Response
from fastapi import routing as fastapi_routing
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from quarterdeck.config import Settings
from quarterdeck.exceptions import QuarterdeckError
from quarterdeck.gateway.errors import InvalidRequest, RequestTooLarge, anthropic_error_response
from quarterdeck.gateway.service import (
    BudgetHolds,
    CallRequest,
    Gateway,
    GatewayConfig,
    Inspector,
    Parsed,
    Prices,
    Recorder,
)
from quarterdeck.gateway.simulated import SimulatedUpstream
from quarterdeck.gateway.upstream import HttpUpstream, Upstream, upstream_keys
from quarterdeck.kit.ids import is_id
from quarterdeck.kit.latency import parse_latency
from quarterdeck.kit.wiring import provide
from quarterdeck.resilience.breaker import Breakers
from quarterdeck.resilience.retry import RetryPolicy
from quarterdeck.security.auth import Permission, Principal, require
from quarterdeck.security.auth.body_gate import declared_length, keep_alive
from quarterdeck.security.auth.dependencies import Requirement, authorize
from quarterdeck.security.auth.middleware import RateLimitHeaders
from quarterdeck.security.auth.permissions import TENANT_RE

log = structlog.get_logger(__name__)
router = APIRouter(tags=["gateway"])
USE = require(Permission.GATEWAY_USE)
PROVIDE_GATEWAY = provide(Gateway, unavailable="the gateway is not running")
CanUse = Annotated[Principal, Depends(USE)]
Gateway_ = Annotated[Gateway, Depends(PROVIDE_GATEWAY)]

DEFAULT_MAX_TOKENS = 4096
"""The worst case assumed for a request without ``max_tokens`` (the upstream will refuse it)."""
MAX_MODEL_CHARS = 256
MAX_TOKENS_LIMIT = 1_000_000
"""Far above any model's output limit; a larger max_tokens is a mistake every upstream refuses,
and refusing it here keeps absurd numbers out of the budget and token-rate arithmetic."""
RUN_HEADER = "x-quarterdeck-run"
TENANT_HEADER = "x-quarterdeck-tenant"
SESSION_HEADER = "x-claude-code-session-id"
AGENT_HEADER = "x-claude-code-agent-id"
HEADER_LIMITS = {RUN_HEADER: 64, TENANT_HEADER: 64, SESSION_HEADER: 128, AGENT_HEADER: 128}
"""Longest value of each attribution header (what the reports filter on)."""


def parse_request(raw: bytes) -> Parsed:
    """The request's model, stream flag and max_tokens; 400 for what no upstream would take."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"quarterdeck: the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("quarterdeck: the body must be a JSON object")
    model = body.get("model")
    if (
        not isinstance(model, str)
        or not model.strip()
        or len(model) > MAX_MODEL_CHARS
        or not model.isprintable()  # it is stored, labelled and sent back in a header
    ):
        raise InvalidRequest(
            f"model: field required (a model name of at most {MAX_MODEL_CHARS} printable "
            "characters)"
        )
    if not isinstance(body.get("messages"), list):
        raise InvalidRequest("messages: field required (a list of messages)")
    max_tokens = body.get("max_tokens", DEFAULT_MAX_TOKENS)
    if (
        not isinstance(max_tokens, int)
        or isinstance(max_tokens, bool)
        or not 1 <= max_tokens <= MAX_TOKENS_LIMIT
    ):
        raise InvalidRequest(f"max_tokens: must be an integer from 1 to {MAX_TOKENS_LIMIT}")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("stream: must be true or false")
    return Parsed(body, model, stream, max_tokens)


def attribution(headers: Mapping[str, str], name: str) -> str | None:
    """A header naming a run, tenant, session or agent; 400 when longer than it may be."""
    value = headers.get(name)
    if value is None or not value.strip():
        return None
    if len(value) > HEADER_LIMITS[name]:
        raise InvalidRequest(f"{name}: at most {HEADER_LIMITS[name]} characters")
    value = value.strip()
    if name == RUN_HEADER and not is_id(value, "run"):
        raise InvalidRequest(f"{name}: not a run id (run_...)")
    if name == TENANT_HEADER and not TENANT_RE.fullmatch(value):
        raise InvalidRequest(f"{name}: not a tenant name")
    return value


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing with 413 as soon as it is known to pass ``limit`` bytes."""
    declared = declared_length(request.headers)
    if declared is not None and declared > limit:
        raise RequestTooLarge(_too_large(limit))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(_too_large(limit))
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(limit: int) -> str:
    return f"quarterdeck: the request body is larger than the gateway's limit of {limit} bytes"


def _headers(request: Request) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]


def build_gateway(
    settings: Settings,
    *,
    prices: Prices,
    recorder: Recorder,
    holds: BudgetHolds | None = None,
    inspector: Inspector | None = None,
    breakers: Breakers | None = None,
    known_models: Sequence[str] = (),
    upstream: Upstream | None = None,
    policy: RetryPolicy | None = None,
) -> Gateway:
    """The gateway ``settings`` describe: HTTP to the configured upstream, or the simulated one
    when no upstream key is configured anywhere and no upstream URL was given."""
    if upstream is None:
        upstream = (
            SimulatedUpstream(parse_latency(settings.simulated_latency))
            if uses_simulated(settings)
            else HttpUpstream.from_settings(settings)
        )
    return Gateway(
        upstream,
        prices=prices,
        recorder=recorder,
        holds=holds,
        inspector=inspector,
        breakers=breakers,
        config=GatewayConfig.from_settings(settings),
        fallbacks=settings.model_fallbacks,
        policy=policy,
        known_models=known_models,
    )


def uses_simulated(settings: Settings) -> bool:
    """No key to call Anthropic with: ``provider: simulated``, or no key and no upstream URL."""
    if settings.provider == "simulated":
        return True
    key, tenant_keys = upstream_keys(settings)
    return key is None and not tenant_keys and settings.gateway_upstream_url is None


Endpoint = Callable[[Request, Principal, Gateway], Coroutine[Any, Any, Response]]


class DirectRoute(APIRoute):
    """An ``APIRoute`` (documented, walked, guarded by ``require(...)`` like any other) whose
    handler calls its two dependencies directly instead of through FastAPI's resolution.

    Why: on the gateway's hot path the resolution (five dependencies, two of them sync and so
    run on the thread pool) cost ~0.6 ms CPU a call (2.4 ms to 1.8 ms in process, measured) of a
    1 ms overhead budget. It applies only when the route's dependencies are exactly ``CanUse``
    and ``Gateway_`` (as declared, or as included without extra router dependencies);
    otherwise FastAPI's own handler runs, so an added dependency is never silently skipped.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        dependant = self.dependant
        var = getattr(fastapi_routing, "_effective_route_context_var", None)
        context = var.get() if var is not None else None
        if context is not None and context.original_route is self:
            dependant = context.dependant
        calls = [d.call for d in dependant.dependencies]
        if len(calls) != 2 or calls[0] is not USE or calls[1] is not PROVIDE_GATEWAY:
            return super().get_route_handler()
        assert isinstance(USE, Requirement)
        endpoint: Endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            principal = await authorize(USE, request)
            return await endpoint(request, principal, PROVIDE_GATEWAY(request))

        return handler


async def create_message(request: Request, principal: CanUse, gateway: Gateway_) -> Response:
    raw = await read_body(request, gateway.config.max_body_bytes)
    parsed = parse_request(raw)
    headers = _headers(request)
    lookup = request.headers
    call = CallRequest(
        raw,
        parsed,
        headers,
        _query(request),
        tenant=attribution(lookup, TENANT_HEADER),
        run_id=attribution(lookup, RUN_HEADER),
        session_id=attribution(lookup, SESSION_HEADER),
        agent_id=attribution(lookup, AGENT_HEADER),
    )
    return await gateway.messages(call, principal)


def _query(request: Request) -> str:
    """The raw query string (``beta=true``), as sent: no URL object is built for it."""
    return bytes(request.scope.get("query_string", b"")).decode("latin-1")


router.add_api_route(
    "/v1/messages",
    create_message,
    methods=["POST"],
    summary="Create a message (Anthropic Messages API)",
    route_class_override=DirectRoute,
)


@router.post("/v1/messages/count_tokens", summary="Count a message's tokens (forwarded)")
async def count_tokens(request: Request, principal: CanUse, gateway: Gateway_) -> Response:
    raw = await read_body(request, gateway.config.max_body_bytes)
    return await gateway.count_tokens(
        raw,
        _headers(request),
        principal,
        query=_query(request),
        tenant=attribution(request.headers, TENANT_HEADER),
    )


@router.get("/v1/models", summary="List the models the gateway routes")
async def list_models(principal: CanUse, gateway: Gateway_) -> Response:
    return await gateway.models()


@router.head("/", include_in_schema=False)
@router.head("/api/hello", include_in_schema=False)
async def probe() -> Response:
    """Claude Code's start-up connection probe (``HEAD /`` observed, ``/api/hello`` documented)."""
    return Response(status_code=200)


FAST_ROUTES: dict[str, Endpoint] = {
    "/v1/messages": create_message,
    "/v1/messages/count_tokens": count_tokens,
}


class FastGateway:
    """The gateway's two POST routes served before the app's middleware stack and router.

    Why: through Starlette's and FastAPI's stack (server-error, telemetry, body-limit, our
    body-gate and rate-limit-headers, exception and exit-stack middlewares, then a router that
    tries every route's pattern in turn) a relayed call paid more CPU than the relay itself.
    ``app.py``'s app hands these two paths here first; the routes stay declared on
    :data:`router` (OpenAPI, the route walk that proves every route is guarded) and serve any
    app without this.

    It keeps what those layers do for these routes: the same ``gateway:use`` check as the
    route's dependency (:func:`authorize`: 401, the key's and tenant's request limits, 403),
    the ``RateLimit-*`` headers (:class:`RateLimitHeaders`), and every error, expected or not,
    answered in Anthropic's envelope as ``app.py``'s handler does on gateway paths. The key is
    checked before the body is read, the body is capped by the gateway's own limit
    (``read_body``, as the app's ``BodyGate`` would), and an error answered with the body not
    read to its end skips a short rest or closes the connection (``keep_alive``) rather than
    have the server read and discard the rest of a refused upload.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._serve = RateLimitHeaders(self._handle)

    @staticmethod
    def handles(scope: Scope) -> bool:
        return (
            scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in FAST_ROUTES
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """As a wrapper around ``app``: the fast routes here, everything else to ``app``."""
        if self.handles(scope):
            await self.serve(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self.app  # what Starlette sets: the services and auth state live there
        await self._serve(scope, receive, send)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        finished = False

        async def tracked() -> Message:
            nonlocal finished
            message = await receive()
            finished = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        request = Request(scope, tracked)
        try:
            principal = await authorize(USE, request)  # before a byte of the body is read
            gateway = PROVIDE_GATEWAY(request)
            response = await FAST_ROUTES[scope["path"]](request, principal, gateway)
        except Exception as exc:
            if not isinstance(exc, QuarterdeckError | HTTPException):
                log.exception("unhandled_error", path=scope["path"])
            response = anthropic_error_response(exc)
            length = declared_length(request.headers)
            if not finished and not await keep_alive(request.headers, length, tracked):
                response.headers["connection"] = "close"  # refused: not worth reading the rest
        await response(scope, receive, send)
