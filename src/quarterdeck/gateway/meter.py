"""What a relayed Messages API response used: tokens by pricing class, tool calls, errors.

The relay forwards upstream bytes untouched and tees every chunk into :class:`StreamMeter`, so
the meter sits on the hot path of every streamed byte. It is therefore built to do as little as
possible per chunk: it looks for event boundaries with ``bytes`` methods (C loops, no per-byte
Python), keeps only the unterminated tail, and JSON-parses only the events that carry usage or
tool calls (``message_start``, ``message_delta``, ``content_block_start``/``stop`` of a
``tool_use`` block, ``error``). Text deltas are only measured, with a slice of the raw bytes when
they hold no escapes (the usual case), so counting them costs next to nothing.

Metering follows Anthropic's stream (research A2): input and cache counts arrive on
``message_start`` (so an aborted stream can still be billed for them); every ``message_delta``
carries *cumulative* usage, so its non-null fields overwrite, never add (LiteLLM's streamed cost
was ~7x over from adding them). The meter never raises: a malformed event is skipped, because a
metering bug must not break a client's stream. ``text_chars`` is what a floor estimate of output
is made from when the stream ends early (~4 characters per token, as Anthropic's gateway does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from quarterdeck.providers.types import Usage

log = structlog.get_logger(__name__)

MAX_EVENT_BYTES = 16 * 1024 * 1024
"""An SSE event longer than this is dropped unparsed, so a stream without event boundaries
cannot grow the meter's buffer without bound."""

_USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
_CACHE_SPLIT = (
    ("ephemeral_5m_input_tokens", "cache_creation_5m_tokens"),
    ("ephemeral_1h_input_tokens", "cache_creation_1h_tokens"),
)
_DELTA_HEAD = b"event: content_block_delta\ndata: "
_DELTA_LEN = len(_DELTA_HEAD)
_DELTA_FIELDS = {
    "text_delta": "text",
    "thinking_delta": "thinking",
    "input_json_delta": "partial_json",
}
_PARSE_ERRORS = (ValueError, TypeError, KeyError, AttributeError, IndexError)


@dataclass(slots=True)
class ToolUse:
    """A complete ``tool_use`` block of a response, its input parsed.

    An input the upstream streamed as invalid JSON is kept as ``{"_raw": "<text>"}`` so the
    audit trail still shows what the model asked for.
    """

    id: str
    name: str
    input: dict[str, Any]


@dataclass(slots=True)
class Metered:
    """What one response used, as far as the meter saw it.

    ``finished`` means the usage is the upstream's final word (``message_stop`` on a stream, a
    whole message body otherwise); when False the output count may be short and the price of
    the call is an estimate.
    """

    usage: Usage = field(default_factory=Usage)
    web_search_requests: int = 0
    model: str | None = None
    message_id: str | None = None
    stop_reason: str | None = None
    tool_uses: list[ToolUse] = field(default_factory=list)
    error_type: str | None = None
    started: bool = False
    finished: bool = False
    text_chars: int = 0


