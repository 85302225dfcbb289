"""A model of the Messages API's prompt cache: which input tokens a request reads, writes, or pays
in full, given the ``cache_control`` breakpoints it carries and what earlier requests wrote.

Why it exists: the simulated provider and the Messages API stand-in must bill caching the way the
real API does, or demos and tests show savings a real run never gets (a run without breakpoints
reads nothing). One pure model, used by both, keeps them honest and in agreement. It takes the
request body and ``now`` and returns token counts; the only state is :class:`PromptCache`, a
mapping of prefix hash to expiry, which the caller keeps per API key (the real cache is not shared
between organisations).

The rules modelled, from Anthropic's prompt-caching guide
(https://platform.claude.com/docs/en/build-with-claude/prompt-caching):

* The prompt is one sequence of blocks in the order ``tools``, ``system``, ``messages``; a
  ``cache_control`` breakpoint caches the prefix up to and including its block. A top-level
  ``cache_control`` (automatic caching) puts one on the last block.
* A read is the longest previously written prefix that matches exactly. At each breakpoint the API
  also checks the block boundaries up to :data:`LOOKBACK_BLOCKS` blocks before it for an earlier
  entry, so a breakpoint that moves forward each turn still reads the last turn's prefix.
* Writes are billed for the part of each cached prefix beyond what was read, split by TTL
  (``"5m"`` default, ``"1h"``); an entry lives for its TTL from its last use (a read refreshes it).
* At most :data:`MAX_BREAKPOINTS` breakpoints; more is a 400 ``invalid_request_error``, as are an
  unknown ``type``/``ttl`` and a 1h breakpoint after a 5m one.
* A prefix shorter than the model's minimum cacheable length is not cached (no error):
  :func:`min_cacheable_tokens`. The table as documented in the guide's "Cache limitations"
  (quoted in anthropics/anthropic-sdk-python#1194, early 2026): 4096 tokens for Opus 4.6, Opus
  4.5 and Haiku 4.5; 1024 for Sonnet 4.6/4.5, Opus 4.1/4, Sonnet 4 and 3.7; 2048 for Haiku 3.5/3.
  Later models are reported lower (Opus 4.8 1024 per its release notes; Opus 4.7 2048 or 4096 by
  different secondary sources), so unknown and newer Opus models use the conservative 4096.
* Changing the tool definitions invalidates everything; changing ``thinking`` or ``tool_choice``
  invalidates the message part only (both are mixed into the hash where the messages begin).

Token counts are an estimate (:func:`estimate_tokens`, four characters a token, plus
:data:`TURN_TOKENS` per request), deterministic, so
the same body always counts the same. It is not Claude's tokenizer and need not be: what matters is
that reads, writes and plain input add up to the whole prompt and follow the rules above.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

CacheTTL = Literal["5m", "1h"]
TTL_SECONDS: dict[str, float] = {"5m": 300.0, "1h": 3600.0}
MAX_BREAKPOINTS = 4
LOOKBACK_BLOCKS = 20
CHARS_PER_TOKEN = 4
TURN_TOKENS = 3
"""Tokens every request pays uncached after its last block (the API's framing of the turn the
model is to write): why a fully cached request still reports a few ``input_tokens``."""
MAX_ENTRIES = 100_000
"""Entries kept per cache; the oldest expiries go first beyond this (a stand-in under load)."""

_MINIMUMS: tuple[tuple[re.Pattern[str], int], ...] = (
    (re.compile(r"haiku-4-5|haiku-4\.5"), 4096),
    (re.compile(r"(?:3-5|3)-haiku|haiku-3"), 2048),
    (re.compile(r"opus-4-(?:5|6|7)"), 4096),
    (re.compile(r"opus-4-8"), 1024),
    (re.compile(r"opus-4(?:-1)?(?:$|-\d{8})|sonnet|3-7-sonnet"), 1024),
)


class CacheRequestError(ValueError):
    """The breakpoints break an API rule; the API answers 400 ``invalid_request_error``."""


def estimate_tokens(chars: int) -> int:
    """Tokens for ``chars`` characters of prompt: the one estimate every stand-in uses."""
    return -(-chars // CHARS_PER_TOKEN)


def min_cacheable_tokens(model: str) -> int:
    """The shortest prefix ``model`` caches (see the module docstring for the table)."""
    name = model.lower().removeprefix("simulated-")
    for pattern, minimum in _MINIMUMS:
        if pattern.search(name):
            return minimum
    return 4096


@dataclass(frozen=True)
class CacheUsage:
    """Input tokens by how they are billed, as the API's usage reports them."""

    input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_5m_tokens: int = 0
    cache_creation_1h_tokens: int = 0

    @property
    def cache_creation_input_tokens(self) -> int:
        return self.cache_creation_5m_tokens + self.cache_creation_1h_tokens

    @property
    def total_input_tokens(self) -> int:
        return self.input_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens


