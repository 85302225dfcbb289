"""``chat {model}`` spans of the resilient caller: one per call sent to the provider.

The real ``anthropic`` SDK (``AnthropicProvider``) calls the Messages API stand-in, which
scripts the failures and the usage; spans go to the SDK's in-memory exporter
(``tests/support/tracing.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from quarterdeck import tracing
from quarterdeck.chaos.messages_api import MessagesAPIServer, error, make_usage, message, text
from quarterdeck.providers.anthropic import AnthropicProvider
from quarterdeck.providers.genai_content import MAX_CHARS
from quarterdeck.providers.pricing import PriceTable, Pricing
from quarterdeck.providers.types import Message, ModelRequest, TextBlock
from quarterdeck.resilience.breaker import BreakerConfig, Breakers
from quarterdeck.resilience.calls import ResilientCaller
from quarterdeck.resilience.retry import RetryPolicy

if TYPE_CHECKING:
    from tests.support.tracing import Recorded

pytest_plugins = ["tests.support.fixtures", "tests.support.tracing"]
pytestmark = pytest.mark.asyncio

OPUS, SONNET = "claude-opus-4-1", "claude-sonnet-4-5"
PRICING = Pricing(PriceTable.load())


async def _no_wait(_: float) -> None:
    return None


@pytest.fixture
def caller(messages_api: MessagesAPIServer) -> Iterator[ResilientCaller]:
    provider = AnthropicProvider("sk-ant-test", base_url=messages_api.base_url)
    yield ResilientCaller(
        provider,
        policy=RetryPolicy(schedule=(0.0,), jitter=0.0, max_attempts=3),
        breakers=Breakers(config=BreakerConfig(failure_threshold=3)),
        fallbacks={OPUS: [SONNET]},
        sleep=_no_wait,
        pricing=PRICING,
    )


@pytest.fixture
def content_on() -> Iterator[None]:
    tracing.set_record_content(True)
    try:
        yield
    finally:
        tracing.set_record_content(False)


def request(model: str = SONNET, prompt: str = "fix the bug", system: str = "") -> ModelRequest:
    return ModelRequest(
        model=model, messages=[Message("user", [TextBlock(prompt)])], system=system, max_tokens=300
    )


def chats(recorded: Recorded) -> list[ReadableSpan]:
    return sorted(recorded.named("chat "), key=lambda s: s.start_time or 0)


async def test_a_retried_call_gives_a_failed_span_and_a_span_with_usage_and_cost(
    caller: ResilientCaller, messages_api: MessagesAPIServer, spans: Recorded
) -> None:
    usage = make_usage(input_tokens=120, output_tokens=33, cache_read=700, cache_5m=250)
    messages_api.script(
        [
            error(529, "overloaded_error", "the API is overloaded"),
            message(text("done"), usage=usage, model="claude-sonnet-4-5-20250929"),
        ]
    )
    with tracing.tracer().start_as_current_span("invoke_agent test") as outer:
        result = await caller.call("coder", request())

    failed, good = chats(spans)
    assert len(spans.named("chat ")) == 2
    for span in (failed, good):
        assert span.name == f"chat {SONNET}" and span.kind is SpanKind.CLIENT
        assert span.parent is not None
        assert span.parent.span_id == outer.get_span_context().span_id
        attrs = span.attributes or {}
        assert attrs["gen_ai.operation.name"] == "chat"
        assert attrs["gen_ai.provider.name"] == "anthropic"
        assert attrs["gen_ai.request.model"] == SONNET
        assert attrs["gen_ai.request.max_tokens"] == 300
        assert attrs["server.address"] == "127.0.0.1"
        assert not any(k.startswith("gen_ai.input") or k.startswith("gen_ai.output") for k in attrs)

    f = failed.attributes or {}
    assert f["quarterdeck.attempt"] == 1
    assert f["error.type"] == "overloaded_error"
    assert f["http.response.status_code"] == 529
    assert failed.status.status_code is StatusCode.ERROR
    assert "overloaded" in (failed.status.description or "")
    assert "gen_ai.usage.input_tokens" not in f

    g = good.attributes or {}
    response = result.response
    assert result.attempts == 2 and g["quarterdeck.attempt"] == 2
    assert good.status.status_code is StatusCode.UNSET and "error.type" not in g
    assert g["gen_ai.usage.input_tokens"] == 120
    assert g["gen_ai.usage.output_tokens"] == 33
    assert g["gen_ai.usage.cache_read.input_tokens"] == 700
    assert g["gen_ai.usage.cache_creation.input_tokens"] == 250
    assert g["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert g["gen_ai.response.model"] == "claude-sonnet-4-5-20250929"
    assert g["gen_ai.response.id"] == response.id and response.id.startswith("msg")
    assert response.request_id and g["quarterdeck.upstream.request_id"] == response.request_id
    expected_cost, _ = PRICING.priced(response.model, response.usage)
    assert result.cost == expected_cost and expected_cost > 0
    assert g["quarterdeck.cost_usd"] == pytest.approx(float(expected_cost))


async def test_a_fallback_gives_a_span_per_model_and_an_open_breaker_only_an_event(
    caller: ResilientCaller, messages_api: MessagesAPIServer, spans: Recorded
) -> None:
    messages_api.script([error(529, "overloaded_error")] * 3 + [message(text("served"))] * 2)
    result = await caller.call("coder", request(OPUS))
    assert result.fallback_from == OPUS
    names = [s.name for s in chats(spans)]
    assert names == [f"chat {OPUS}"] * 3 + [f"chat {SONNET}"]
    assert [(s.attributes or {})["quarterdeck.attempt"] for s in chats(spans)] == [1, 2, 3, 1]
    assert [s.status.status_code for s in chats(spans)] == [StatusCode.ERROR] * 3 + [
        StatusCode.UNSET
    ]

    # The primary's breaker is open now: that model is not called, so it gets no span.
    spans.clear()
    with tracing.tracer().start_as_current_span("invoke_agent test"):
        await caller.call("coder", request(OPUS))
    assert [s.name for s in chats(spans)] == [f"chat {SONNET}"]
    (outer,) = spans.named("invoke_agent")
    assert [e.name for e in outer.events] == ["circuit_open"]
    assert (outer.events[0].attributes or {})["quarterdeck.breaker"].endswith(OPUS)


async def test_content_is_recorded_only_when_enabled_and_capped_as_valid_json(
    caller: ResilientCaller, messages_api: MessagesAPIServer, spans: Recorded, content_on: None
) -> None:
    messages_api.script([message(text("the fix is in utils.py")), message(text("short"))])
    await caller.call("coder", request(prompt="why does it crash?", system="be terse"))
    (span,) = chats(spans)
    attrs = span.attributes or {}
    assert json.loads(str(attrs["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": "why does it crash?"}]}
    ]
    assert json.loads(str(attrs["gen_ai.system_instructions"])) == [
        {"type": "text", "content": "be terse"}
    ]
    assert json.loads(str(attrs["gen_ai.output.messages"])) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "the fix is in utils.py"}],
            "finish_reason": "end_turn",
        }
    ]

    # A long conversation: each part is cut, the oldest turns left out; the JSON stays valid.
    spans.clear()
    turns = [
        Message("user" if i % 2 == 0 else "assistant", [TextBlock(f"{i}:" + "x" * 9000)])
        for i in range(9)
    ]
    await caller.call("coder", ModelRequest(model=SONNET, messages=turns, max_tokens=10))
    (span,) = chats(spans)
    value = str((span.attributes or {})["gen_ai.input.messages"])
    assert len(value) <= MAX_CHARS
    kept = json.loads(value)
    assert 1 <= len(kept) < len(turns)
    assert kept[-1]["parts"][0]["content"].startswith("8:")  # the newest turn is kept
    assert all(len(m["parts"][0]["content"]) < 9000 for m in kept)

    # Off again: no content, whatever the span records.
    tracing.set_record_content(False)
    spans.clear()
    messages_api.script([message(text("again"))])
    await caller.call("coder", request())
    (span,) = chats(spans)
    assert not any("messages" in k or "instructions" in k for k in (span.attributes or {}))
