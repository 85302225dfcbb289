"""A model call's prompt and answer in the GenAI conventions' JSON shape, for ``chat`` spans.

Why a module of its own: the conventions put content on spans as JSON strings
(``gen_ai.input.messages``, ``gen_ai.output.messages``, ``gen_ai.system_instructions``) in a
shape of their own (messages of typed ``parts``), and span attributes must stay small, so the
conversion and its size cap live in one place. It runs only when content recording is on
(``QUARTERDECK_TRACE_CONTENT``) and the span records: prompts carry code and secrets.

The cap keeps the JSON valid: each part's text is cut first, then the oldest messages are left
out (the newest turns say most about a call), and only a single oversized message is cut as a
string.
"""

from __future__ import annotations

from typing import Any

import orjson

from quarterdeck.providers.types import (
    ContentBlock,
    Message,
    ModelRequest,
    ModelResponse,
    RedactedThinkingBlock,
    ServerToolBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)

MAX_CHARS = 16_384
"""The longest attribute value written (characters of JSON)."""
MAX_PART_CHARS = 4_096
"""The longest text of one part: a long tool result cannot crowd out the rest of the turn."""
_CUT = "…[truncated]"


def _text(value: str) -> str:
    if len(value) <= MAX_PART_CHARS:
        return value
    return value[: MAX_PART_CHARS - len(_CUT)] + _CUT


def _part(block: ContentBlock) -> dict[str, Any]:
    if isinstance(block, TextBlock):
        return {"type": "text", "content": _text(block.text)}
    if isinstance(block, ThinkingBlock):
        return {"type": "reasoning", "content": _text(block.thinking)}
    if isinstance(block, RedactedThinkingBlock):
        return {"type": "reasoning", "content": "[redacted]"}
    if isinstance(block, ToolUseBlock):
        return {"type": "tool_call", "id": block.id, "name": block.name, "arguments": block.input}
    if isinstance(block, ToolResultBlock):
        return {
            "type": "tool_call_response",
            "id": block.tool_use_id,
            "response": _text(block.content),
        }
    if isinstance(block, ServerToolBlock):  # the API's own tools: named, not copied
        raw = block.raw
        return {"type": block.type, **{k: raw[k] for k in ("id", "name") if k in raw}}
    raise AssertionError(f"unknown block {block!r}")  # pragma: no cover - ContentBlock is closed


def _message(message: Message) -> dict[str, Any]:
    return {"role": message.role, "parts": [_part(b) for b in message.content]}


def _dumps(value: Any) -> str:
    # default=str: tool arguments are model-written JSON, but never let a span attribute raise
    return orjson.dumps(value, default=str).decode()


def _capped(messages: list[dict[str, Any]]) -> str:
    """The JSON of ``messages``, leaving out the oldest until it fits in :data:`MAX_CHARS`."""
    start = 0
    out = _dumps(messages)
    while len(out) > MAX_CHARS and start < len(messages) - 1:
        start += 1
        out = _dumps(messages[start:])
    if len(out) > MAX_CHARS:
        out = out[: MAX_CHARS - len(_CUT)] + _CUT
    return out


def input_messages(request: ModelRequest) -> str:
    """``gen_ai.input.messages``: the conversation sent (without the system prompt)."""
    return _capped([_message(m) for m in request.messages])


def system_instructions(request: ModelRequest) -> str | None:
    """``gen_ai.system_instructions``; None when the request has no system prompt."""
    if not request.system:
        return None
    return _capped([{"type": "text", "content": _text(request.system)}])


def output_messages(response: ModelResponse) -> str:
    """``gen_ai.output.messages``: the answer, with its finish reason."""
    message = _message(response.message)
    message["finish_reason"] = response.stop_reason
    return _capped([message])
