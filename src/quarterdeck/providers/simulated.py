"""A provider that plays deterministic, scripted coding agents without calling any model.

Demos, load tests and chaos tests need traffic that looks like a real coding session (tool calls,
growing context, prompt caching, latency, failures) but costs nothing and is reproducible. Every
response is a pure function of ``(run_id, turn)``: a run resumed after a crash replays the same
content and token counts, so billed totals match an uninterrupted run exactly. Only error
injection depends on instance state (a per-turn call counter), so that a retried turn can succeed.

Turns are 0-based: turn 0 is the first model call of a run, matching the number of assistant
messages already in the conversation.

Prompt caching is billed honestly: only a request that asks for it (``ModelRequest.cache_ttl``,
which the Anthropic provider turns into breakpoints) reads or writes the cache, by the same model
as the Messages API stand-in (:mod:`quarterdeck.kit.prompt_cache`: minimum cacheable length per
model, prefix matching, lookback), applied to the run's synthetic conversation laid out as the
Anthropic provider would send it. The cache is assumed warm from the previous turn (the API's
cache is shared across a deployment's workers and lives at least five minutes), which keeps usage
a pure function of ``(run_id, turn, cache_ttl)``, so a resumed run still bills like one that was
never interrupted.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import random
import re
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from quarterdeck.exceptions import ProviderError
from quarterdeck.kit.latency import LatencyProfile
from quarterdeck.kit.prompt_cache import CacheTTL, PromptBlock, PromptCache
from quarterdeck.providers.types import (
    ContentBlock,
    Message,
    ModelRequest,
    ModelResponse,
    StopReason,
    StreamEvent,
    TextBlock,
    ToolUseBlock,
    Usage,
)

DEFAULT_ERROR_MIX: dict[str, float] = {"429": 0.4, "529": 0.3, "500": 0.2, "timeout": 0.1}
_ERRORS: dict[str, tuple[int | None, str, str]] = {
    "429": (429, "rate_limit_error", "rate limit"),
    "529": (529, "overloaded_error", "overload"),
    "500": (500, "api_error", "internal error"),
    "timeout": (None, "timeout", "timeout"),
}
_TIMEOUT_DELAY_S = 0.05  # a real timeout takes timeout_s; chaos tests cannot wait that long
_MAX_COUNTER_KEYS = 10_000
_MIN_TURNS, _MAX_TURNS = 2, 6
_STOPWORDS = frozenset(
    "the a an and or to in of for on with from into that this it is are be fix add make "
    "please should when then than so our your their update change implement support".split()
)
_WORD_RE = re.compile(r"[a-z_][a-z0-9_]{3,}")
_PATH_RE = re.compile(r"[\w./-]+/\w+\.py\b")
# (what the agent "found", old text, new text) for plausible edit_file calls.
_FIXES = (
    ("an empty input returns None instead of an empty list", "return None", "return []"),
    ("the timeout argument is accepted but ignored", "timeout=30", "timeout=timeout"),
    (
        "errors are swallowed by a bare except",
        "except Exception:\n        pass",
        "except Exception:\n        logger.exception('failed')\n        raise",
    ),
    ("an off-by-one error skips the last element", "range(len(items) - 1)", "range(len(items))"),
)
_EXPLORE = (
    "Let me look at the project layout to find where {topic} is handled.",
    "I'll start by getting an overview of the repository and searching for {topic}.",
)
_READ = (
    "The {topic} logic appears to live in `{module}`. Reading it before changing anything.",
    "Let me read `{module}` and its tests to understand the current behaviour.",
)
_EDIT = (
    "Found it: {cause}. Applying a minimal fix in `{module}`.",
    "The problem is that {cause}. I'll fix that and add a regression test.",
)
_TEST = (
    "Running the test suite to confirm the change.",
    "Let me run the tests to make sure nothing else broke.",
)
_FIX = (
    "Found it: {cause}. Fixing it in `{module}` and running the tests.",
    "The bug is that {cause}. I'll patch `{module}` and check the test suite.",
)


def _digest(*parts: object) -> int:
    """A stable 256-bit hash; Python's ``hash()`` is salted per process, so it cannot be used."""
    data = "\x1f".join(map(str, parts)).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=32).digest(), "big")


