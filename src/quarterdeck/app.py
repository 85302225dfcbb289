"""The FastAPI application: routers, the single error handler, and the process lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import Depends, FastAPI, Request
from fastapi import routing as fastapi_routing
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from quarterdeck import __version__, openapi
from quarterdeck.agents import api as agents_api
from quarterdeck.approvals import api as approvals_api
from quarterdeck.budgets import api as budgets_api
from quarterdeck.config import Settings
from quarterdeck.exceptions import QuarterdeckError, Unavailable
from quarterdeck.gateway import anthropic_error_response, is_gateway_path
from quarterdeck.gateway import api as gateway_api
from quarterdeck.gateway import reports_api as gateway_reports_api
from quarterdeck.health import api as health_api
from quarterdeck.health import maintenance_api, probes
from quarterdeck.incidents import api as incidents_api
from quarterdeck.kit.text import json_syntax_message
from quarterdeck.kit.wiring import services
from quarterdeck.reports import api as reports_api
from quarterdeck.rollouts import api as rollouts_api
from quarterdeck.runs import api as runs_api
from quarterdeck.runtime import Runtime
from quarterdeck.scaling import api as scaling_api
from quarterdeck.security.audit import api as audit_api
from quarterdeck.security.auth import api as auth_api
from quarterdeck.security.auth.body_gate import BodyGate, BodyLimits
from quarterdeck.security.auth.dependencies import AUTH_REQUIRED_STATE
from quarterdeck.security.auth.middleware import RateLimitHeaders
from quarterdeck.security.compliance import api as compliance_api
from quarterdeck.security.inputs import NulGuard
from quarterdeck.tenants import api as tenants_api
from quarterdeck.tracing.setup import instrument_app
from quarterdeck.ui import errors as ui_errors
from quarterdeck.ui import is_ui_path
from quarterdeck.ui import routes as ui_routes
from quarterdeck.ui.paths import LOGIN_PATH

log = structlog.get_logger(__name__)
PROBLEM = "application/problem+json"


def problem(
    status: int,
    title: str,
    detail: str,
    type_: str = "about:blank",
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {"type": type_, "title": title, "status": status, "detail": detail, **extra}
    out = dict(headers or {})
    if "retry_after" in extra:
        out["Retry-After"] = str(int(extra["retry_after"]))
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=out)


def install_error_handlers(app: FastAPI) -> None:
    """Every error the API answers, in one place: problem+json, except on the gateway's
    Anthropic-compatible routes, whose clients (Claude Code, the SDKs) read Anthropic's error
    envelope and match its wording."""

    @app.exception_handler(QuarterdeckError)
    async def _ours(request: Request, exc: QuarterdeckError) -> Response:
        if is_gateway_path(request.url.path):
            return anthropic_error_response(exc)
        if exc.status >= 500 and not isinstance(exc, Unavailable):
            log.error("request_failed", path=request.url.path, error=exc.detail)
        if is_ui_path(request.url.path):
            page = ui_errors.error_page(
                request, exc.status, exc.title, exc.detail, getattr(exc, "headers", None)
            )
            if page is not None:
                return page
        return problem(
            exc.status,
            exc.title,
            exc.detail,
            exc.problem_type,
            headers=getattr(exc, "headers", None),  # WWW-Authenticate, RateLimit-* (auth errors)
            instance=request.url.path,
            **exc.extra,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        if is_gateway_path(request.url.path):
            return anthropic_error_response(exc)
        errors = []
        for err in exc.errors():
            if err.get("type") == "json_invalid":  # loc is ("body", offset): name the body
                loc_ = err.get("loc", ())
                why = (err.get("ctx") or {}).get("error")
                message = json_syntax_message(exc.body, loc_[-1] if loc_ else None, why)
                errors.append({"field": "body", "message": message})
                continue
            loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
            errors.append({"field": ".".join(loc) or "body", "message": err.get("msg", "")})
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        if is_ui_path(request.url.path):
            page = ui_errors.error_page(request, 422, "Invalid input", detail)
            if page is not None:
                return page
        return problem(
            422,
            "Request validation failed",
            detail,
            "https://quarterdeck.dev/problems/validation-error",
            instance=request.url.path,
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if is_gateway_path(request.url.path):
            response = anthropic_error_response(exc)
            response.headers.update(exc.headers or {})  # 405's Allow
            return response
        if is_ui_path(request.url.path):
            page = ui_errors.error_page(
                request, exc.status_code, str(exc.detail), str(exc.detail), exc.headers
            )
            if page is not None:
                return page
        return problem(
            exc.status_code,
            str(exc.detail),
            str(exc.detail),
            headers=exc.headers,  # 405's Allow (RFC 9110)
            instance=request.url.path,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled_error", path=request.url.path)
        if is_gateway_path(request.url.path):
            return anthropic_error_response(exc)
        return problem(
            500,
            "Internal error",
            "an unexpected error occurred; see the server log",
            instance=request.url.path,
        )


class QuarterdeckAPI(FastAPI):
    """The app, handing the gateway's hot routes (``POST /v1/messages``, ``count_tokens``) to
    :class:`~quarterdeck.gateway.api.FastGateway` before its middleware stack and router: on a
    relayed call those cost more CPU than the relay itself (see there for what it keeps)."""

    gateway_fast: gateway_api.FastGateway | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.gateway_fast
        if fast is not None and fast.handles(scope):
            await fast.serve(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def body_limits(settings: Settings) -> BodyLimits:
    """The largest body each path takes: run submissions carry tar workspaces, the gateway
    takes what the Messages API takes, every other route far less."""
    runs = settings.run_max_body_bytes
    return BodyLimits(
        default=settings.max_body_bytes,
        exact={"/v1/runs": runs, "/v1/runs/batch": runs},
        under=(("/v1/messages", settings.gateway_max_body_bytes),),
    )


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    """The app. With ``runtime`` given, its lifecycle belongs to the caller (``quarterdeck up``),
    who starts it first: its services are registered for the routes here. An app that owns its
    runtime registers them in the lifespan, once started; until then routes answer 503."""
    owned = runtime is None
    rt = runtime or Runtime(settings, with_workers=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if owned:
            await rt.start()
            rt.register(services(app))
        try:
            yield
        finally:
            if owned:
                await rt.stop()

    app = QuarterdeckAPI(
        title="Quarterdeck",
        version=__version__,
        description="Durable control plane for AI coding agents.",
        lifespan=lifespan,
        # Every route refuses NUL in its query, path and JSON body (422 naming the field).
        dependencies=[Depends(NulGuard(skip=is_gateway_path))],
    )
    registry = services(app)
    readiness: probes.Readiness = rt  # before start too: /ready then reports what is missing
    registry.add(probes.Readiness, readiness)
    if not owned:
        rt.register(registry)
    setattr(app.state, AUTH_REQUIRED_STATE, settings.auth_required)  # fail closed if unset
    install_error_handlers(app)
    app.add_middleware(RateLimitHeaders)
    # Outermost of ours: the key is checked and the body capped before any route reads it.
    app.add_middleware(
        BodyGate,
        limits=body_limits(settings),
        refuse=app.exception_handlers[QuarterdeckError],
        cookie_paths=is_ui_path,  # the dashboard's session cookie stands in for a key there
        cookie_open=frozenset({LOGIN_PATH}),
    )
    app.include_router(probes.router)
    app.include_router(runs_api.router)
    app.include_router(approvals_api.router)
    app.include_router(audit_api.router)
    app.include_router(agents_api.router)
    app.include_router(agents_api.system_router)
    app.include_router(incidents_api.router)
    app.include_router(health_api.router)
    app.include_router(scaling_api.router)
    app.include_router(rollouts_api.router)
    app.include_router(reports_api.router)
    app.include_router(maintenance_api.router)
    app.include_router(budgets_api.router)
    app.include_router(auth_api.router)
    app.include_router(gateway_reports_api.router)
    app.include_router(tenants_api.router)
    app.include_router(compliance_api.router_for(settings))
    ui_routes.install(app)
    if settings.gateway_enabled:
        app.include_router(gateway_api.router)
        app.gateway_fast = gateway_api.FastGateway(app)
    openapi.install(app, settings)  # after every router: it documents and guards them all
    instrument_app(app)  # HTTP server spans, when this process's runtime installed tracing
    build_routes(app)
    return app


def build_routes(app: FastAPI) -> None:
    """Have FastAPI build every included route now, not on the first request that reaches it.

    FastAPI (0.16x) builds an included router's routes (dependants, pydantic adapters) lazily,
    on the event loop, the first time routing walks that router: ~120 ms for our 115 routes in
    all, in stalls of 8-18 ms that held every call in flight, gateway relays included, on each
    new replica's first requests (measured with a loop-lag watchdog). Walking them here moves
    that work before the API answers. A FastAPI without the walker builds routes eagerly.
    """
    walk = getattr(fastapi_routing, "iter_route_contexts", None)
    if walk is not None:
        for _ in walk(app.router.routes):
            pass
