"""OpenAICompatProvider through the real ``openai`` SDK against a local fake chat completions
API (the shape vLLM, Ollama and llama.cpp serve)."""

from __future__ import annotations

import pytest

from quarterdeck.config import load_settings
from quarterdeck.exceptions import ConfigError, ProviderError
from quarterdeck.providers.factory import build_provider
from quarterdeck.providers.openai_compat import OpenAICompatProvider
from quarterdeck.providers.types import (
    Message,
    ModelRequest,
    StreamEvent,
    TextBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)
from tests.support import openai_api as api
from tests.support.openai_api import OpenAIAPIServer

pytest_plugins = ["tests.support.fixtures"]

RUN_TESTS = ToolSpec(
    name="run_tests",
    description="Run the test suite",
    input_schema={"type": "object", "properties": {"path": {"type": "string"}}},
)


def _request(*messages: Message) -> ModelRequest:
    return ModelRequest(
        model="qwen2.5-coder",
        system="Be brief.",
        messages=list(messages) or [Message("user", [TextBlock("hi")])],
        tools=[RUN_TESTS],
        max_tokens=256,
        temperature=0.0,
    )


@pytest.fixture
async def provider(openai_api: OpenAIAPIServer):
    p = OpenAICompatProvider(f"{openai_api.base_url}/v1", timeout=10.0)
    yield p
    await p.aclose()


async def _collect(p: OpenAICompatProvider, request: ModelRequest) -> list[StreamEvent]:
    return [event async for event in p.stream(request)]


async def test_tool_call_round_trip(provider: OpenAICompatProvider, openai_api: OpenAIAPIServer):
    openai_api.script(
        [
            api.completion(
                None,
                tool_calls=[api.tool_call("run_tests", {"path": "tests/"}, "call_1")],
                prompt_tokens=300,
                completion_tokens=20,
                cached_tokens=256,
            ),
            api.completion("All green.", prompt_tokens=340, completion_tokens=4),
        ]
    )
    user = Message("user", [TextBlock("Run the tests")])
    first = await provider.complete(_request(user))
    assert first.stop_reason == "tool_use"
    assert first.message.tool_uses == [ToolUseBlock("call_1", "run_tests", {"path": "tests/"})]
    # prompt_tokens includes the cached part; ours excludes it.
    assert (first.usage.input_tokens, first.usage.cache_read_input_tokens) == (44, 256)
    assert first.usage.output_tokens == 20
    assert first.request_id and first.request_id.startswith("req_")

    results = Message("user", [ToolResultBlock("call_1", "3 passed"), TextBlock("Summarise.")])
    second = await provider.complete(_request(user, first.message, results))
    assert second.message.text == "All green." and second.stop_reason == "end_turn"

    sent = openai_api.requests[1].json
    assert sent["max_tokens"] == 256 and sent["temperature"] == 0.0
    assert sent["tools"][0] == {
        "type": "function",
        "function": {
            "name": "run_tests",
            "description": "Run the test suite",
            "parameters": RUN_TESTS.input_schema,
        },
    }
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["messages"][2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "run_tests", "arguments": '{"path": "tests/"}'},
            }
        ],
    }
    assert sent["messages"][3] == {"role": "tool", "tool_call_id": "call_1", "content": "3 passed"}
    assert sent["messages"][4] == {"role": "user", "content": "Summarise."}
    assert openai_api.requests[0].headers["authorization"] == "Bearer none"


async def test_stream_text_and_tool_calls_with_usage(
    provider: OpenAICompatProvider, openai_api: OpenAIAPIServer
):
    openai_api.script(
        [
            api.completion(
                "Running them now.",
                tool_calls=[
                    api.tool_call("run_tests", {"path": "tests/unit", "verbose": True}, "call_7")
                ],
                prompt_tokens=120,
                completion_tokens=33,
                cached_tokens=100,
            )
        ]
    )
    events = await _collect(provider, _request())
    texts = [e.text for e in events if e.type == "text"]
    assert "".join(texts) == "Running them now." and len(texts) > 1
    assert [e.text for e in events if e.type == "tool_use"] == ["run_tests"]
    response = events[-1].response
    assert events[-1].type == "message" and response is not None
    assert response.stop_reason == "tool_use"
    assert response.message.tool_uses == [
        ToolUseBlock("call_7", "run_tests", {"path": "tests/unit", "verbose": True})
    ]
    assert (response.usage.input_tokens, response.usage.output_tokens) == (20, 33)
    assert response.usage.cache_read_input_tokens == 100
    assert response.ttft_s is not None
    sent = openai_api.requests[0].json
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


async def test_malformed_tool_arguments_are_kept(
    provider: OpenAICompatProvider, openai_api: OpenAIAPIServer
):
    openai_api.script([api.completion(None, tool_calls=[api.tool_call("run_tests", "{oops")])])
    response = await provider.complete(_request())
    assert response.message.tool_uses[0].input == {"_raw_arguments": "{oops"}


async def test_error_chunk_mid_stream(provider: OpenAICompatProvider, openai_api: OpenAIAPIServer):
    openai_api.script([api.stream_error(api.completion("a long answer"), after=3)])
    seen: list[StreamEvent] = []
    with pytest.raises(ProviderError) as info:
        async for event in provider.stream(_request()):
            seen.append(event)
    assert seen and all(e.type == "text" for e in seen)
    assert info.value.status_code == 503 and info.value.retryable
    assert info.value.error_type == "server_error"


async def test_rate_limited(provider: OpenAICompatProvider, openai_api: OpenAIAPIServer):
    openai_api.script(
        [api.error(429, "rate_limit_error", headers={"retry-after": "3", "x-request-id": "req_x"})]
    )
    with pytest.raises(ProviderError) as info:
        await provider.complete(_request())
    error = info.value
    assert (error.status_code, error.retry_after, error.retryable) == (429, 3.0, True)
    assert error.request_id == "req_x" and error.error_type == "rate_limit_error"


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (400, False), (401, False), (404, False)]
)
async def test_status_errors(
    provider: OpenAICompatProvider, openai_api: OpenAIAPIServer, status: int, retryable: bool
):
    openai_api.script([api.error(status, "BadRequestError" if status == 400 else "server_error")])
    with pytest.raises(ProviderError) as info:
        await _collect(provider, _request())
    assert info.value.status_code == status and info.value.retryable is retryable


async def test_slow_response_times_out(openai_api: OpenAIAPIServer):
    openai_api.script([api.completion("late", delay=3.0)])
    provider = OpenAICompatProvider(f"{openai_api.base_url}/v1", timeout=0.3)
    try:
        with pytest.raises(ProviderError) as info:
            await provider.complete(_request())
    finally:
        await provider.aclose()
    assert info.value.error_type == "timeout" and info.value.retryable


async def test_factory_builds_openai_compat(
    openai_api: OpenAIAPIServer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("QUARTERDECK_OPENAI_BASE_URL", f"{openai_api.base_url}/v1")
    provider = build_provider(load_settings(provider="openai"))
    try:
        assert isinstance(provider, OpenAICompatProvider)
        response = await provider.complete(_request())
    finally:
        await provider.aclose()
    assert response.message.text == "ok"


def test_factory_requires_a_base_url_for_openai(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("QUARTERDECK_OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigError) as info:
        build_provider(load_settings(provider="openai"))
    assert info.value.errors[0][0] == "QUARTERDECK_OPENAI_BASE_URL"
