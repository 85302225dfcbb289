"""Anthropic Messages API provider, over the official ``anthropic`` SDK.

The SDK is built with ``max_retries=0``: retries, backoff and circuit breaking belong to our own
resilience layer, which needs to see every failure (and its ``retry-after``) rather than have the
SDK silently sleep and retry underneath it. Every SDK or transport failure leaves this module as a
:class:`~quarterdeck.exceptions.ProviderError` carrying what that layer decides on: status code,
error type, ``retry-after`` in seconds, the request id for support tickets, and ``retryable``.

Request building (prompt-caching breakpoints, the thinking parameter, blocks sent back
unchanged) lives in :mod:`quarterdeck.providers.anthropic_request`.

The error helpers at the bottom (``retry_after_seconds``, ``is_retryable_status``,
``default_error_type``) are shared with :mod:`quarterdeck.providers.openai_compat` so both
providers classify failures identically.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import anthropic
import httpx2
import structlog

from quarterdeck.exceptions import ProviderError
from quarterdeck.kit.clock import Clock, SystemClock
from quarterdeck.providers.anthropic_request import request_params
from quarterdeck.providers.types import (
    ContentBlock,
    Message,
    ModelRequest,
    ModelResponse,
    RedactedThinkingBlock,
    ServerToolBlock,
    StopReason,
    StreamEvent,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    Usage,
    is_server_tool_type,
)

log = structlog.get_logger()

DEFAULT_TIMEOUT = 600.0
"""Seconds; long agent turns with big ``max_tokens`` legitimately take minutes."""

_STOP_REASONS: dict[str, StopReason] = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "pause_turn": "pause_turn",
    "refusal": "refusal",
    # Running out of context is, for the agent loop, the same as running out of output budget.
    "model_context_window_exceeded": "max_tokens",
}


class AnthropicProvider:
    """:class:`~quarterdeck.providers.types.Provider` for Claude via the Messages API.

    ``last_rate_limit_headers`` holds the ``anthropic-ratelimit-*`` headers of the most recent
    response (success or error). It is per provider instance, so under concurrency it is "a recent
    call", good for gauges and admission control but not for attributing a limit to one run.
    """

    name = "anthropic"

    def __init__(
        self,
        api_key: str,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        connect_timeout: float = 10.0,
        default_headers: Mapping[str, str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            timeout=anthropic.Timeout(timeout, connect=min(connect_timeout, timeout)),
            max_retries=0,
            default_headers=default_headers,
        )
        self._clock = clock or SystemClock()
        self.last_rate_limit_headers: dict[str, str] = {}
        self.server_address: str | None = self._client.base_url.host or None
        """The API's host, for ``server.address`` on ``chat`` spans."""

    async def aclose(self) -> None:
        await self._client.close()

    async def complete(self, request: ModelRequest) -> ModelResponse:
        started = self._clock.now()
        try:
            raw = await self._client.messages.with_raw_response.create(**request_params(request))
            self._remember_limits(raw.headers)
            message = await raw.parse()
        except (anthropic.APIError, httpx2.HTTPError) as exc:
            raise self._error(exc) from exc
        response = _response_from_sdk(message, raw.request_id)
        response.latency_s = self._clock.now() - started
        return response

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        """Yield ``text``/``thinking`` deltas, a ``tool_use`` event per finished tool call (its
        name in ``text``), then one ``message`` event with the complete response.

        Time to first token is measured to the first content delta of any kind, since a turn
        that opens with a tool call is just as "started" as one that opens with prose.
        """
        started = self._clock.now()
        ttft: float | None = None
        start_usage: Any = None
        try:
            manager = self._client.messages.stream(**request_params(request))
            async with manager as stream:
                self._remember_limits(stream.response.headers)
                async for event in stream:
                    if event.type == "message_start":
                        start_usage = event.message.usage
                    elif event.type == "content_block_delta" and ttft is None:
                        ttft = self._clock.now() - started
                    if event.type == "text":
                        yield StreamEvent(type="text", text=event.text)
                    elif event.type == "thinking":
                        yield StreamEvent(type="thinking", text=event.thinking)
                    elif event.type == "content_block_stop" and (
                        event.content_block.type == "tool_use"
                    ):
                        yield StreamEvent(type="tool_use", text=event.content_block.name)
                final = await stream.get_final_message()
                request_id = stream.request_id
        except (anthropic.APIError, httpx2.HTTPError) as exc:
            raise self._error(exc) from exc
        except ValueError as exc:  # the SDK could not parse a tool call's streamed JSON
            raise ProviderError(f"malformed anthropic stream: {exc}", retryable=True) from exc
        response = _response_from_sdk(final, request_id)
        if start_usage is not None and not (
            response.usage.cache_creation_5m_tokens or response.usage.cache_creation_1h_tokens
        ):
            # The TTL split only arrives on message_start; message_delta has cumulative totals.
            split = usage_from_sdk(start_usage)
            response.usage.cache_creation_5m_tokens = split.cache_creation_5m_tokens
            response.usage.cache_creation_1h_tokens = split.cache_creation_1h_tokens
            response.usage.cache_creation_input_tokens = max(
                response.usage.cache_creation_input_tokens, split.cache_creation_input_tokens
            )
        response.latency_s = self._clock.now() - started
        response.ttft_s = ttft
        yield StreamEvent(type="message", response=response)

    def _remember_limits(self, headers: Mapping[str, str]) -> None:
        limits = {
            k.lower(): v for k, v in headers.items() if k.lower().startswith("anthropic-ratelimit-")
        }
        if limits:
            self.last_rate_limit_headers = limits

    def _error(self, exc: Exception) -> ProviderError:
        if isinstance(exc, anthropic.APIStatusError):
            self._remember_limits(exc.response.headers)
        error = provider_error(exc)
        log.warning(
            "provider.error",
            provider=self.name,
            status=error.status_code,
            error_type=error.error_type,
            request_id=error.request_id,
            retryable=error.retryable,
        )
        return error


