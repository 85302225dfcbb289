"""AnthropicProvider through the real ``anthropic`` SDK against the local fake Messages API.

Nothing patches the SDK: the provider points its base URL at the fake, so request building,
SSE parsing and error classes are the SDK's own.
"""

from __future__ import annotations

import anthropic
import pytest

from quarterdeck.chaos import messages_api as api
from quarterdeck.chaos.messages_api import MessagesAPIServer
from quarterdeck.config import load_settings
from quarterdeck.exceptions import ConfigError, ProviderError
from quarterdeck.providers.anthropic import AnthropicProvider
from quarterdeck.providers.factory import build_provider
from quarterdeck.providers.types import (
    Message,
    ModelRequest,
    ModelResponse,
    Provider,
    StreamEvent,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)

pytest_plugins = ["tests.support.fixtures"]

READ_FILE = ToolSpec(
    name="read_file",
    description="Read a file from the workspace",
    input_schema={
        "type": "object",
        "properties": {"path": {"type": "string"}},
        "required": ["path"],
    },
)


def _request(*messages: Message, tools: list[ToolSpec] | None = None) -> ModelRequest:
    return ModelRequest(
        model="claude-sonnet-4-5",
        system="You are a careful engineer.",
        messages=list(messages) or [Message("user", [TextBlock("hi")])],
        tools=tools or [],
        max_tokens=512,
        temperature=0.2,
        metadata={"run_id": "run_1", "turn": "0"},
    )


@pytest.fixture
async def provider(messages_api: MessagesAPIServer):
    p = AnthropicProvider("test-key", base_url=messages_api.base_url, timeout=10.0)
    yield p
    await p.aclose()


async def _collect(p: AnthropicProvider, request: ModelRequest) -> list[StreamEvent]:
    return [event async for event in p.stream(request)]


async def _fails(
    p: AnthropicProvider, request: ModelRequest, stream: bool = False
) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        if stream:
            await _collect(p, request)
        else:
            await p.complete(request)
    return info.value


async def test_tool_use_round_trip(provider: AnthropicProvider, messages_api: MessagesAPIServer):
    messages_api.script(
        [
            api.message(
                api.thinking("need the file", signature="sig-1"),
                api.tool_use("read_file", {"path": "src/app.py"}, id="toolu_1"),
                usage=api.make_usage(input_tokens=100, output_tokens=20),
            ),
            api.message(
                api.text("The app starts a server."),
                usage=api.make_usage(input_tokens=150, output_tokens=8),
            ),
        ]
    )
    user = Message("user", [TextBlock("What does src/app.py do?")])
    first = await provider.complete(_request(user, tools=[READ_FILE]))

    assert first.stop_reason == "tool_use"
    assert first.message.tool_uses == [ToolUseBlock("toolu_1", "read_file", {"path": "src/app.py"})]
    assert isinstance(first.message.content[0], ThinkingBlock)
    assert first.usage.input_tokens == 100 and first.usage.output_tokens == 20
    assert first.request_id and first.request_id.startswith("req_")

    result = Message("user", [ToolResultBlock("toolu_1", "import uvicorn ...")])
    second = await provider.complete(_request(user, first.message, result, tools=[READ_FILE]))
    assert second.stop_reason == "end_turn"
    assert second.message.text == "The app starts a server."

    sent = messages_api.requests[1].json
    assert sent["system"] == "You are a careful engineer."
    assert sent["max_tokens"] == 512
    assert "temperature" not in sent  # API 2026-10-21 rejects sampling parameters
    assert "metadata" not in sent  # our hints are not the API's metadata
    assert sent["tools"] == [
        {
            "name": "read_file",
            "description": READ_FILE.description,
            "input_schema": READ_FILE.input_schema,
        }
    ]
    assert sent["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "need the file", "signature": "sig-1"},
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "read_file",
                "input": {"path": "src/app.py"},
            },
        ],
    }
    assert sent["messages"][2]["content"] == [
        {
            "type": "tool_result",
            "tool_use_id": "toolu_1",
            "content": "import uvicorn ...",
            "is_error": False,
        },
    ]
    assert messages_api.requests[0].headers["authorization"].endswith("test-key") or (
        messages_api.requests[0].headers.get("x-api-key") == "test-key"
    )
    assert provider.last_rate_limit_headers["anthropic-ratelimit-requests-remaining"] == "49"


