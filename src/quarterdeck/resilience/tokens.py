"""How many tokens a model call takes from the per-minute token limits, before and after it.

Before a call only an estimate exists, so the limiter takes that (:func:`before_call`) and,
once the response reports its usage, charges or refunds the difference (:func:`settlement`).
Both are pure, so the rule is tested without a clock or a provider.

The rule mirrors how Anthropic counts its own limits:

- **Input (ITPM)**: the estimate is ``ceil(chars / 4)`` over the system prompt, the messages
  (as JSON) and the tool schemas: cheap, deterministic, and close to Claude's tokenizer for
  English and code. After the call it is the reported ``input_tokens`` plus
  ``cache_creation_input_tokens``; ``cache_read_input_tokens`` count too only for the models
  whose limits still include cache reads (the Claude 3 family, and models we do not know), as
  the API's rate-limit page says: for current models "only uncached input tokens count".
- **Output (OTPM)**: the API estimates it from ``max_tokens`` at the start of a request and
  corrects it at the end; so do we: ``max_tokens`` before, ``output_tokens`` after.
- **Combined tokens per minute** (a limit of ours; Anthropic has none): the input estimate
  before (reserving ``max_tokens`` there too would let one call hold most of a small limit),
  input as counted above plus output after.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from quarterdeck.providers.types import ModelRequest, Usage

CHARS_PER_TOKEN = 4
TOKEN_FAMILIES = ("tokens", "input-tokens", "output-tokens")
# Claude ids, with Bedrock ("us.anthropic.") or gateway ("anthropic/") spellings; and the
# Claude 3 family ("claude-3-5-haiku-...", "claude-3-opus-...", "claude-haiku-3-...").
_CLAUDE = re.compile(r"^(?:[a-z]{2,4}\.)?(?:anthropic[./])?claude-")
_CLAUDE_3 = re.compile(r"^(?:[a-z]{2,4}\.)?(?:anthropic[./])?claude-(?:[a-z]+-)?3(?:[-.@]|$)")


@dataclass(frozen=True)
class TokenCharge:
    """Tokens of one call against each token family of the limiter."""

    input: int
    output: int
    combined: int

    def family(self, name: str) -> int:
        """The amount for one ``anthropic-ratelimit-<family>`` bucket."""
        if name == "input-tokens":
            return self.input
        if name == "output-tokens":
            return self.output
        if name == "tokens":
            return self.combined
        return 0


def _chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    return len(json.dumps(value, default=str, separators=(",", ":")))


def estimate_input_tokens(request: ModelRequest) -> int:
    """``ceil(chars / 4)`` of the system prompt, the messages and the tool schemas."""
    chars = _chars(request.system)
    chars += sum(_chars(m.to_dict()) for m in request.messages)
    chars += sum(
        _chars({"name": t.name, "description": t.description, "input_schema": t.input_schema})
        for t in request.tools
    )
    return math.ceil(chars / CHARS_PER_TOKEN)


def cache_reads_count(model: str) -> bool:
    """Whether the API counts a model's cache reads toward its input-token limit: only for the
    Claude 3 family among Claude models; and for any other model (we cannot know, so count)."""
    name = model.strip().lower()
    if not _CLAUDE.match(name):
        return True
    return _CLAUDE_3.match(name) is not None


def before_call(request: ModelRequest) -> TokenCharge:
    """What a call takes before it is made: the input estimate, and ``max_tokens`` of output."""
    estimate = estimate_input_tokens(request)
    return TokenCharge(input=estimate, output=max(0, request.max_tokens), combined=estimate)


def after_call(model: str, usage: Usage) -> TokenCharge:
    """What the call really took, counted as the API counts its limits (see the module doc)."""
    counted = usage.input_tokens + usage.cache_creation_input_tokens
    if cache_reads_count(model):
        counted += usage.cache_read_input_tokens
    return TokenCharge(
        input=counted, output=usage.output_tokens, combined=counted + usage.output_tokens
    )


def settlement(held: Mapping[str, float], actual: TokenCharge) -> dict[str, float]:
    """Per family, what to charge (positive) or refund (negative) so that what a call took
    equals ``actual``; ``held`` is what was taken before it (only the families taken)."""
    return {
        family: actual.family(family) - taken
        for family, taken in held.items()
        if actual.family(family) != taken
    }