# --- mapping SDK responses to our types -------------------------------------------------------
def usage_from_sdk(usage: Any) -> Usage:
    """Every token class the API reports; the 5m/1h cache-write split when it is present.

    ``cache_creation_input_tokens`` is kept as the total of cache writes; when only the split is
    reported the total is its sum, so pricing never sees a split larger than the total.
    """
    split = getattr(usage, "cache_creation", None)
    five = int(getattr(split, "ephemeral_5m_input_tokens", 0) or 0)
    hour = int(getattr(split, "ephemeral_1h_input_tokens", 0) or 0)
    created = int(getattr(usage, "cache_creation_input_tokens", 0) or 0)
    return Usage(
        input_tokens=int(getattr(usage, "input_tokens", 0) or 0),
        output_tokens=int(getattr(usage, "output_tokens", 0) or 0),
        cache_creation_input_tokens=max(created, five + hour),
        cache_creation_5m_tokens=five,
        cache_creation_1h_tokens=hour,
        cache_read_input_tokens=int(getattr(usage, "cache_read_input_tokens", 0) or 0),
    )


def _blocks_from_sdk(content: list[Any]) -> list[ContentBlock]:
    blocks: list[ContentBlock] = []
    for block in content:
        if block.type == "text":
            blocks.append(TextBlock(text=block.text))
        elif block.type == "thinking":
            blocks.append(ThinkingBlock(thinking=block.thinking, signature=block.signature or ""))
        elif block.type == "tool_use":
            raw = block.input
            blocks.append(
                ToolUseBlock(
                    id=block.id, name=block.name, input=dict(raw) if isinstance(raw, dict) else {}
                )
            )
        elif block.type == "redacted_thinking":
            blocks.append(RedactedThinkingBlock(data=block.data))
        elif is_server_tool_type(block.type):
            blocks.append(ServerToolBlock(raw=block.to_dict(mode="json")))
        else:
            log.warning("provider.block_dropped", provider="anthropic", block_type=block.type)
    return blocks


def _response_from_sdk(message: Any, request_id: str | None) -> ModelResponse:
    stop = _STOP_REASONS.get(message.stop_reason or "end_turn", "end_turn")
    return ModelResponse(
        id=message.id,
        model=message.model,
        message=Message(role="assistant", content=_blocks_from_sdk(list(message.content))),
        stop_reason=stop,
        usage=usage_from_sdk(message.usage),
        request_id=request_id,
    )


# --- errors (shared with openai_compat) -------------------------------------------------------
_STATUS_FOR_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_TYPE_FOR_STATUS = {v: k for k, v in _STATUS_FOR_TYPE.items()} | {
    408: "timeout",
    409: "conflict_error",
    422: "invalid_request_error",
    503: "api_error",
}


def default_error_type(status: int) -> str:
    if status in _TYPE_FOR_STATUS:
        return _TYPE_FOR_STATUS[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def is_retryable_status(status: int) -> bool:
    """408/409/429 and every 5xx (529 included) are transient; other 4xx will fail again."""
    return status in (408, 409, 429) or status >= 500


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """``retry-after-ms`` (more precise, Anthropic and OpenAI send it) else ``retry-after``,
    which may be seconds or an HTTP date. Negative or unparseable values mean "no hint"."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
            return value if value >= 0 else None
        except ValueError:
            pass
    text = headers.get("retry-after")
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(text) if text.strip() else None
        if parsed is None:
            return None
        value = parsed.timestamp() - (time.time() if now is None else now)
    return value if value >= 0 else None


def status_for_error_type(error_type: str) -> int | None:
    return _STATUS_FOR_TYPE.get(error_type)


def provider_error(exc: Exception, provider: str = "anthropic") -> ProviderError:
    """Classify an SDK or transport exception; never raises."""
    if isinstance(exc, anthropic.APITimeoutError | httpx2.TimeoutException):
        return ProviderError(f"{provider} request timed out", error_type="timeout", retryable=True)
    if isinstance(exc, anthropic.APIConnectionError | httpx2.TransportError):
        return ProviderError(
            f"{provider} connection failed: {exc}", error_type="connection_error", retryable=True
        )
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        if exc.type:
            error_type = str(exc.type)
        else:
            error_type = default_error_type(status) if status >= 400 else "api_error"
        if status < 400:
            # An ``error`` event inside a 200 stream: report the status the API uses for that
            # error type, so retry policy and severity treat it like the same failure up front.
            status = status_for_error_type(error_type) or 500
        headers = exc.response.headers
        detail = exc.api_message or exc.message
        return ProviderError(
            f"{provider} {status} {error_type}: {detail}",
            status_code=status,
            error_type=error_type,
            retry_after=retry_after_seconds(headers),
            request_id=exc.request_id or headers.get("request-id"),
            retryable=is_retryable_status(status),
        )
    return ProviderError(f"{provider} call failed: {exc}", error_type="api_error", retryable=True)