async def test_usage_records_every_token_class(
    provider: AnthropicProvider, messages_api: MessagesAPIServer
):
    messages_api.script(
        [
            api.message(
                api.text("hi"),
                usage=api.make_usage(
                    input_tokens=12, output_tokens=34, cache_read=500, cache_5m=70, cache_1h=30
                ),
            ),
            api.message(
                api.text("hi"),
                usage=api.make_usage(input_tokens=12, output_tokens=34, cache_5m=70, split=False),
            ),
        ]
    )
    split = (await provider.complete(_request())).usage
    assert (split.input_tokens, split.output_tokens, split.cache_read_input_tokens) == (12, 34, 500)
    assert split.cache_creation_input_tokens == 100
    assert (split.cache_creation_5m_tokens, split.cache_creation_1h_tokens) == (70, 30)

    unsplit = (await provider.complete(_request())).usage
    assert unsplit.cache_creation_input_tokens == 70
    assert (unsplit.cache_creation_5m_tokens, unsplit.cache_creation_1h_tokens) == (0, 0)


async def test_stream_text_tool_use_and_cumulative_usage(
    provider: AnthropicProvider, messages_api: MessagesAPIServer
):
    messages_api.script(
        [
            api.message(
                api.thinking("the user wants app.py", signature="sig-stream"),
                api.text("Let me look at that file."),
                api.tool_use("read_file", {"path": "src/app.py", "lines": [1, 40]}, id="toolu_9"),
                usage=api.make_usage(
                    input_tokens=40, output_tokens=61, cache_read=900, cache_1h=64
                ),
            )
        ]
    )
    events = await _collect(provider, _request(tools=[READ_FILE]))

    texts = [e.text for e in events if e.type == "text"]
    assert "".join(texts) == "Let me look at that file."
    assert len(texts) > 1  # really streamed in pieces
    assert [e.text for e in events if e.type == "tool_use"] == ["read_file"]
    assert "".join(e.text for e in events if e.type == "thinking") == "the user wants app.py"
    assert events[-1].type == "message" and [e.type for e in events].count("message") == 1
    response = events[-1].response
    assert isinstance(response, ModelResponse)
    assert response.stop_reason == "tool_use"
    assert response.message.text == "Let me look at that file."
    assert response.message.content[0] == ThinkingBlock("the user wants app.py", "sig-stream")
    assert response.message.tool_uses == [
        ToolUseBlock("toolu_9", "read_file", {"path": "src/app.py", "lines": [1, 40]})
    ]
    # message_start said output_tokens=1; the cumulative message_delta total must win.
    assert response.usage.output_tokens == 61
    assert response.usage.input_tokens == 40
    assert response.usage.cache_read_input_tokens == 900
    assert response.usage.cache_creation_input_tokens == 64
    assert response.usage.cache_creation_1h_tokens == 64
    assert response.ttft_s is not None and response.ttft_s >= 0
    assert response.request_id and response.request_id.startswith("req_")
    assert messages_api.requests[0].json["stream"] is True


async def test_error_event_mid_stream(provider: AnthropicProvider, messages_api: MessagesAPIServer):
    messages_api.script([api.stream_error(api.message(api.text("partial answer here")), after=4)])
    seen: list[StreamEvent] = []
    with pytest.raises(ProviderError) as info:
        async for event in provider.stream(_request()):
            seen.append(event)
    error = info.value
    assert seen and all(e.type == "text" for e in seen)  # text came, no final message
    assert error.error_type == "overloaded_error" and error.overloaded
    assert error.status_code == 529 and error.retryable
    assert error.request_id and error.request_id.startswith("req_")


async def test_rate_limited_with_retry_after(
    provider: AnthropicProvider, messages_api: MessagesAPIServer
):
    messages_api.script(
        [
            api.error(
                429, "rate_limit_error", headers={"retry-after": "7", "request-id": "req_rl"}
            ),
            api.error(
                429, "rate_limit_error", headers={"retry-after-ms": "1500", "retry-after": "2"}
            ),
        ]
    )
    error = await _fails(provider, _request())
    assert (error.status_code, error.error_type, error.retryable) == (429, "rate_limit_error", True)
    assert error.retry_after == 7.0
    assert error.request_id == "req_rl"
    assert provider.last_rate_limit_headers  # headers of the failed call are kept too

    error = await _fails(provider, _request(), stream=True)
    assert error.status_code == 429 and error.retry_after == 1.5


