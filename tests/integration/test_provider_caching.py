"""The Anthropic provider's caching and thinking parameters, through the real SDK against the
Messages API stand-in in cache-accounting mode; the OpenAI-compatible provider ignores both."""

from __future__ import annotations

import pytest

from quarterdeck.chaos import messages_api as api
from quarterdeck.chaos.messages_api import MessagesAPIServer
from quarterdeck.exceptions import ProviderError
from quarterdeck.kit.clock import FakeClock
from quarterdeck.providers.anthropic import AnthropicProvider
from quarterdeck.providers.anthropic_request import adaptive_thinking_only, thinking_param
from quarterdeck.providers.openai_compat import OpenAICompatProvider
from quarterdeck.providers.types import (
    Message,
    ModelRequest,
    RedactedThinkingBlock,
    ServerToolBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)
from tests.support.openai_api import OpenAIAPIServer

pytest_plugins = ["tests.support.fixtures"]

SYSTEM = "Follow the project's conventions carefully. " * 120  # ~1,300 tokens
TOOL = ToolSpec("read_file", "Read a file", {"type": "object", "properties": {}})


def request(*messages: Message, **kw: object) -> ModelRequest:
    base: dict[str, object] = {
        "model": "claude-sonnet-4-5",
        "system": SYSTEM,
        "messages": list(messages) or [Message("user", [TextBlock("hi")])],
        "tools": [TOOL],
        "max_tokens": 4096,
        "cache_ttl": "5m",
    }
    base.update(kw)
    return ModelRequest(**base)  # type: ignore[arg-type]


async def test_json_and_sse_bill_the_same_cache_usage_per_api_key(
    messages_api: MessagesAPIServer,
) -> None:
    clock = FakeClock()
    messages_api.cache_accounting(clock)
    one = AnthropicProvider("key-one", base_url=messages_api.base_url, timeout=10.0)
    two = AnthropicProvider("key-two", base_url=messages_api.base_url, timeout=10.0)
    try:
        first = await one.complete(request())
        assert first.usage.cache_creation_5m_tokens > 1024
        assert first.usage.cache_read_input_tokens == 0
        streamed = [e async for e in one.stream(request())]
        final = streamed[-1].response
        assert final is not None
        assert final.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
        assert final.usage.cache_creation_input_tokens == 0
        # Another key has its own cache: it writes again.
        other = await two.complete(request())
        assert other.usage.cache_read_input_tokens == 0
        assert other.usage.cache_creation_input_tokens == first.usage.cache_creation_input_tokens
        clock.advance(301)  # the 5-minute entry has expired
        late = await one.complete(request())
        assert late.usage.cache_read_input_tokens == 0
    finally:
        await one.aclose()
        await two.aclose()


async def test_more_than_four_breakpoints_is_the_apis_400(messages_api: MessagesAPIServer):
    messages_api.cache_accounting()
    provider = AnthropicProvider("k", base_url=messages_api.base_url, timeout=10.0)
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 10,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": f"part {i}", "cache_control": {"type": "ephemeral"}}
                    for i in range(5)
                ],
            }
        ],
    }
    try:
        import anthropic

        client = anthropic.AsyncAnthropic(api_key="k", base_url=messages_api.base_url)
        with pytest.raises(anthropic.BadRequestError) as info:
            await client.messages.create(**body)  # type: ignore[call-overload]
        assert info.value.status_code == 400
        assert "A maximum of 4 blocks with cache_control" in str(info.value)
        await client.close()
        # The provider never sends more than four, however long the conversation.
        turns = [Message("user", [TextBlock("go")])]
        for i in range(6):
            turns.append(Message("assistant", [ToolUseBlock(f"t{i}", "read_file", {})]))
            turns.append(Message("user", [ToolResultBlock(f"t{i}", "ok")]))
        await provider.complete(request(*turns))
        sent = messages_api.requests[-1].json
        marks = sum(
            "cache_control" in b
            for m in sent["messages"]
            for b in m["content"]
            if isinstance(b, dict)
        )
        assert marks == 2 and "cache_control" in sent["tools"][-1]
    finally:
        await provider.aclose()