def _count(value: object) -> int | None:
    """A token count from JSON, or None for null, absent or nonsense (never trusted blindly)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def apply_usage(metered: Metered, usage: object) -> None:
    """Overwrite ``metered``'s counts with every non-null count in ``usage``.

    Overwrite, not add: ``message_delta`` usage is cumulative (and ``message_start`` is the
    first value), so the last value seen of each field is the answer.
    """
    if not isinstance(usage, dict):
        return
    u = metered.usage
    for name in _USAGE_FIELDS:
        value = _count(usage.get(name))
        if value is not None:
            setattr(u, name, value)
    split = usage.get("cache_creation")
    if isinstance(split, dict):
        for source, target in _CACHE_SPLIT:
            value = _count(split.get(source))
            if value is not None:
                setattr(u, target, value)
    server = usage.get("server_tool_use")
    if isinstance(server, dict):
        value = _count(server.get("web_search_requests"))
        if value is not None:
            metered.web_search_requests = value


class StreamMeter:
    """An incremental parser of a Messages API SSE stream, fed raw bytes split anywhere.

    Events are split on blank lines (``\\n\\n``; ``\\r\\n`` and ``\\r`` line ends are normalised
    per chunk, including a ``\\r`` | ``\\n`` pair split across two chunks), so a chunk may end
    mid-line or mid-UTF-8 character: only complete events are ever decoded.
    """

    __slots__ = ("_cr", "_metered", "_pending", "_pending_size", "_skip", "_tail_nl", "_tools")

    def __init__(self) -> None:
        self._metered = Metered()
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._tail_nl = False
        self._cr = False
        self._skip = False
        # index -> (id, name, input at block start, partial_json pieces)
        self._tools: dict[int, tuple[str, str, dict[str, Any], list[str]]] = {}

    def feed(self, chunk: bytes) -> None:
        """Consume upstream bytes. Never raises."""
        if not chunk:
            return
        if self._cr or b"\r" in chunk:
            if self._cr and chunk[:1] == b"\n":
                chunk = chunk[1:]
            self._cr = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if not chunk:
                return
        if not self._pending and not self._skip and chunk.endswith(b"\n\n"):
            # The usual chunk: whole events and nothing pending from the last one.
            for event in chunk.split(b"\n\n"):
                if event:
                    self._event(event)
            self._tail_nl = True
            return
        if b"\n\n" in chunk or (self._tail_nl and chunk[:1] == b"\n"):
            data = b"".join(self._pending) + chunk if self._pending else chunk
            events = data.split(b"\n\n")
            tail = events.pop()
            self._pending = [tail] if tail else []
            self._pending_size = len(tail)
            for event in events:
                if self._skip:
                    self._skip = False
                    continue
                if event:
                    self._event(event)
        elif not self._skip:  # (the rest of an oversized event is not kept)
            self._pending.append(chunk)
            self._pending_size += len(chunk)
        self._tail_nl = chunk.endswith(b"\n")
        if self._pending_size > MAX_EVENT_BYTES:
            log.warning("gateway.meter_event_too_long", bytes=self._pending_size)
            self._pending = []
            self._pending_size = 0
            self._skip = True  # the rest of this event, up to its blank line, is not an event

    def result(self) -> Metered:
        """What was metered so far (the stream may still be going, or have been cut)."""
        return self._metered

    def _event(self, block: bytes) -> None:
        if block.startswith(_DELTA_HEAD) and not self._tools:
            # The hot path, a text delta while no tool block is open: only measure it. orjson
            # (~0.6 us) beats finding the string's bounds with bytes methods or a regex.
            try:
                self._metered.text_chars += _parsed_delta_chars(orjson.loads(block[_DELTA_LEN:]))
                return
            except _PARSE_ERRORS:
                pass  # (a multi-line data field, or garbage: the general path decides)
        name: bytes | None = None
        data: bytes | None = None
        for line in block.split(b"\n"):
            if line.startswith(b"data:"):
                value = line[6:] if line[5:6] == b" " else line[5:]
                data = value if data is None else data + b"\n" + value
            elif line.startswith(b"event:"):
                name = line[6:].strip()
            # comments (":"), "id:", "retry:" and unknown fields carry nothing to meter
        if data is None:
            return
        try:
            self._dispatch(name, data)
        except _PARSE_ERRORS:
            log.debug("gateway.meter_bad_event", sse_event=name, size=len(data))

    def _dispatch(self, name: bytes | None, data: bytes) -> None:
        parsed: Any = None
        if not name or name == b"message":  # a data-only stream: the type is in the JSON
            parsed = orjson.loads(data)
            name = str(parsed.get("type", "")).encode()
        if name == b"content_block_delta":
            if self._tools:
                self._tool_delta(parsed if parsed is not None else orjson.loads(data))
                return
            event = parsed if parsed is not None else orjson.loads(data)
            self._metered.text_chars += _parsed_delta_chars(event)
        elif name == b"message_start":
            self._start(parsed if parsed is not None else orjson.loads(data))
        elif name == b"message_delta":
            event = parsed if parsed is not None else orjson.loads(data)
            apply_usage(self._metered, event.get("usage"))
            delta = event.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                self._metered.stop_reason = delta["stop_reason"]
        elif name == b"message_stop":
            self._metered.finished = True
        elif name == b"content_block_start":
            if b'"tool_use"' in data:
                self._block_start(parsed if parsed is not None else orjson.loads(data))
        elif name == b"content_block_stop":
            if self._tools:
                self._block_stop(parsed if parsed is not None else orjson.loads(data))
        elif name == b"error":
            event = parsed if parsed is not None else orjson.loads(data)
            error = event.get("error")
            kind = error.get("type") if isinstance(error, dict) else None
            self._metered.error_type = kind if isinstance(kind, str) else "error"
        # ping and event types added after this was written are relayed, not metered

    def _start(self, event: dict[str, Any]) -> None:
        message = event["message"]
        m = self._metered
        if isinstance(message.get("model"), str):
            m.model = message["model"]
        if isinstance(message.get("id"), str):
            m.message_id = message["id"]
        apply_usage(m, message.get("usage"))
        m.started = True

    def _block_start(self, event: dict[str, Any]) -> None:
        block = event["content_block"]
        if block.get("type") != "tool_use":
            return
        start_input = block.get("input")
        self._tools[int(event["index"])] = (
            str(block.get("id", "")),
            str(block.get("name", "")),
            start_input if isinstance(start_input, dict) else {},
            [],
        )

    def _tool_delta(self, event: dict[str, Any]) -> None:
        delta = event["delta"]
        self._metered.text_chars += _parsed_delta_chars(event)
        tool = self._tools.get(event["index"])
        if tool is not None and delta.get("type") == "input_json_delta":
            piece = delta.get("partial_json")
            if isinstance(piece, str):
                tool[3].append(piece)

    def _block_stop(self, event: dict[str, Any]) -> None:
        tool = self._tools.pop(event["index"], None)
        if tool is None:
            return
        tool_id, name, start_input, pieces = tool
        text = "".join(pieces)
        tool_input: dict[str, Any] = start_input
        if text.strip():
            try:
                loaded = orjson.loads(text)
                tool_input = loaded if isinstance(loaded, dict) else {"_raw": text}
            except orjson.JSONDecodeError:
                tool_input = {"_raw": text}
        self._metered.tool_uses.append(ToolUse(id=tool_id, name=name, input=tool_input))


def _parsed_delta_chars(event: dict[str, Any]) -> int:
    """Characters of a delta's text, thinking or partial JSON (0 for signatures, citations)."""
    delta = event["delta"]
    key = _DELTA_FIELDS.get(delta.get("type"))
    value = delta.get(key) if key is not None else None
    return len(value) if isinstance(value, str) else 0