class _Bits:
    """Draws small integers from a hash. Far cheaper than seeding ``random.Random`` per call."""

    __slots__ = ("_h",)

    def __init__(self, h: int) -> None:
        self._h = h

    def pick(self, n: int) -> int:
        if self._h < n * 1024:  # running low on entropy: stretch deterministically
            self._h = _digest(self._h)
        self._h, r = divmod(self._h, n)
        return r


def script_length(run_id: str, turns: int = 0) -> int:
    """How many model calls the scripted run ``run_id`` makes before it ends with ``end_turn``."""
    return _script_length(_digest("run", run_id), turns)


def _script_length(run_h: int, turns: int) -> int:
    if turns > 0:
        return turns
    return _MIN_TURNS + (run_h >> 128) % (_MAX_TURNS - _MIN_TURNS + 1)


def _context_tokens(run_h: int, turn: int) -> tuple[int, int]:
    """Prompt size of ``turn`` and of the turn before; the context only ever grows."""
    ctx = prev = 1500 + run_h % 1501  # system prompt + tool schemas + task
    step = run_h >> 16
    for k in range(1, turn + 1):
        prev = ctx
        ctx += 300 + ((step ^ (k * 0x9E3779B1)) % 1701)  # last reply + tool results
    return ctx, prev


def _usage(
    run_h: int, turn: int, bits: _Bits, final: bool, model: str, ttl: CacheTTL | None
) -> Usage:
    output = 200 + bits.pick(601) if final else 50 + bits.pick(450)
    if ttl is None:
        return Usage(input_tokens=_context_tokens(run_h, turn)[0], output_tokens=output)
    cache = PromptCache()  # warm from the previous turn: it wrote what this one may read
    if turn > 0:
        cache.account_blocks(model, _prompt_blocks(run_h, turn - 1, ttl), 0.0, head=2)
    cached = cache.account_blocks(model, _prompt_blocks(run_h, turn, ttl), 0.0, head=2)
    return Usage(
        input_tokens=cached.input_tokens,
        output_tokens=output,
        cache_creation_input_tokens=cached.cache_creation_input_tokens,
        cache_creation_5m_tokens=cached.cache_creation_5m_tokens,
        cache_creation_1h_tokens=cached.cache_creation_1h_tokens,
        cache_read_input_tokens=cached.cache_read_input_tokens,
    )