def test_thinking_parameter_follows_the_model() -> None:
    assert thinking_param("claude-sonnet-4-5", 2048, 4096) == {
        "type": "enabled",
        "budget_tokens": 2048,
    }
    # Claude 4.7 and later reject manual budgets with a 400: adaptive thinking instead.
    assert thinking_param("claude-opus-4-7", 2048, 4096) == {"type": "adaptive"}
    assert thinking_param("claude-opus-5", 2048, 4096) == {"type": "adaptive"}
    assert adaptive_thinking_only("claude-opus-4-8") and not adaptive_thinking_only(
        "claude-opus-4-20250514"
    )
    assert not adaptive_thinking_only("claude-3-7-sonnet-20250219")
    with pytest.raises(ProviderError) as info:
        thinking_param("claude-sonnet-4-5", 4096, 4096)
    assert info.value.status_code == 400 and not info.value.retryable
    with pytest.raises(ProviderError):
        thinking_param("claude-sonnet-4-5", 512, 4096)


async def test_returned_blocks_round_trip_unchanged(messages_api: MessagesAPIServer):
    search = {
        "type": "server_tool_use",
        "id": "srvtoolu_9",
        "name": "web_search",
        "input": {"query": "q"},
    }
    result = {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_9", "content": []}
    reply = [
        api.thinking("plan", signature="sig-9"),
        api.redacted_thinking("opaque=="),
        search,
        result,
        api.tool_use("read_file", {}, id="toolu_9"),
    ]
    messages_api.script([api.message(*reply), api.message(*reply)])
    provider = AnthropicProvider("k", base_url=messages_api.base_url, timeout=10.0)
    try:
        for streamed in (False, True):
            if streamed:
                got = [e async for e in provider.stream(request(thinking_budget=1024))][-1]
                response = got.response
            else:
                response = await provider.complete(request(thinking_budget=1024))
            assert response is not None
            blocks = response.message.content
            assert blocks[0] == ThinkingBlock("plan", "sig-9")
            assert blocks[1] == RedactedThinkingBlock("opaque==")
            assert blocks[2] == ServerToolBlock(search) and blocks[3] == ServerToolBlock(result)
            # Checkpoint and load: the same message, and the same blocks on the wire.
            assert Message.from_dict(response.message.to_dict()) == response.message
            assert response.message.to_dict()["content"] == reply
        follow = request(
            Message("user", [TextBlock("hi")]),
            response.message,
            Message("user", [ToolResultBlock("toolu_9", "ok")]),
            thinking_budget=1024,
        )
        messages_api.script([api.message(api.text("done"))])
        await provider.complete(follow)
        sent = messages_api.requests[-1].json
        assert sent["messages"][1]["content"] == reply
        assert sent["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    finally:
        await provider.aclose()


def test_old_checkpoints_still_load() -> None:
    old = {
        "role": "assistant",
        "content": [
            {"text": "hi", "type": "text"},
            {"thinking": "t", "signature": "s", "type": "thinking"},
            {"id": "t1", "name": "read_file", "input": {}, "type": "tool_use"},
        ],
    }
    message = Message.from_dict(old)
    assert message.to_dict() == old
    with pytest.raises(ValueError, match="unknown content block"):
        Message.from_dict({"role": "user", "content": [{"type": "mystery"}]})


async def test_openai_compatible_provider_ignores_caching_and_the_new_blocks(
    openai_api: OpenAIAPIServer,
) -> None:
    from tests.support import openai_api as oa

    openai_api.script([oa.completion("fine")])
    provider = OpenAICompatProvider(f"{openai_api.base_url}/v1", timeout=10.0)
    try:
        history = Message(
            "assistant",
            [
                ThinkingBlock("t", "sig"),
                RedactedThinkingBlock("x"),
                ServerToolBlock({"type": "server_tool_use", "id": "s", "name": "w", "input": {}}),
                TextBlock("looked"),
            ],
        )
        response = await provider.complete(
            request(
                Message("user", [TextBlock("q")]), history, Message("user", [TextBlock("and?")])
            )
        )
        assert response.message.text == "fine"
        sent = openai_api.requests[-1].json
        assert "cache_control" not in str(sent)
        assert sent["messages"][2] == {"role": "assistant", "content": "looked"}
    finally:
        await provider.aclose()