@dataclass(frozen=True)
class PromptBlock:
    """One block of a prompt: what identifies its content, its tokens, and its breakpoint."""

    key: str
    """Canonical text of what the model sees (``cache_control`` excluded)."""
    tokens: int
    ttl: CacheTTL | None = None
    """The TTL of a ``cache_control`` breakpoint on this block; None: no breakpoint."""


_Block = PromptBlock
SWEEP_INTERVAL_S = 60.0


@dataclass
class _Entry:
    expires: float
    ttl: CacheTTL


class PromptCache:
    """The cache of one API key: prefix hash -> expiry. Not thread-safe; lock around it."""

    def __init__(self) -> None:
        self._entries: dict[bytes, _Entry] = {}
        self._next_sweep = float("-inf")

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def account(self, body: Mapping[str, Any], now: float) -> CacheUsage:
        """Bill one request at time ``now``, and record what it writes and refreshes.

        Raises :class:`CacheRequestError` when its breakpoints break the API's rules.
        """
        blocks = list(_blocks(body))
        if body.get("cache_control") is not None and blocks and blocks[-1].ttl is None:
            last = blocks[-1]  # automatic caching: a breakpoint on the last block
            blocks[-1] = PromptBlock(last.key, last.tokens, _ttl(body["cache_control"]))
        mode = json.dumps(
            [body.get("thinking"), body.get("tool_choice")], sort_keys=True, default=str
        )
        return self.account_blocks(
            str(body.get("model", "")), blocks, now, head=_head_blocks(body), mode=mode
        )

    def account_blocks(
        self, model: str, blocks: list[PromptBlock], now: float, *, head: int = 0, mode: str = ""
    ) -> CacheUsage:
        """:meth:`account` for a prompt already cut into blocks (the simulated provider's
        synthetic conversations). ``head`` blocks (tools and system) come before ``mode`` (what
        invalidates only the messages) in the hash."""
        breakpoints = _breakpoints(blocks)
        if now >= self._next_sweep:
            self._expire(now)
            self._next_sweep = now + SWEEP_INTERVAL_S
        hashes, totals = _prefixes(model, mode, head, blocks)
        total = totals[-1] if totals else 0
        read_at = -1  # index of the last block of the longest prefix read
        for b in breakpoints:
            for j in range(b, max(-1, b - LOOKBACK_BLOCKS - 1), -1):
                if j > read_at and self._alive(hashes[j], now):
                    read_at = j
                    break
        read = totals[read_at] if read_at >= 0 else 0
        if read_at >= 0:
            entry = self._entries[hashes[read_at]]
            entry.expires = max(entry.expires, now + TTL_SECONDS[entry.ttl])
        minimum = min_cacheable_tokens(model)
        written = {"5m": 0, "1h": 0}
        cursor = read
        for b in breakpoints:
            ttl = blocks[b].ttl or "5m"
            if b <= read_at:
                found = self._entries.get(hashes[b]) if self._alive(hashes[b], now) else None
                if found is not None:  # also cached: a read refreshes it
                    found.expires = max(found.expires, now + TTL_SECONDS[found.ttl])
                continue
            if totals[b] < minimum:
                continue
            written[ttl] += totals[b] - cursor
            cursor = totals[b]
            old = self._entries.get(hashes[b])
            keep: CacheTTL = "1h" if (old is not None and old.ttl == "1h") else ttl
            self._entries[hashes[b]] = _Entry(now + TTL_SECONDS[keep], keep)
        if len(self._entries) > MAX_ENTRIES:
            for key, _ in sorted(self._entries.items(), key=lambda kv: kv[1].expires)[
                : len(self._entries) - MAX_ENTRIES
            ]:
                del self._entries[key]
        creation = written["5m"] + written["1h"]
        return CacheUsage(
            input_tokens=total - read - creation + TURN_TOKENS,
            cache_read_input_tokens=read,
            cache_creation_5m_tokens=written["5m"],
            cache_creation_1h_tokens=written["1h"],
        )

    def _alive(self, key: bytes, now: float) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry.expires > now

    def _expire(self, now: float) -> None:
        gone = [k for k, e in self._entries.items() if e.expires <= now]
        for key in gone:
            del self._entries[key]


