"""The ``chat {model}`` span of one relayed gateway call.

Why here and not in an HTTP instrumentation: the hot route is served by ``FastGateway`` before
the app's middleware stack, so no HTTP span ever sees it; and only the gateway knows whom a call
is for (tenant, key, run, Claude Code session) and what it used and cost.

The parent is, in order: a span already current (an instrumented server around the gateway,
which has read the client's ``traceparent`` itself), the call's own ``traceparent`` header when
well-formed, else none (a new root). A claude-code run's stored trace context is not read here:
the gateway authenticates a run token without loading the run, and a database read per call
just for a parent is not worth its latency; the run's agent can send the context as a
``traceparent`` header instead.

The gateway is latency-critical (its overhead per call is benchmarked): with tracing off (no SDK
provider installed) :func:`open_call` returns the invalid span at once, and every later step
does nothing unless ``span.is_recording()``. Nothing here awaits.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Span

from quarterdeck.gateway.meter import Metered
from quarterdeck.gateway.models import GatewayCall
from quarterdeck.tracing import (
    TRACE_KEYS,
    context_of,
    enabled,
    record_error,
    record_usage,
    start_chat_span,
)


def tracing_off() -> bool:
    """No SDK provider is installed (the default): every span would be a no-op anyway."""
    return not enabled()


def open_call(
    call: GatewayCall,
    headers: Sequence[tuple[str, str]],
    *,
    provider: str,
    server_address: str | None,
    max_tokens: int,
) -> Span:
    """The call's span, started (not current: its end comes in the response's callback)."""
    if tracing_off():
        return INVALID_SPAN
    attributes: dict[str, str | int] = {"gen_ai.request.max_tokens": max_tokens}
    if server_address:
        attributes["server.address"] = server_address
    span = start_chat_span(
        call.model, provider=provider, context=_parent(headers), attributes=attributes
    )
    if span.is_recording():
        attrs: dict[str, str | bool] = {
            "quarterdeck.tenant": call.tenant,
            "quarterdeck.gateway.call_id": call.id,
            "quarterdeck.stream": call.stream,
        }
        if call.key_id is not None:
            attrs["quarterdeck.key.id"] = call.key_id
        if call.session_id is not None:
            attrs["gen_ai.conversation.id"] = call.session_id
        if call.run_id is not None:
            attrs["gen_ai.agent.id"] = call.run_id
            attrs["quarterdeck.run.id"] = call.run_id
        if call.agent_id is not None:
            attrs["quarterdeck.claude_code.agent_id"] = call.agent_id
        span.set_attributes(attrs)
    return span


def _parent(headers: Sequence[tuple[str, str]]) -> Context | None:
    if trace.get_current_span().get_span_context().is_valid:
        return None  # continue the span around us
    return context_of({k: v for k, v in headers if k in TRACE_KEYS})


def refused(span: Span, call: GatewayCall) -> None:
    """A call the gateway answered itself (refused, or no upstream answer): ends the span."""
    if not span.is_recording():
        return
    span.set_attribute("http.response.status_code", call.status)
    record_error(span, call.error_type or f"http_{call.status}")
    span.end()


def finished(span: Span, call: GatewayCall, metered: Metered) -> None:
    """The call's outcome once its answer ended (or its client left): ends the span."""
    if not span.is_recording():
        return
    span.set_attribute("http.response.status_code", call.status)
    if call.client_disconnected:
        span.set_attribute("quarterdeck.client_disconnected", True)
    if call.cost_estimated:
        span.set_attribute("quarterdeck.cost_estimated", True)
    usage = call.usage
    record_usage(
        span,
        response_model=metered.model or call.served_model,
        response_id=metered.message_id,
        request_id=call.upstream_request_id,
        finish_reason=metered.stop_reason,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_input_tokens,
        cache_creation_tokens=usage.cache_creation_input_tokens,
        cost_usd=float(call.cost_usd),
    )
    if call.served_model and call.served_model != call.model:
        span.set_attribute("quarterdeck.served_model", call.served_model)
    if call.error_type is not None:
        record_error(span, call.error_type)
    span.end()
