"""The upstream a new user gets without an API key: simulated messages, in process, on the wire.

``make up`` with no key should still let someone point Claude Code or an SDK at the gateway and
watch it work, so this speaks the Messages API faithfully where clients look: JSON messages, or
SSE with ``message_start`` (input and cache usage), ``content_block_start``/``_delta``/``_stop``,
a ``ping``, ``message_delta`` with the *cumulative* usage, and ``message_stop``; error bodies in
Anthropic's envelope; ``count_tokens`` and ``/v1/models``. The bytes go through the same relay,
meter and recorder as real traffic, so usage and cost reports fill up with realistic numbers.

The content comes from :class:`~quarterdeck.providers.simulated.SimulatedProvider` (one text
generator in the project, not two). A request that offers the tools its script uses (the
project's own agents) gets the scripted coding session; any other (Claude Code, an SDK app)
gets the script's final answer at once, since a client cannot run tools it does not have.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import orjson

from quarterdeck.exceptions import ProviderError
from quarterdeck.gateway.errors import envelope, request_id
from quarterdeck.gateway.upstream import UpstreamReply
from quarterdeck.kit.latency import LatencyProfile, parse_latency
from quarterdeck.kit.prompt_cache import requested_ttl
from quarterdeck.providers.simulated import SimulatedProvider
from quarterdeck.providers.types import (
    Message,
    ModelRequest,
    ModelResponse,
    Role,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    Usage,
)

MODELS = ("simulated-opus", "simulated-sonnet", "simulated-haiku")
"""The models ``/v1/models`` lists; priced like their namesakes in ``pricing.yaml``."""
SCRIPT_TOOLS = frozenset({"list_files", "search", "read_file", "edit_file", "run_command"})
_TEXT_CHUNK = 24  # characters per text_delta: small enough that a client sees text stream


class SimulatedUpstream:
    """An :class:`~quarterdeck.gateway.upstream.Upstream` that never leaves the process."""

    name = "simulated"

    def __init__(self, latency: LatencyProfile | None = None, *, error_rate: float = 0.0) -> None:
        profile = latency or parse_latency("0")
        self._scripted = SimulatedProvider(profile, error_rate=error_rate)
        self._final = SimulatedProvider(profile, error_rate=error_rate, turns=1)

    async def send(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        *,
        tenant: str,
    ) -> UpstreamReply:
        route = path.split("?", 1)[0]
        if method == "POST" and route == "/v1/messages":
            return await self._messages(dict(headers), body)
        if method == "POST" and route == "/v1/messages/count_tokens":
            return _count_tokens(body)
        if method == "GET" and route == "/v1/models":
            return _json(200, _models())
        return _json(404, envelope("not_found_error", f"{method} {route} not found", request_id()))

    async def aclose(self) -> None:
        await self._scripted.aclose()
        await self._final.aclose()

    async def _messages(self, headers: Mapping[str, str], body: bytes) -> UpstreamReply:
        payload, problem = validate_request(body)
        if problem is not None:
            return _json(400, envelope("invalid_request_error", problem, request_id()))
        model, messages = str(payload["model"]), payload["messages"]
        request = _model_request(model, messages, payload, headers)
        scripted = SCRIPT_TOOLS <= set(request_tool_names(payload))
        provider = self._scripted if scripted else self._final
        try:
            response = await provider.complete(request)
        except ProviderError as exc:
            if exc.status_code is None:
                raise  # a simulated timeout: no HTTP answer, like a dead connection
            retry = {"retry-after": f"{exc.retry_after:g}"} if exc.retry_after else {}
            answer = envelope(exc.error_type, exc.detail, exc.request_id)
            return _json(exc.status_code, answer, retry, exc.request_id)
        if _wants_thinking(payload):
            response.message.content.insert(0, ThinkingBlock(_thought(response), "sim-signature"))
        response.model = model
        message = render_message(response)
        rid = response.request_id or request_id()
        if payload.get("stream") is True:
            return _reply(200, _sse(sse_events(message)), "text/event-stream", {}, rid)
        return _json(200, orjson.dumps(message), {}, rid)


def validate_request(body: bytes) -> tuple[dict[str, Any], str | None]:
    """The request parsed, and what the real API would answer 400 for (None: nothing).

    The same checks for ``/v1/messages`` and ``count_tokens``, worded like the API's
    (``model: Field required``), so a client tested against the simulated upstream sees the
    errors it will see in production instead of a 200 for a body the API refuses.
    """
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return {}, f"the request body is not valid JSON: {exc}"
    if not isinstance(payload, dict):
        return {}, "the request body must be a JSON object"
    model = payload.get("model")
    if "model" not in payload:
        return payload, "model: Field required"
    if not isinstance(model, str) or not model:
        return payload, "model: Input should be a non-empty string"
    messages = payload.get("messages")
    if "messages" not in payload:
        return payload, "messages: Field required"
    if not isinstance(messages, list):
        return payload, "messages: Input should be a valid list"
    for index, item in enumerate(messages):
        where = f"messages.{index}"
        if not isinstance(item, dict):
            return payload, f"{where}: Input should be a valid dictionary"
        if item.get("role") not in ("user", "assistant"):
            return payload, f"{where}.role: Input should be 'user' or 'assistant'"
        content = item.get("content")
        if not isinstance(content, (str, list)):
            return payload, f"{where}.content: Input should be a valid string or list"
        if isinstance(content, list) and not all(
            isinstance(b, dict) and isinstance(b.get("type"), str) for b in content
        ):
            return payload, f"{where}.content: every block needs a 'type'"
    system = payload.get("system")
    if system is not None and not isinstance(system, (str, list)):
        return payload, "system: Input should be a valid string or list"
    tools = payload.get("tools")
    if tools is not None and not isinstance(tools, list):
        return payload, "tools: Input should be a valid list"
    return payload, None


CHARS_PER_TOKEN = 4
"""About what Claude's tokenizer averages on English and code."""
MESSAGE_OVERHEAD = 4
"""Tokens a message costs beyond its content (role markers), and a request's fixed part."""


