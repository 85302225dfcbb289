"""Provider-neutral message types.

They mirror the Anthropic Messages API closely (content blocks, usage classes, stop reasons) because
that is the richest of the formats we speak; other providers are mapped onto them. They are plain
dataclasses with ``to_dict``/``from_dict`` so a conversation can be checkpointed as JSON.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, Protocol, runtime_checkable

from quarterdeck.kit.prompt_cache import CacheTTL

Role = Literal["user", "assistant"]
StopReason = Literal[
    "end_turn", "tool_use", "max_tokens", "stop_sequence", "pause_turn", "refusal", "error"
]


@dataclass
class TextBlock:
    text: str
    type: Literal["text"] = "text"


@dataclass
class ThinkingBlock:
    thinking: str
    signature: str = ""
    type: Literal["thinking"] = "thinking"


@dataclass
class RedactedThinkingBlock:
    """Thinking the safety systems encrypted: opaque ``data`` that must go back unchanged."""

    data: str
    type: Literal["redacted_thinking"] = "redacted_thinking"


@dataclass
class ServerToolBlock:
    """A block of a tool the API runs itself (``server_tool_use``, ``web_search_tool_result``,
    ``code_execution_tool_result``, ...), kept as the API's raw dict.

    We never interpret these, only hand them back in later turns: the model's next turn needs them
    exactly as sent (a ``server_tool_use`` without its result is a 400), and their shapes change
    with every new server tool, so a typed copy would drop whatever it did not know.
    """

    raw: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.raw.get("type", ""))


@dataclass
class ToolUseBlock:
    id: str
    name: str
    input: dict[str, Any]
    type: Literal["tool_use"] = "tool_use"


@dataclass
class ToolResultBlock:
    tool_use_id: str
    content: str
    is_error: bool = False
    type: Literal["tool_result"] = "tool_result"


ContentBlock = (
    TextBlock
    | ThinkingBlock
    | RedactedThinkingBlock
    | ToolUseBlock
    | ToolResultBlock
    | ServerToolBlock
)


def is_server_tool_type(kind: object) -> bool:
    """Block types the API's own tools produce: ``server_tool_use``, ``mcp_tool_use``,
    ``container_upload`` and every ``*_tool_result`` except our own ``tool_result``."""
    if not isinstance(kind, str):
        return False
    return kind in ("server_tool_use", "mcp_tool_use", "container_upload") or (
        kind.endswith("_tool_result") and kind != "tool_result"
    )


def block_from_dict(data: dict[str, Any]) -> ContentBlock:
    kind = data.get("type")
    if kind == "text":
        return TextBlock(text=data["text"])
    if kind == "thinking":
        return ThinkingBlock(thinking=data["thinking"], signature=data.get("signature", ""))
    if kind == "redacted_thinking":
        return RedactedThinkingBlock(data=data["data"])
    if is_server_tool_type(kind):
        return ServerToolBlock(raw=dict(data))
    if kind == "tool_use":
        return ToolUseBlock(id=data["id"], name=data["name"], input=dict(data.get("input") or {}))
    if kind == "tool_result":
        return ToolResultBlock(
            tool_use_id=data["tool_use_id"],
            content=str(data.get("content", "")),
            is_error=bool(data.get("is_error", False)),
        )
    raise ValueError(f"unknown content block type {kind!r}")


def block_to_dict(block: ContentBlock) -> dict[str, Any]:
    """The block as the API spells it; a server-tool block is its raw dict, unchanged."""
    if isinstance(block, ServerToolBlock):
        return dict(block.raw)
    return asdict(block)


@dataclass
class Message:
    role: Role
    content: list[ContentBlock]

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "content": [block_to_dict(b) for b in self.content]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Message:
        content = data["content"]
        if isinstance(content, str):
            return cls(role=data["role"], content=[TextBlock(content)])
        return cls(role=data["role"], content=[block_from_dict(b) for b in content])

    @property
    def text(self) -> str:
        return "".join(b.text for b in self.content if isinstance(b, TextBlock))

    @property
    def tool_uses(self) -> list[ToolUseBlock]:
        return [b for b in self.content if isinstance(b, ToolUseBlock)]


@dataclass
class Usage:
    """Token counts for one call, by pricing class.

    ``input_tokens`` excludes cached tokens, as in the Anthropic API: cache writes and reads are
    reported separately and priced separately, so adding them together would double count.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_creation_5m_tokens: int = 0
    cache_creation_1h_tokens: int = 0
    cache_read_input_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_creation_input_tokens
            + self.cache_read_input_tokens
        )

    # Field names spelled out: these run on every turn, and dataclasses.asdict is slow.
    def __add__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, k) + getattr(other, k) for k in _USAGE_FIELDS))

    def to_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in _USAGE_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        return cls(*(int(data.get(k, 0) or 0) for k in _USAGE_FIELDS))


_USAGE_FIELDS = tuple(f.name for f in fields(Usage))


@dataclass
class ToolSpec:
    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass
class ModelRequest:
    model: str
    messages: list[Message]
    system: str = ""
    tools: list[ToolSpec] = field(default_factory=list)
    max_tokens: int = 4096
    temperature: float | None = None
    cache_ttl: CacheTTL | None = None
    """Prompt caching: breakpoints with this TTL on the tools, the system prompt and the newest
    messages (providers that support it); None sends none, so nothing is cached."""
    thinking_budget: int | None = None
    """Extended thinking's token budget (at least 1024, below ``max_tokens``); None: off."""
    metadata: dict[str, str] = field(default_factory=dict)
    """Opaque hints; the simulated provider reads ``run_id`` and ``turn`` from here."""


@dataclass
class ModelResponse:
    id: str
    model: str
    message: Message
    stop_reason: StopReason
    usage: Usage
    request_id: str | None = None
    latency_s: float = 0.0
    ttft_s: float | None = None


@dataclass
class StreamEvent:
    """A provider-neutral streaming event: ``text`` deltas, then a final ``message``."""

    type: Literal["text", "thinking", "tool_use", "message"]
    text: str = ""
    response: ModelResponse | None = None


@runtime_checkable
class Provider(Protocol):
    """What every provider implements. Implementations raise ``ProviderError`` on failure."""

    name: str

    async def complete(self, request: ModelRequest) -> ModelResponse: ...

    def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]: ...

    async def aclose(self) -> None: ...
