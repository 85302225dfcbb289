"""Secret redaction of the model's own messages before they are checkpointed or sent again.

Tool output is redacted where tools run (:mod:`quarterdeck.agents.guard`); this covers the other
half the issue names, the model's text: text blocks and tool-call arguments. The stored and
re-sent copy is redacted; the tool calls of the turn still run with what the model actually
wrote (a test fixture may legitimately hold a fake key). Thinking blocks are left alone: the API
verifies their signatures, and an edited one would be rejected.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from quarterdeck.providers.types import ContentBlock, Message, TextBlock, ToolUseBlock
from quarterdeck.security.policy import redact


def redact_message(message: Message) -> tuple[Message, list[str]]:
    """(the message with secrets replaced, the kinds of secret found); the same object if none."""
    found: list[str] = []
    blocks: list[ContentBlock] = []
    for block in message.content:
        if isinstance(block, TextBlock):
            cleaned = redact(block.text)
            if cleaned.findings:
                found += [f.type for f in cleaned.findings]
                block = replace(block, text=cleaned.text)
        elif isinstance(block, ToolUseBlock):
            value, kinds = redact_arguments(block.input)
            if kinds:
                found += kinds
                block = replace(block, input=value)
        blocks.append(block)
    if not found:
        return message, []
    return replace(message, content=blocks), sorted(set(found))


def redact_arguments(arguments: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Tool-call arguments with secrets replaced, and the kinds found (the same dict if none)."""
    cleaned = redact(json.dumps(arguments))
    if not cleaned.findings:
        return arguments, []
    try:
        value = json.loads(cleaned.text)
    except ValueError:  # a replacement cut through JSON syntax: keep a visible marker instead
        value = {"redacted": True}
    if not isinstance(value, dict):
        value = {"redacted": True}
    return value, [f.type for f in cleaned.findings]
