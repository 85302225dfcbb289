"""Our neutral request as the Messages API's parameters: messages, tools, prompt caching, thinking.

Prompt caching (``ModelRequest.cache_ttl``): breakpoints go on the last tool definition, the
system prompt, and the newest two user messages (the newest one rolls forward each turn and writes
the new part; the one before reads what the last turn wrote, even past the API's 20-block
lookback), four in all, the API's maximum. Extended thinking (``ModelRequest.thinking_budget``) is
sent as ``{"type": "enabled", "budget_tokens": N}``, which needs ``max_tokens`` above the budget;
Claude 4.7 and later reject that with a 400 and take only ``{"type": "adaptive"}``, which is what
they get (the budget then only switches thinking on). Thinking forbids a forced ``tool_choice`` and
sampling parameters; we send neither. Every block the model returns goes back unchanged in later
turns: thinking with its signature, ``redacted_thinking``, and server-tool blocks as raw dicts
(the API rejects a tool-use turn whose thinking was dropped or altered).
"""

from __future__ import annotations

import re
from typing import Any, cast

import structlog
from anthropic.types import (
    AssistantMessageParam,
    ContentBlockParam,
    MessageParam,
    RedactedThinkingBlockParam,
    TextBlockParam,
    ThinkingBlockParam,
    ToolParam,
    ToolResultBlockParam,
    ToolUseBlockParam,
    UserMessageParam,
)

from quarterdeck.exceptions import ProviderError
from quarterdeck.providers.types import (
    ContentBlock,
    Message,
    ModelRequest,
    RedactedThinkingBlock,
    ServerToolBlock,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
)

log = structlog.get_logger()

_warned_temperature = False


def _warn_temperature_dropped() -> None:
    """API version 2026-10-21 (the SDK 2.x default) rejects ``temperature``/``top_p``/``top_k``
    with a 400 even at their defaults, and the SDK no longer accepts them; so we drop it and say so
    once rather than fail every call of a run that set it."""
    global _warned_temperature
    _warned_temperature = True
    log.warning(
        "provider.temperature_ignored",
        provider="anthropic",
        reason="the Messages API no longer accepts sampling parameters",
    )


MAX_BREAKPOINTS = 4
MIN_THINKING_BUDGET = 1024
_VERSION = re.compile(r"claude-(opus|sonnet|haiku|fable|mythos)-(\d+)(?:-(\d)(?!\d))?")


def adaptive_thinking_only(model: str) -> bool:
    """Claude 4.7 and later (and Fable, Mythos) reject ``thinking.type: enabled`` with a 400."""
    found = _VERSION.search(model.lower())
    if found is None:
        return False
    family, major, minor = found.group(1), int(found.group(2)), int(found.group(3) or 0)
    return family in ("fable", "mythos") or (major, minor) >= (4, 7)


def thinking_param(model: str, budget: int, max_tokens: int) -> dict[str, Any]:
    """The ``thinking`` parameter for ``model``; raises a non-retryable ProviderError for a budget
    the API would reject, so the run fails with the reason instead of a retried 400."""
    if adaptive_thinking_only(model):
        return {"type": "adaptive"}
    if budget < MIN_THINKING_BUDGET or budget >= max_tokens:
        raise ProviderError(
            f"thinking budget {budget} must be at least {MIN_THINKING_BUDGET} and below "
            f"max_tokens ({max_tokens})",
            status_code=400,
            error_type="invalid_request_error",
            retryable=False,
        )
    return {"type": "enabled", "budget_tokens": budget}


def request_params(request: ModelRequest) -> dict[str, Any]:
    messages = [_message_param(m) for m in request.messages]
    params: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": messages,
    }
    control: dict[str, Any] | None = None
    if request.cache_ttl is not None:
        control = {"type": "ephemeral"}
        if request.cache_ttl == "1h":
            control["ttl"] = "1h"
    points = 0
    if request.system:
        if control is None:
            params["system"] = request.system
        else:
            params["system"] = [{"type": "text", "text": request.system, "cache_control": control}]
            points += 1
    if request.tools:
        tools: list[dict[str, Any]] = [
            dict(ToolParam(name=t.name, description=t.description, input_schema=t.input_schema))
            for t in request.tools
        ]
        if control is not None:
            tools[-1]["cache_control"] = control
            points += 1
        params["tools"] = tools
    if control is not None:
        _mark_messages(messages, control, MAX_BREAKPOINTS - points)
    if request.thinking_budget is not None:
        params["thinking"] = thinking_param(
            request.model, request.thinking_budget, request.max_tokens
        )
    if request.temperature is not None and not _warned_temperature:
        _warn_temperature_dropped()
    if request.metadata.get("user_id"):
        # The API's metadata accepts only user_id (for abuse attribution); other hints stay local.
        params["metadata"] = {"user_id": request.metadata["user_id"]}
    return params


def _mark_messages(messages: list[MessageParam], control: dict[str, Any], budget: int) -> None:
    """Breakpoints on the last cacheable block of the newest user messages, newest first: the
    newest writes this turn's prefix, the one before reads the last turn's."""
    for message in reversed(messages):
        if budget <= 0:
            return
        if message["role"] != "user" and message is not messages[-1]:
            continue
        blocks = cast(list[dict[str, Any]], message["content"])
        for block in reversed(blocks):
            # Thinking blocks cannot carry cache_control, nor can empty text.
            if block["type"] in ("thinking", "redacted_thinking") or block.get("text") == "":
                continue
            block["cache_control"] = control
            budget -= 1
            break


def _message_param(message: Message) -> MessageParam:
    content = [_block_param(b) for b in message.content]
    if message.role == "assistant":
        return AssistantMessageParam(role="assistant", content=content)
    return UserMessageParam(role="user", content=content)


def _block_param(block: ContentBlock) -> ContentBlockParam:
    if isinstance(block, TextBlock):
        return TextBlockParam(type="text", text=block.text)
    if isinstance(block, ThinkingBlock):
        return ThinkingBlockParam(
            type="thinking", thinking=block.thinking, signature=block.signature
        )
    if isinstance(block, RedactedThinkingBlock):
        return RedactedThinkingBlockParam(type="redacted_thinking", data=block.data)
    if isinstance(block, ServerToolBlock):
        return cast(ContentBlockParam, dict(block.raw))  # as the API sent it
    if isinstance(block, ToolUseBlock):
        return ToolUseBlockParam(type="tool_use", id=block.id, name=block.name, input=block.input)
    return ToolResultBlockParam(
        type="tool_result",
        tool_use_id=block.tool_use_id,
        content=block.content,
        is_error=block.is_error,
    )
