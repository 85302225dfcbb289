"""W3C trace context across Quarterdeck's own boundaries: a request's headers, the current
span, and what a run stores to continue (``params["trace"]``).

Why a run stores its context: its attempts run later, on any worker, perhaps after a restart;
the stored ``traceparent`` makes every attempt's ``invoke_agent`` span a child of the request
that submitted it, so a client's trace continues through Quarterdeck and a resumed run stays in
the same trace. The request's own headers are kept too (a context variable around the
submission), so the client's trace continues even when Quarterdeck's HTTP spans are off.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.propagate import extract, inject

__all__ = [
    "TRACE_KEYS",
    "carrier_of_current",
    "context_of",
    "received_trace",
    "submitted_with",
    "trace_to_store",
]

TRACE_KEYS = ("traceparent", "tracestate")
"""The W3C trace-context headers kept with a run (``params["trace"]``)."""


def carrier_of_current() -> dict[str, str]:
    """The current span's W3C headers (``traceparent``, maybe ``tracestate``); empty when no
    span is recording, so nothing is stored for untraced work."""
    carrier: dict[str, str] = {}
    inject(carrier)
    return {k: v for k, v in carrier.items() if k in TRACE_KEYS}


def context_of(carrier: Mapping[str, str] | None) -> otel_context.Context | None:
    """The context a stored or received ``traceparent`` names (None: none given)."""
    if not carrier or "traceparent" not in carrier:
        return None
    return extract({k: str(v) for k, v in carrier.items() if k in TRACE_KEYS})


TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
"""W3C ``traceparent`` (version 00's shape); ids of all zeros and version ff are invalid."""
MAX_TRACESTATE = 512
"""W3C asks vendors to keep ``tracestate`` within 512 characters; a longer one is dropped."""
_received: ContextVar[dict[str, str] | None] = ContextVar(
    "quarterdeck_received_trace", default=None
)


def received_trace(headers: Mapping[str, str]) -> dict[str, str] | None:
    """A request's own W3C trace context, if well-formed. A malformed ``traceparent`` is
    ignored, not refused (W3C: the receiver starts a new trace), so a client's buggy tracer
    never costs it its run."""
    parent = headers.get("traceparent")
    if not parent:
        return None
    parent = parent.strip()
    m = TRACEPARENT.fullmatch(parent)
    if m is None or parent.startswith("ff") or not m[1].strip("0") or not m[2].strip("0"):
        return None
    carrier = {"traceparent": parent}
    state = headers.get("tracestate")
    if state and len(state) <= MAX_TRACESTATE:
        carrier["tracestate"] = state
    return carrier


@contextmanager
def submitted_with(headers: Mapping[str, str]) -> Iterator[None]:
    """Around a submission, the request's own trace headers, for :func:`trace_to_store` when
    Quarterdeck's HTTP spans are off: a client's trace then still continues through its runs.
    A request without ``traceparent`` (the common case) costs one header lookup."""
    carrier = received_trace(headers)
    if carrier is None:
        yield
        return
    token = _received.set(carrier)
    try:
        yield
    finally:
        _received.reset(token)


def trace_to_store() -> dict[str, str] | None:
    """The W3C context a new run continues (``params["trace"]``): the current span's when one
    is valid (Quarterdeck's HTTP server span), else the request's own headers, else None (the
    run's ``invoke_agent`` spans are roots). Checked against the current span first so an
    untraced submission skips the propagator altogether."""
    if otel_trace.get_current_span().get_span_context().is_valid:
        carrier = carrier_of_current()
        if "traceparent" in carrier:
            return carrier
    return _received.get()
