"""OpenAI-compatible chat completions provider, for self-hosted models (vLLM, Ollama, llama.cpp).

Uses the official ``openai`` SDK with ``max_retries=0`` for the same reason as the Anthropic
provider: retry decisions belong to our resilience layer. Conversations are stored in the
Anthropic-shaped neutral types, so this module translates both ways:

* ``ToolUseBlock`` <-> ``tool_calls`` on the assistant message (arguments are a JSON *string*);
* ``ToolResultBlock`` -> a ``role: tool`` message, placed before any user text of the same turn,
  because these servers require tool results to follow the assistant's calls directly;
* usage: OpenAI's ``prompt_tokens`` *includes* cached tokens, ours excludes them, so
  ``input_tokens = prompt_tokens - cached_tokens`` and the cached part becomes a cache read.

Prompt caching (``ModelRequest.cache_ttl``) and extended thinking (``thinking_budget``) are
ignored: these servers cache prefixes on their own, without breakpoints, and have no thinking
budget parameter. Blocks only Anthropic produces (thinking, ``redacted_thinking``, server-tool
blocks) are left out of what is sent, since these servers cannot read them; text and tool calls
of the same message still go.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import openai
import structlog

from quarterdeck.exceptions import ProviderError
from quarterdeck.kit.clock import Clock, SystemClock
from quarterdeck.providers.anthropic import (
    default_error_type,
    is_retryable_status,
    provider_error,
    retry_after_seconds,
)
from quarterdeck.providers.types import (
    ContentBlock,
    Message,
    ModelRequest,
    ModelResponse,
    StopReason,
    StreamEvent,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    Usage,
)

log = structlog.get_logger()

_FINISH: dict[str, StopReason] = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "max_tokens",
    "content_filter": "refusal",
}


class OpenAICompatProvider:
    """:class:`~quarterdeck.providers.types.Provider` for ``/v1/chat/completions`` servers.

    ``stream_usage`` asks for a final usage chunk (``stream_options.include_usage``); vLLM,
    Ollama and llama.cpp support it, but a server that rejects the option can turn it off, at the
    price of streamed calls reporting zero tokens.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        api_key: str = "none",
        timeout: float = 600.0,
        *,
        connect_timeout: float = 10.0,
        stream_usage: bool = True,
        clock: Clock | None = None,
    ) -> None:
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            timeout=openai.Timeout(timeout, connect=min(connect_timeout, timeout)),
            max_retries=0,
        )
        self._stream_usage = stream_usage
        self._clock = clock or SystemClock()
        self.server_address: str | None = self._client.base_url.host or None
        """The server's host, for ``server.address`` on ``chat`` spans."""

    async def aclose(self) -> None:
        await self._client.close()

    async def complete(self, request: ModelRequest) -> ModelResponse:
        started = self._clock.now()
        try:
            raw = await self._client.chat.completions.with_raw_response.create(
                **_request_params(request)
            )
            completion = raw.parse()
        except (openai.APIError, httpx2.HTTPError) as exc:
            raise _error(exc) from exc
        if not completion.choices:
            raise ProviderError("openai-compatible server returned no choices", retryable=True)
        choice = completion.choices[0]
        msg = choice.message
        blocks: list[ContentBlock] = []
        reasoning = getattr(msg, "reasoning_content", None)  # vLLM/llama.cpp reasoning parsers
        if isinstance(reasoning, str) and reasoning:
            blocks.append(ThinkingBlock(thinking=reasoning))
        if msg.content:
            blocks.append(TextBlock(text=msg.content))
        for call in msg.tool_calls or []:
            function = getattr(call, "function", None)
            if function is not None:
                blocks.append(_tool_use(call.id, function.name, function.arguments))
        response = ModelResponse(
            id=completion.id,
            model=completion.model,
            message=Message(role="assistant", content=blocks),
            stop_reason=_stop_reason(choice.finish_reason, blocks),
            usage=_usage(completion.usage),
            request_id=raw.headers.get("x-request-id"),
        )
        response.latency_s = self._clock.now() - started
        return response

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        """``text``/``thinking`` deltas as they arrive, ``tool_use`` events once the stream ends
        (fragments of tool-call arguments are only valid JSON at the end), then ``message``."""
        started = self._clock.now()
        acc = _Accumulator()
        params = _request_params(request)
        if self._stream_usage:
            params["stream_options"] = {"include_usage": True}
        try:
            chunks = await self._client.chat.completions.create(stream=True, **params)
            acc.request_id = chunks.response.headers.get("x-request-id")
            async for chunk in chunks:
                acc.id, acc.model = chunk.id or acc.id, chunk.model or acc.model
                if chunk.usage is not None:
                    acc.usage = _usage(chunk.usage)
                for choice in chunk.choices:
                    delta = choice.delta
                    if choice.finish_reason:
                        acc.finish = choice.finish_reason
                    reasoning = getattr(delta, "reasoning_content", None)
                    if isinstance(reasoning, str) and reasoning:
                        acc.first_token(self._clock.now() - started)
                        acc.thinking.append(reasoning)
                        yield StreamEvent(type="thinking", text=reasoning)
                    if delta.content:
                        acc.first_token(self._clock.now() - started)
                        acc.text.append(delta.content)
                        yield StreamEvent(type="text", text=delta.content)
                    for call in delta.tool_calls or []:
                        acc.first_token(self._clock.now() - started)
                        acc.add_tool_fragment(call)
        except (openai.APIError, httpx2.HTTPError) as exc:
            raise _error(exc) from exc
        response = acc.response()
        for block in response.message.tool_uses:
            yield StreamEvent(type="tool_use", text=block.name)
        response.latency_s = self._clock.now() - started
        yield StreamEvent(type="message", response=response)


