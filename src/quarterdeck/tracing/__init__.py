"""OpenTelemetry spans of runs, turns, tool calls and gateway calls, in the GenAI conventions.

Why a module of its own at the bottom of the house: the run's worker, the resilient caller, the
tool guard and the gateway all open spans, and they sit on different floors; these helpers
depend on the OpenTelemetry *API* only, so with tracing off (the default: no SDK provider is
installed, ``setup.py``) the helpers return the invalid span at once (:func:`enabled`).

The shapes follow the GenAI semantic conventions (Development status, read at
open-telemetry/semantic-conventions-genai ``gen-ai-agent-spans.md``):

- ``invoke_agent {agent}`` (INTERNAL: the agent runs in-process) per run *attempt*, its parent
  the context stored with the run at submission, so a client's ``traceparent`` on ``POST
  /v1/runs`` continues through Quarterdeck and a run resumed on another worker stays in the
  same trace;
- ``chat {model}`` (CLIENT) per model call, with tokens, cache tokens, cost, finish reason and the
  request and response ids;
- ``execute_tool {tool}`` (INTERNAL) per tool call, with the policy decision.

Prompt and completion content is never recorded unless ``set_record_content(True)``
(``QUARTERDECK_TRACE_CONTENT``): prompts carry code and secrets.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode

from quarterdeck.tracing.propagation import TRACE_KEYS, carrier_of_current, context_of

__all__ = [
    "TRACER_NAME",
    "carrier_of_current",
    "chat_span",
    "context_of",
    "enabled",
    "execute_tool_span",
    "invoke_agent_span",
    "record_content",
    "record_error",
    "record_usage",
    "set_record_content",
    "start_chat_span",
    "tracer",
]

TRACER_NAME = "quarterdeck"
__all__ += ["TRACE_KEYS", "start_chat_span"]

_content = False
_ENV_PROVIDER = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
"""A provider named by the environment is installed lazily, on first use: count it as on."""
_tracer: trace.Tracer | None = None


def enabled() -> bool:
    """Whether an SDK provider is installed; without one every span would be a no-op.

    Why the API's module global rather than ``trace.get_tracer_provider()``: while no provider
    is set, that call looks the environment up every time (~2 µs measured), and a no-op span
    through the API's context managers costs ~20 µs on a loaded machine; reading the global
    costs ~0.05 µs, so with tracing off (the default) the helpers below do nothing at all.
    Should the API rename it, ``getattr`` finds nothing and every span takes the ordinary
    (slower, still correct) path.
    """
    return _ENV_PROVIDER or getattr(trace, "_TRACER_PROVIDER", True) is not None


def tracer() -> trace.Tracer:
    """The API's proxy tracer, made once: it follows the provider installed later."""
    global _tracer
    if _tracer is None:
        _tracer = trace.get_tracer(TRACER_NAME)
    return _tracer


def set_record_content(on: bool) -> None:
    global _content
    _content = on


def record_content() -> bool:
    """Whether prompts, completions and tool arguments may be put on spans."""
    return _content


@contextmanager
def _current(
    name: str, kind: SpanKind, attributes: Mapping[str, Any], context: otel_context.Context | None
) -> Iterator[Span]:
    """A span made current for the block; its status and errors are set by the helpers
    below (``record_error``), not from a Python exception, which may be a normal outcome.

    What ``start_as_current_span`` with ``use_span`` does, without their two generator
    context managers around this one: with neither exception option on, they only attach,
    detach and end, and the layers cost more than that (profiled, issue 21)."""
    span = tracer().start_span(
        name, context=context, kind=kind, attributes=attributes, record_exception=False
    )
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield span
    finally:
        otel_context.detach(token)
        span.end()


@contextmanager
def invoke_agent_span(
    agent: str,
    *,
    run_id: str,
    tenant: str,
    provider: str,
    model: str,
    attempt: int,
    parent: Mapping[str, str] | None = None,
    config_version: str | None = None,
) -> Iterator[Span]:
    """One attempt of a run; ``parent`` is the carrier stored with the run."""
    if not enabled():
        yield INVALID_SPAN
        return
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.provider.name": provider,
        "gen_ai.agent.name": agent,
        "gen_ai.agent.id": run_id,
        "gen_ai.request.model": model,
        "gen_ai.conversation.id": run_id,
        "quarterdeck.run.id": run_id,
        "quarterdeck.tenant": tenant,
        "quarterdeck.run.attempt": attempt,
    }
    if config_version:
        attributes["quarterdeck.agent.config_version"] = config_version
    with _current(
        f"invoke_agent {agent}", SpanKind.INTERNAL, attributes, context_of(parent)
    ) as span:
        yield span


@contextmanager
def chat_span(
    model: str,
    *,
    provider: str,
    parent: Mapping[str, str] | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """One model call (CLIENT). ``parent``: a carrier to continue (a gateway call's own
    ``traceparent``); None continues the current span (a run's turn)."""
    if not enabled():
        yield INVALID_SPAN
        return
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        **(attributes or {}),
    }
    with _current(f"chat {model}", SpanKind.CLIENT, attrs, context_of(parent)) as span:
        yield span


def start_chat_span(
    model: str,
    *,
    provider: str,
    context: otel_context.Context | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Span:
    """A ``chat`` span started but not made current, for a call whose end comes later in
    another callback (a gateway stream); the caller ends it. ``context``: its parent."""
    if not enabled():
        return INVALID_SPAN
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        **(attributes or {}),
    }
    return tracer().start_span(
        f"chat {model}", context=context, kind=SpanKind.CLIENT, attributes=attrs
    )


@contextmanager
def execute_tool_span(name: str, *, call_id: str) -> Iterator[Span]:
    """One tool call; the guard's decision is added with ``quarterdeck.policy.decision``."""
    if not enabled():
        yield INVALID_SPAN
        return
    attrs = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": name,
        "gen_ai.tool.call.id": call_id,
        "gen_ai.tool.type": "function",
    }
    with _current(f"execute_tool {name}", SpanKind.INTERNAL, attrs, None) as span:
        yield span


def record_usage(
    span: Span,
    *,
    response_model: str | None = None,
    response_id: str | None = None,
    request_id: str | None = None,
    finish_reason: str | None = None,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cache_read_tokens: int = 0,
    cache_creation_tokens: int = 0,
    cost_usd: float | None = None,
) -> None:
    """What a model call's answer says, on its ``chat`` span (a no-op span ignores it)."""
    if not span.is_recording():
        return
    attrs: dict[str, Any] = {
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": output_tokens,
        "gen_ai.usage.cache_read.input_tokens": cache_read_tokens,
        "gen_ai.usage.cache_creation.input_tokens": cache_creation_tokens,
    }
    if response_model:
        attrs["gen_ai.response.model"] = response_model
    if response_id:
        attrs["gen_ai.response.id"] = response_id
    if request_id:
        attrs["quarterdeck.upstream.request_id"] = request_id
    if finish_reason:
        attrs["gen_ai.response.finish_reasons"] = [finish_reason]
    if cost_usd is not None:
        attrs["quarterdeck.cost_usd"] = cost_usd
    span.set_attributes(attrs)


def record_error(span: Span, error_type: str, message: str = "") -> None:
    """A failed operation: ``error.type`` and an ERROR status (the conventions' shape)."""
    if not span.is_recording():
        return
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, message[:500] or error_type))