def count_input_tokens(payload: Mapping[str, Any]) -> int:
    """A deterministic ``input_tokens`` for a valid request: characters of text (messages,
    system, tool definitions, tool inputs and results) over :data:`CHARS_PER_TOKEN`, plus
    :data:`MESSAGE_OVERHEAD` per message and for the request. The same body always counts the
    same; more content never counts fewer."""
    chars = _chars(payload.get("system")) + _chars(payload.get("tools"))
    messages = payload.get("messages") or []
    for item in messages:
        chars += _chars(item.get("content"))
    return MESSAGE_OVERHEAD * (1 + len(messages)) + -(-chars // CHARS_PER_TOKEN)


def _chars(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_block_chars(b) for b in value)
    return len(orjson.dumps(value))


def _block_chars(block: Any) -> int:
    """The text a content block (or tool definition) puts in front of the model."""
    if isinstance(block, str):
        return len(block)
    if not isinstance(block, dict):
        return len(orjson.dumps(block))
    kind = block.get("type")
    if kind == "text" and isinstance(block.get("text"), str):
        return len(block["text"])
    if kind == "thinking" and isinstance(block.get("thinking"), str):
        return len(block["thinking"])
    if kind == "tool_result":
        return _chars(block.get("content"))
    # tool_use, tool definitions, images and anything newer: what they serialise to
    return len(orjson.dumps({k: v for k, v in block.items() if k != "cache_control"}))


def _count_tokens(body: bytes) -> UpstreamReply:
    payload, problem = validate_request(body)
    if problem is not None:
        return _json(400, envelope("invalid_request_error", problem, request_id()))
    return _json(200, orjson.dumps({"input_tokens": count_input_tokens(payload)}))


def request_tool_names(payload: Mapping[str, Any]) -> list[str]:
    tools = payload.get("tools")
    if not isinstance(tools, list):
        return []
    return [str(t.get("name")) for t in tools if isinstance(t, dict)]


def _wants_thinking(payload: Mapping[str, Any]) -> bool:
    thinking = payload.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def _thought(response: ModelResponse) -> str:
    return f"Simulated reasoning before a {response.stop_reason} answer."


def _model_request(
    model: str, messages: list[Any], payload: Mapping[str, Any], headers: Mapping[str, str]
) -> ModelRequest:
    """What the simulated provider reads: the first user text, the turn, a stable run key."""
    converted: list[Message] = []
    for item in messages:
        if not isinstance(item, dict):
            continue
        role: Role = "assistant" if item.get("role") == "assistant" else "user"
        converted.append(Message(role, [TextBlock(_text_of(item.get("content")))]))
    run = headers.get("x-quarterdeck-run") or headers.get("x-claude-code-session-id")
    metadata = {"run_id": run} if run else {}
    max_tokens = payload.get("max_tokens")
    return ModelRequest(
        model=model,
        messages=converted,
        max_tokens=max_tokens if isinstance(max_tokens, int) else 4096,
        cache_ttl=requested_ttl(payload),  # no breakpoints, no cache reads
        metadata=metadata,
    )


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(b.get("text", ""))
            for b in content
            if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


def usage_json(usage: Usage) -> dict[str, Any]:
    """A usage object as the API sends it, with the cache-write TTL split."""
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_creation_5m_tokens,
            "ephemeral_1h_input_tokens": usage.cache_creation_1h_tokens,
        },
        "output_tokens": usage.output_tokens,
        "service_tier": "standard",
    }