@dataclass
class _Accumulator:
    """Rebuilds one completion from its chunks; tool calls are keyed by their ``index``."""

    id: str = ""
    model: str = ""
    request_id: str | None = None
    finish: str | None = None
    ttft: float | None = None
    usage: Usage = field(default_factory=Usage)
    text: list[str] = field(default_factory=list)
    thinking: list[str] = field(default_factory=list)
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)

    def first_token(self, elapsed: float) -> None:
        if self.ttft is None:
            self.ttft = elapsed

    def add_tool_fragment(self, call: Any) -> None:
        slot = self.calls.setdefault(call.index, {"id": "", "name": "", "arguments": []})
        if call.id:
            slot["id"] = call.id
        if call.function is not None:
            if call.function.name:
                slot["name"] = call.function.name
            if call.function.arguments:
                slot["arguments"].append(call.function.arguments)

    def response(self) -> ModelResponse:
        blocks: list[ContentBlock] = []
        if self.thinking:
            blocks.append(ThinkingBlock(thinking="".join(self.thinking)))
        if self.text:
            blocks.append(TextBlock(text="".join(self.text)))
        for index in sorted(self.calls):
            slot = self.calls[index]
            blocks.append(
                _tool_use(slot["id"] or f"call_{index}", slot["name"], "".join(slot["arguments"]))
            )
        return ModelResponse(
            id=self.id,
            model=self.model,
            message=Message(role="assistant", content=blocks),
            stop_reason=_stop_reason(self.finish, blocks),
            usage=self.usage,
            request_id=self.request_id,
            ttft_s=self.ttft,
        )


# --- mapping ---------------------------------------------------------------------------------
def _request_params(request: ModelRequest) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    for message in request.messages:
        messages.extend(_message_params(message))
    params: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        # max_tokens, not max_completion_tokens: the latter is not understood by every server.
        "max_tokens": request.max_tokens,
    }
    if request.tools:
        params["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.input_schema,
                },
            }
            for t in request.tools
        ]
    if request.temperature is not None:
        params["temperature"] = request.temperature
    return params


def _message_params(message: Message) -> list[dict[str, Any]]:
    text = "".join(b.text for b in message.content if isinstance(b, TextBlock))
    if message.role == "assistant":
        out: dict[str, Any] = {"role": "assistant", "content": text or None}
        calls = [
            {
                "id": b.id,
                "type": "function",
                "function": {"name": b.name, "arguments": json.dumps(b.input)},
            }
            for b in message.content
            if isinstance(b, ToolUseBlock)
        ]
        if calls:
            out["tool_calls"] = calls
        return [out]
    params: list[dict[str, Any]] = [
        {
            "role": "tool",
            "tool_call_id": b.tool_use_id,
            "content": f"ERROR: {b.content}" if b.is_error else b.content,
        }
        for b in message.content
        if isinstance(b, ToolResultBlock)
    ]
    if text or not params:
        params.append({"role": "user", "content": text})
    return params


def _tool_use(call_id: str, name: str, arguments: str) -> ToolUseBlock:
    """Local models do emit malformed JSON arguments; keep the raw text rather than fail the turn,
    so the agent loop can report the problem back to the model as a tool error."""
    try:
        parsed = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        log.warning("provider.bad_tool_arguments", provider="openai", tool=name)
        parsed = {"_raw_arguments": arguments}
    return ToolUseBlock(id=call_id, name=name, input=parsed)


def _stop_reason(finish: str | None, blocks: list[ContentBlock]) -> StopReason:
    # Some servers say "stop" even when the turn ends in tool calls; the calls are what matter.
    if any(isinstance(b, ToolUseBlock) for b in blocks) and finish in (None, "stop"):
        return "tool_use"
    return _FINISH.get(finish or "stop", "end_turn")


def _usage(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    details = getattr(usage, "prompt_tokens_details", None)
    cached = min(prompt, int(getattr(details, "cached_tokens", 0) or 0))
    return Usage(
        input_tokens=prompt - cached,
        output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        cache_read_input_tokens=cached,
    )


def _error(exc: Exception) -> ProviderError:
    if isinstance(exc, openai.APITimeoutError):
        error = provider_error(httpx2.TimeoutException("timed out"), provider="openai")
    elif isinstance(exc, openai.APIConnectionError):
        error = provider_error(httpx2.TransportError(str(exc)), provider="openai")
    elif isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        error_type = exc.type or default_error_type(status)
        headers = exc.response.headers
        error = ProviderError(
            f"openai {status} {error_type}: {exc.message}",
            status_code=status,
            error_type=error_type,
            retry_after=retry_after_seconds(headers),
            request_id=exc.request_id or headers.get("x-request-id"),
            retryable=is_retryable_status(status),
        )
    elif isinstance(exc, openai.APIError):
        # An in-band {"error": ...} chunk mid-stream: the HTTP status was 200, so use the code
        # the server put in the body when it is an HTTP status, else treat it as a 500.
        code = str(exc.code or "")
        status = int(code) if code.isdigit() and 400 <= int(code) < 600 else 500
        error = ProviderError(
            f"openai stream error: {exc.message}",
            status_code=status,
            error_type=exc.type or default_error_type(status),
            retryable=is_retryable_status(status),
        )
    else:
        error = provider_error(exc, provider="openai")
    log.warning(
        "provider.error",
        provider="openai",
        status=error.status_code,
        error_type=error.error_type,
        retryable=error.retryable,
    )
    return error