def prompt_tokens(body: Mapping[str, Any]) -> int:
    """All input tokens of a request, cached or not, by :func:`estimate_tokens`."""
    return sum(b.tokens for b in _blocks(body)) + TURN_TOKENS


# --- flattening a request into blocks ----------------------------------------------------------
def _blocks(body: Mapping[str, Any]) -> Iterator[_Block]:
    for tool in _as_list(body.get("tools")):
        yield _block({"tool": tool}, tool)
    system = body.get("system")
    if isinstance(system, str):
        if system:
            yield _block({"system": {"type": "text", "text": system}}, None)
    else:
        for item in _as_list(system):
            yield _block({"system": item}, item)
    for message in _as_list(body.get("messages")):
        if not isinstance(message, Mapping):
            continue
        role = str(message.get("role", ""))
        content = message.get("content")
        if isinstance(content, str):
            yield _block({role: {"type": "text", "text": content}}, None)
            continue
        for item in _as_list(content):
            yield _block({role: item}, item)


def _block(keyed: dict[str, Any], raw: Any) -> _Block:
    control = raw.get("cache_control") if isinstance(raw, Mapping) else None
    ((where, value),) = keyed.items()
    if isinstance(value, Mapping):
        value = {k: v for k, v in value.items() if k != "cache_control"}
    key = json.dumps({where: value}, sort_keys=True, separators=(",", ":"), default=str)
    return _Block(key, estimate_tokens(_chars(value)), _ttl(control))


def _chars(value: Any) -> int:
    """The characters a block puts in front of the model: its text, or its JSON."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Mapping):
        kind = value.get("type")
        if kind == "text" and isinstance(value.get("text"), str):
            return len(value["text"])
        if kind == "thinking" and isinstance(value.get("thinking"), str):
            return len(value["thinking"])
        if kind == "tool_result":
            content = value.get("content")
            if isinstance(content, list):
                return sum(_chars(c) for c in content)
            return len(content) if isinstance(content, str) else 0
    return len(json.dumps(value, separators=(",", ":"), default=str))


def _ttl(control: Any) -> CacheTTL | None:
    if control is None:
        return None
    if not isinstance(control, Mapping) or control.get("type") != "ephemeral":
        raise CacheRequestError("cache_control.type: Input should be 'ephemeral'")
    ttl = control.get("ttl", "5m")
    if ttl == "5m":
        return "5m"
    if ttl == "1h":
        return "1h"
    raise CacheRequestError(f"cache_control.ttl: Input should be '5m' or '1h', got {ttl!r}")


def _breakpoints(blocks: list[_Block]) -> list[int]:
    points = [i for i, b in enumerate(blocks) if b.ttl is not None]
    if len(points) > MAX_BREAKPOINTS:
        raise CacheRequestError(
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {len(points)}."
        )
    seen_5m = False
    for i in points:
        if blocks[i].ttl == "5m":
            seen_5m = True
        elif seen_5m:
            raise CacheRequestError(
                "a ttl='1h' cache_control block must not come after a ttl='5m' "
                "cache_control block (longer TTLs first)"
            )
    return points


def _head_blocks(body: Mapping[str, Any]) -> int:
    system = body.get("system")
    n_system = (1 if system else 0) if isinstance(system, str) else len(_as_list(system))
    return len(_as_list(body.get("tools"))) + n_system


def _prefixes(
    model: str, mode: str, head: int, blocks: list[_Block]
) -> tuple[list[bytes], list[int]]:
    """Rolling hash and cumulative tokens after each block. The model seeds the hash; ``mode``
    (thinking, tool_choice) is mixed in where the messages start, so changing it keeps the tools
    and system entries but not the messages'."""
    h = hashlib.blake2b(model.encode(), digest_size=16).digest()
    hashes: list[bytes] = []
    totals: list[int] = []
    running = 0
    for i, block in enumerate(blocks):
        if i == head:
            h = hashlib.blake2b(h + mode.encode(), digest_size=16).digest()
        h = hashlib.blake2b(h + block.key.encode(), digest_size=16).digest()
        running += block.tokens
        hashes.append(h)
        totals.append(running)
    return hashes, totals


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def requested_ttl(body: Mapping[str, Any]) -> CacheTTL | None:
    """The longest TTL among a request's breakpoints, or None when it carries none: how a
    stand-in that cannot see the real prompt decides whether the client asked for caching."""
    found: CacheTTL | None = None
    try:
        for block in _blocks(body):
            if block.ttl == "1h":
                return "1h"
            found = found or block.ttl
        automatic = body.get("cache_control")
        return _ttl(automatic) if automatic is not None and found is None else found
    except CacheRequestError:
        return None