def render_message(response: ModelResponse) -> dict[str, Any]:
    """The Messages API JSON of a simulated response."""
    content: list[dict[str, Any]] = []
    for block in response.message.content:
        if isinstance(block, TextBlock):
            content.append({"type": "text", "text": block.text})
        elif isinstance(block, ThinkingBlock):
            content.append(
                {"type": "thinking", "thinking": block.thinking, "signature": block.signature}
            )
        elif isinstance(block, ToolUseBlock):
            content.append(
                {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
            )
    return {
        "id": response.id,
        "type": "message",
        "role": "assistant",
        "model": response.model,
        "content": content,
        "stop_reason": response.stop_reason,
        "stop_sequence": None,
        "usage": usage_json(response.usage),
    }


def sse_events(message: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The SSE event sequence the real API streams for ``message``."""
    usage = dict(message["usage"])
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start})
    ]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "text":
            empty: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": c} for c in _cut(block["text"], _TEXT_CHUNK)]
        elif kind == "thinking":
            empty = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": c}
                for c in _cut(block["thinking"], _TEXT_CHUNK)
            ]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        else:
            empty = {**block, "input": {}}
            raw = orjson.dumps(block["input"]).decode()
            deltas = [
                {"type": "input_json_delta", "partial_json": c} for c in _cut(raw, _TEXT_CHUNK)
            ]
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": empty},
            )
        )
        if index == 0:
            events.append(("ping", {"type": "ping"}))
        events.extend(
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
            for d in deltas
        )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    cumulative = {k: v for k, v in usage.items() if k not in ("cache_creation", "service_tier")}
    stop = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    events.append(("message_delta", {"type": "message_delta", "delta": stop, "usage": cumulative}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _cut(value: str, size: int) -> list[str]:
    return [value[i : i + size] for i in range(0, len(value), size)] or [""]


async def _sse(events: Iterable[tuple[str, dict[str, Any]]]) -> AsyncIterator[bytes]:
    for name, data in events:
        yield b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _models() -> bytes:
    data = [
        {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
        for m in MODELS
    ]
    return orjson.dumps(
        {"data": data, "has_more": False, "first_id": MODELS[0], "last_id": MODELS[-1]}
    )


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def _nothing() -> None:
    return None


def _reply(
    status: int,
    body: AsyncIterator[bytes],
    content_type: str,
    headers: Mapping[str, str],
    rid: str | None,
) -> UpstreamReply:
    out = [("content-type", content_type), ("request-id", rid or request_id())]
    out.extend((k.lower(), v) for k, v in headers.items())
    return UpstreamReply(status=status, headers=out, body=body, close=_nothing)


def _json(
    status: int, body: bytes, headers: Mapping[str, str] | None = None, rid: str | None = None
) -> UpstreamReply:
    return _reply(status, _once(body), "application/json", headers or {}, rid)
