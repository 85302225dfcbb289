"""Errors the gateway makes itself, in the shape Anthropic clients understand.

Clients behind the gateway (Claude Code, the Anthropic SDKs) parse ``{"type": "error", "error":
{"type": ..., "message": ...}, "request_id": ...}`` and decide from the status, ``error.type``,
``retry-after`` and ``x-should-retry`` whether to retry, stop or compact. A problem+json body
would reach them as an unreadable error, so every error on a gateway route (including the auth
dependency's 401/403/429, raised before any gateway code runs) goes through
:func:`anthropic_error_response`; ``app.py``'s one error handler calls it when
:func:`is_gateway_path` says the path is ours.

Errors the *upstream* returned never come through here: they are relayed verbatim, because
Claude Code's recovery (auto-compaction on "prompt is too long") matches their wording.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import orjson
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from quarterdeck.budgets.models import BudgetExceeded
from quarterdeck.exceptions import (
    NotFound,
    ProviderError,
    QuarterdeckError,
    Unavailable,
    ValidationFailed,
)
from quarterdeck.kit.ids import new_id
from quarterdeck.resilience.breaker import CircuitOpenError
from quarterdeck.security.auth.errors import AuthError, RateLimited

GATEWAY_PATHS = ("/v1/messages", "/v1/models")
"""Paths (and everything under them) whose errors use Anthropic's envelope."""

ERROR_TYPES: Mapping[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
    529: "overloaded_error",
}


class GatewayError(QuarterdeckError):
    """An error the gateway answers itself: its HTTP status, Anthropic ``error.type`` and
    extra headers are fixed at the raise site, so the mapping below needs no guessing."""

    status = 400
    error_type = "invalid_request_error"
    type_slug = "gateway-error"
    title = "Gateway error"

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        error_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        if status is not None:
            self.status = status
        self.error_type = error_type or ERROR_TYPES.get(self.status, "api_error")
        self.headers: dict[str, str] = dict(headers or {})


class InvalidRequest(GatewayError):
    """400: a body that is not JSON, or lacks what every Messages request needs."""

    status = 400
    error_type = "invalid_request_error"


class RequestTooLarge(GatewayError):
    """413: a body over ``gateway_max_body_bytes``; refused before it is all read."""

    status = 413
    error_type = "request_too_large"


class TokenRateLimited(GatewayError):
    """429: the key's tokens-per-minute are spent for now (a throttle: retrying later works)."""

    status = 429
    error_type = "rate_limit_error"

    def __init__(self, detail: str, *, retry_after_s: float) -> None:
        seconds = max(1, math.ceil(retry_after_s))
        super().__init__(detail, headers={"retry-after": str(seconds)})
        self.retry_after = seconds


class UpstreamUnreachable(GatewayError):
    """502: every attempt failed without an HTTP answer (connection refused, reset, timeout)."""

    status = 502
    error_type = "api_error"


def is_gateway_path(path: str) -> bool:
    """True for the Anthropic-compatible routes, whose errors use :func:`anthropic_error_response`."""
    return any(path == p or path.startswith(p + "/") for p in GATEWAY_PATHS)


def request_id() -> str:
    """A request id in the style of Anthropic's (``req_...``), for errors the gateway makes."""
    return new_id("req_qd")


def envelope(error_type: str, message: str, req_id: str | None = None) -> bytes:
    """The JSON body of an Anthropic error."""
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    if req_id is not None:
        body["request_id"] = req_id
    return orjson.dumps(body)


def error_response(
    status: int,
    error_type: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    req_id: str | None = None,
) -> Response:
    """An Anthropic error response; ``request-id`` is set like the API sets it."""
    rid = req_id or request_id()
    out = {"request-id": rid, **(headers or {})}
    return Response(
        envelope(error_type, message, rid),
        status_code=status,
        media_type="application/json",
        headers=out,
    )


def _budget_retry_after(exc: BudgetExceeded) -> int | None:
    """Seconds until the refused budget's period resets (None for a run budget: never)."""
    return None if exc.retry_after_s is None else max(1, exc.retry_after_s)


def _retry_after(value: float) -> str:
    return str(max(1, math.ceil(value)))


def classify(exc: BaseException) -> tuple[int, str, str, dict[str, str]]:
    """``(status, error.type, message, headers)`` for any exception raised on a gateway route.

    Pure apart from reading the exception, so every branch is unit-tested directly.
    """
    headers: dict[str, str] = {}
    if isinstance(exc, GatewayError):
        return exc.status, exc.error_type, exc.detail, dict(exc.headers)
    if isinstance(exc, BudgetExceeded):
        headers["x-should-retry"] = "false"
        seconds = _budget_retry_after(exc)
        if seconds is not None:
            headers["retry-after"] = str(seconds)
        return 429, "billing_error", f"quarterdeck: {exc.detail}", headers
    if isinstance(exc, AuthError):
        headers.update(exc.headers)
        if isinstance(exc, RateLimited):
            headers["retry-after"] = _retry_after(exc.retry_after)
        return exc.status, ERROR_TYPES.get(exc.status, "api_error"), exc.detail, headers
    if isinstance(exc, CircuitOpenError):
        headers["retry-after"] = _retry_after(exc.retry_in)
        return 529, "overloaded_error", f"quarterdeck: upstream {exc.detail}", headers
    if isinstance(exc, Unavailable):
        headers["retry-after"] = _retry_after(exc.retry_after)
        return 503, "overloaded_error", f"quarterdeck: {exc.detail}", headers
    if isinstance(exc, ValidationFailed | RequestValidationError):
        message = exc.detail if isinstance(exc, ValidationFailed) else _validation_text(exc)
        return 400, "invalid_request_error", message, headers
    if isinstance(exc, NotFound):
        return 404, "not_found_error", exc.detail, headers
    if isinstance(exc, ProviderError):
        return 502, "api_error", f"quarterdeck: upstream failed: {exc.detail}", headers
    if isinstance(exc, StarletteHTTPException):
        status = exc.status_code
        return status, ERROR_TYPES.get(status, "api_error"), str(exc.detail), headers
    if isinstance(exc, QuarterdeckError):
        status = exc.status
        return status, ERROR_TYPES.get(status, "api_error"), exc.detail, headers
    return 500, "api_error", "quarterdeck: internal error; see the server log", headers


def _validation_text(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg', '')}")
    return "; ".join(parts) or "invalid request"


def anthropic_error_response(exc: BaseException) -> Response:
    """The Anthropic-shaped response for ``exc``; ``app.py`` uses it on gateway paths."""
    status, error_type, message, headers = classify(exc)
    return error_response(status, error_type, message, headers)