def _prompt_blocks(run_h: int, turn: int, ttl: CacheTTL) -> list[PromptBlock]:
    """The synthetic prompt of ``turn`` as blocks, with the Anthropic provider's breakpoints: the
    tool definitions, the system prompt, then the task and one (reply, tool results) pair per
    earlier turn; the newest two user messages carry the rolling breakpoints."""
    base = _context_tokens(run_h, 0)[0]
    tools, system = base * 2 // 5, base // 5
    blocks = [
        PromptBlock(f"{run_h:x}/tools", tools, ttl),
        PromptBlock(f"{run_h:x}/system", system, ttl),
        PromptBlock(f"{run_h:x}/task", base - tools - system),
    ]
    seed = run_h >> 16
    for k in range(1, turn + 1):
        step = 300 + ((seed ^ (k * 0x9E3779B1)) % 1701)  # as _context_tokens grows it
        blocks.append(PromptBlock(f"{run_h:x}/reply/{k}", step // 3))
        blocks.append(PromptBlock(f"{run_h:x}/results/{k}", step - step // 3))
    for back in (1, 3):  # the newest user message, and the one before it
        if back <= len(blocks) - 2:
            block = blocks[-back]
            blocks[-back] = PromptBlock(block.key, block.tokens, ttl)
    return blocks


@functools.lru_cache(maxsize=4096)
def _topic(prompt: str) -> tuple[str, str, str]:
    """(topic, module path, test path) guessed from the prompt so the session looks on-task.

    Cached: every turn of a run asks again with the same prompt, and this is the costliest step.
    """
    head = prompt[:400]
    path = _PATH_RE.search(head)
    if path:
        stem = path.group(0).rsplit("/", 1)[-1][:-3]
        return stem, path.group(0), f"tests/test_{stem}.py"
    words = [w for w in _WORD_RE.findall(head.lower()) if w not in _STOPWORDS]
    topic = max(words, key=len) if words else "app"
    return topic, f"src/{topic}.py", f"tests/test_{topic}.py"


def _tool_turn(
    turn: int, n_tools: int, bits: _Bits, prompt: str, fix: int, tool_id: str
) -> list[ContentBlock]:
    """One ``tool_use`` turn: explore, then read, then edit, then run the tests."""
    topic, module, test = _topic(prompt)
    cause, old, new = _FIXES[fix]
    fmt = {"topic": topic, "module": module, "cause": cause, "test": test}
    edit = ("edit_file", {"path": module, "old": old, "new": new})
    pytest = ("run_command", {"command": "pytest -q"})
    calls: list[tuple[str, dict[str, Any]]]
    if n_tools == 1 or (turn >= n_tools - 1 and n_tools < 4):  # short script: fix and verify
        text, calls = _FIX[bits.pick(2)], [edit, pytest]
    elif turn == 0:
        text, calls = _EXPLORE[bits.pick(2)], [("list_files", {"path": "."})]
        if bits.pick(2):
            calls.append(("search", {"pattern": topic, "path": "."}))
    elif turn >= n_tools - 1:
        text, calls = _TEST[bits.pick(2)], [pytest]
    elif turn == 1:
        text, calls = _READ[bits.pick(2)], [("read_file", {"path": module})]
        if bits.pick(2):
            calls.append(("read_file", {"path": test}))
    elif turn == 2:
        text, calls = _EDIT[bits.pick(2)], [edit]
    else:  # long scripts: one edit, then regression tests, so no edit is applied twice
        body = f"import {topic}\n\n\ndef test_{topic}_regression():\n    assert {topic}\n"
        text, calls = (
            "Adding a regression test in `{test}`.",
            [("write_file", {"path": test, "content": body})],
        )
    blocks: list[ContentBlock] = [TextBlock(text.format(**fmt))]
    for i, (name, args) in enumerate(calls):
        blocks.append(ToolUseBlock(id=f"{tool_id}{i:02d}", name=name, input=args))
    return blocks


def _final_text(prompt: str, bits: _Bits, fix: int) -> str:
    module = _topic(prompt)[1]
    task = " ".join(prompt[:200].split())[:80] or "the task"
    passed = 12 + bits.pick(200)
    return (
        f"Done: {task}\n\nThe root cause was that {_FIXES[fix][0]}. I fixed it in `{module}` "
        f"with a minimal change, and `pytest -q` now passes ({passed} passed)."
    )


class SimulatedProvider:
    """Scripted coding agents with realistic usage, latency and injected failures."""

    name = "simulated"

    def __init__(
        self,
        latency: LatencyProfile,
        error_rate: float = 0.0,
        turns: int = 0,
        error_mix: dict[str, float] | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError("error_rate must be between 0 and 1")
        if turns < 0:
            raise ValueError("turns must not be negative")
        mix = dict(DEFAULT_ERROR_MIX if error_mix is None else error_mix)
        unknown = set(mix) - set(_ERRORS)
        if unknown:
            raise ValueError(
                f"unknown error kinds {sorted(unknown)}; use {list(DEFAULT_ERROR_MIX)}"
            )
        if any(w < 0 for w in mix.values()) or (error_rate > 0 and sum(mix.values()) <= 0):
            raise ValueError("error_mix weights must be non-negative and not all zero")
        self.latency = latency
        self.error_rate = error_rate
        self.turns = turns
        self.timeout_s = timeout_s
        total = sum(mix.values()) or 1.0
        self._mix = [(kind, w / total) for kind, w in mix.items() if w > 0]
        # Calls seen per (run_id, turn), so a retry draws a fresh error decision. Bounded LRU.
        self._calls: OrderedDict[tuple[str, int], int] = OrderedDict()

    async def complete(self, request: ModelRequest) -> ModelResponse:
        result, delay = self._prepare(request)
        if delay > 0:
            await asyncio.sleep(delay)
        if isinstance(result, ProviderError):
            raise result
        return result

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        response = await self.complete(request)
        response.ttft_s = response.latency_s
        text = response.message.text
        cut = max(1, len(text) // 3)
        for start in range(0, len(text), cut):
            yield StreamEvent(type="text", text=text[start : start + cut])
        yield StreamEvent(type="message", response=response)

    async def aclose(self) -> None:
        self._calls.clear()

    def _prepare(self, request: ModelRequest) -> tuple[ModelResponse | ProviderError, float]:
        """The response or injected error, and how long to sleep first. Synchronous and cheap."""
        prompt = next((m.text for m in request.messages if m.role == "user"), "")
        meta = request.metadata
        run_id = meta.get("run_id") or f"prompt:{_digest(prompt) >> 192:016x}"
        turn = _turn(meta.get("turn"), request.messages)
        h = _digest(run_id, turn)
        hexid = f"{h:064x}"
        request_id = f"req_sim_{hexid[32:56]}"
        if self.error_rate > 0:
            error = self._inject(run_id, turn, meta.get("attempt", ""), request_id)
            if error is not None:
                return error
        run_h = _digest("run", run_id)
        n = _script_length(run_h, self.turns)
        final = turn >= n - 1
        bits = _Bits(h)
        fix = run_h % len(_FIXES)  # one bug per run, so the edits and the summary agree
        if final:
            content: list[ContentBlock] = [TextBlock(_final_text(prompt, bits, fix))]
        else:
            content = _tool_turn(turn, n - 1, bits, prompt, fix, f"toolu_sim_{hexid[:22]}")
        stop: StopReason = "end_turn" if final else "tool_use"
        usage = _usage(run_h, turn, bits, final, request.model, request.cache_ttl)
        delay = self._delay(h)
        model = request.model
        if not model.startswith("simulated-"):
            model = f"simulated-{model or 'default'}"
        response = ModelResponse(
            id=f"msg_sim_{hexid[:24]}",
            model=model,
            message=Message(role="assistant", content=content),
            stop_reason=stop,
            usage=usage,
            request_id=request_id,
            latency_s=delay,
        )
        return response, delay

    def _delay(self, h: int) -> float:
        profile = self.latency
        if profile.kind == "fixed" or profile.median == 0:
            return max(0.0, profile.median)  # no RNG needed: keep the zero-latency path cheap
        return profile.sample(random.Random(h ^ 0x5EED))

    def _inject(
        self, run_id: str, turn: int, attempt: str, request_id: str
    ) -> tuple[ProviderError, float] | None:
        """Draw this call's fate from (run, turn, call number, attempt): reproducible, yet a
        retry of the same turn gets a fresh draw instead of failing forever."""
        key = (run_id, turn)
        calls = self._calls.pop(key, 0)
        self._calls[key] = calls + 1
        if len(self._calls) > _MAX_COUNTER_KEYS:
            self._calls.popitem(last=False)
        draw = _Bits(_digest("err", run_id, turn, calls, attempt))
        if draw.pick(1_000_000) >= self.error_rate * 1_000_000:
            return None
        point = draw.pick(1_000_000) / 1_000_000
        kind = self._mix[-1][0]
        for candidate, weight in self._mix:
            if point < weight:
                kind = candidate
                break
            point -= weight
        status, error_type, label = _ERRORS[kind]
        retry_after = float(1 + draw.pick(5)) if kind == "429" else None
        detail = f"simulated {label} (run {run_id}, turn {turn}, call {calls + 1})"
        error = ProviderError(
            detail,
            status_code=status,
            error_type=error_type,
            retry_after=retry_after,
            request_id=request_id,
        )
        return error, min(self.timeout_s, _TIMEOUT_DELAY_S) if kind == "timeout" else 0.0


def _turn(raw: str | None, messages: list[Message]) -> int:
    if raw is not None:
        try:
            return max(0, int(raw))
        except ValueError:
            pass
    return sum(1 for m in messages if m.role == "assistant")