@pytest.mark.parametrize(
    ("status", "error_type", "retryable"),
    [
        (529, "overloaded_error", True),
        (500, "api_error", True),
        (503, "api_error", True),
        (408, "timeout_error", True),
        (409, "conflict_error", True),
        (400, "invalid_request_error", False),
        (401, "authentication_error", False),
        (403, "permission_error", False),
        (404, "not_found_error", False),
        (413, "request_too_large", False),
    ],
)
async def test_status_errors(
    provider: AnthropicProvider,
    messages_api: MessagesAPIServer,
    status: int,
    error_type: str,
    retryable: bool,
):
    messages_api.script([api.error(status, error_type, message="nope")])
    error = await _fails(provider, _request())
    assert error.status_code == status
    assert error.error_type == error_type
    assert error.retryable is retryable
    assert error.overloaded is (status == 529)
    assert error.retry_after is None
    assert error.request_id and error.request_id.startswith("req_")
    assert "nope" in error.detail


async def test_overloaded_before_stream_starts(
    provider: AnthropicProvider, messages_api: MessagesAPIServer
):
    messages_api.script([api.error(529, "overloaded_error")])
    error = await _fails(provider, _request(), stream=True)
    assert error.overloaded and error.status_code == 529 and error.retryable


async def test_slow_response_times_out(messages_api: MessagesAPIServer):
    messages_api.script([api.message(api.text("too late"), delay=3.0)])
    provider = AnthropicProvider("k", base_url=messages_api.base_url, timeout=0.3)
    try:
        error = await _fails(provider, _request())
    finally:
        await provider.aclose()
    assert error.error_type == "timeout" and error.retryable and error.status_code is None


async def test_stalled_stream_times_out(messages_api: MessagesAPIServer):
    reply = api.message(api.text("slow tokens"))
    reply.event_delay = 1.0
    messages_api.script([reply])
    provider = AnthropicProvider("k", base_url=messages_api.base_url, timeout=0.3)
    try:
        error = await _fails(provider, _request(), stream=True)
    finally:
        await provider.aclose()
    assert error.error_type == "timeout" and error.retryable


async def test_connection_refused_is_retryable():
    provider = AnthropicProvider("k", base_url="http://127.0.0.1:9", timeout=2.0)
    try:
        error = await _fails(provider, _request())
    finally:
        await provider.aclose()
    assert error.error_type == "connection_error" and error.retryable


async def test_factory_builds_anthropic_against_configured_base_url(
    messages_api: MessagesAPIServer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("QUARTERDECK_ANTHROPIC_BASE_URL", messages_api.base_url)
    provider = build_provider(load_settings(provider="anthropic", anthropic_api_key="sk-test"))
    try:
        assert isinstance(provider, AnthropicProvider) and isinstance(provider, Provider)
        messages_api.script([api.message(api.text("from the factory"))])
        response = await provider.complete(_request())
    finally:
        await provider.aclose()
    assert response.message.text == "from the factory"


def test_factory_requires_a_key_for_anthropic():
    with pytest.raises(ConfigError) as info:
        build_provider(load_settings(provider="anthropic", anthropic_api_key=None))
    assert info.value.errors[0][0] == "ANTHROPIC_API_KEY"


def test_factory_builds_simulated():
    provider = build_provider(
        load_settings(provider="simulated", simulated_error_rate=0.1, simulated_turns=3)
    )
    assert provider.name == "simulated" and isinstance(provider, Provider)


async def test_fake_serves_models_list_to_the_sdk(messages_api: MessagesAPIServer):
    client = anthropic.AsyncAnthropic(api_key="k", base_url=messages_api.base_url, max_retries=0)
    try:
        page = await client.models.list()
    finally:
        await client.close()
    assert [m.id for m in page.data] == list(MessagesAPIServer.models)
    assert messages_api.requests[0].path == "/v1/models"