def meter_json(body: bytes) -> Metered:
    """What a non-streaming response used: its ``usage``, tool calls and text. Never raises.

    An error body (``{"type": "error", ...}``) gives ``error_type`` and no usage.
    """
    metered = Metered()
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return metered
    if not isinstance(message, dict):
        return metered
    try:
        if message.get("type") == "error":
            error = message.get("error")
            kind = error.get("type") if isinstance(error, dict) else None
            metered.error_type = kind if isinstance(kind, str) else "error"
            return metered
        if isinstance(message.get("model"), str):
            metered.model = message["model"]
        if isinstance(message.get("id"), str):
            metered.message_id = message["id"]
        if isinstance(message.get("stop_reason"), str):
            metered.stop_reason = message["stop_reason"]
        for block in message.get("content") or ():
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "tool_use":
                tool_input = block.get("input")
                metered.tool_uses.append(
                    ToolUse(
                        id=str(block.get("id", "")),
                        name=str(block.get("name", "")),
                        input=tool_input if isinstance(tool_input, dict) else {},
                    )
                )
            elif kind in ("text", "thinking"):
                value = block.get(kind)
                metered.text_chars += len(value) if isinstance(value, str) else 0
        if isinstance(message.get("usage"), dict):
            apply_usage(metered, message["usage"])
            metered.started = metered.finished = True
    except _PARSE_ERRORS:
        log.debug("gateway.meter_bad_body", size=len(body))
    return metered
