"""The prompt-cache model bills a request the way the Messages API does: reads only of prefixes
written before and still alive, writes split by TTL, nothing below the model's minimum, the
20-block lookback, at most four breakpoints, and invalidation from the first changed block on."""

from __future__ import annotations

import pytest

from quarterdeck.kit.clock import FakeClock
from quarterdeck.kit.prompt_cache import (
    TURN_TOKENS,
    CacheRequestError,
    PromptCache,
    estimate_tokens,
    min_cacheable_tokens,
    prompt_tokens,
)

MODEL = "claude-sonnet-4-5"  # minimum 1024 tokens
BIG = "s" * 8000  # 2000 tokens: past Sonnet's minimum on its own
EPH = {"type": "ephemeral"}
HOUR = {"type": "ephemeral", "ttl": "1h"}


def body(*messages: dict, system: str = BIG, control: dict | None = EPH, **extra) -> dict:
    sys_block: dict = {"type": "text", "text": system}
    if control is not None:
        sys_block["cache_control"] = control
    return {"model": MODEL, "system": [sys_block], "messages": list(messages), **extra}


def user(text: str, control: dict | None = None) -> dict:
    block: dict = {"type": "text", "text": text}
    if control is not None:
        block["cache_control"] = control
    return {"role": "user", "content": [block]}


def test_first_request_writes_and_the_second_reads_the_same_prefix() -> None:
    cache, clock = PromptCache(), FakeClock()
    request = body(user("hello"))
    first = cache.account(request, clock.now())
    assert first.cache_read_input_tokens == 0
    assert first.cache_creation_5m_tokens == 2000 and first.cache_creation_1h_tokens == 0
    assert first.input_tokens == estimate_tokens(len("hello")) + TURN_TOKENS
    assert first.total_input_tokens == prompt_tokens(request)
    second = cache.account(body(user("a different question")), clock.now())
    assert second.cache_read_input_tokens == 2000 and second.cache_creation_input_tokens == 0
    assert second.input_tokens == estimate_tokens(len("a different question")) + TURN_TOKENS


def test_no_breakpoints_no_caching() -> None:
    cache = PromptCache()
    for _ in range(2):
        usage = cache.account(body(user("hi"), control=None), 0.0)
        assert usage.cache_read_input_tokens == usage.cache_creation_input_tokens == 0
        assert usage.input_tokens == 2000 + 1 + TURN_TOKENS
    assert len(cache) == 0


def test_five_minute_entries_expire_and_reads_refresh_them() -> None:
    cache, clock = PromptCache(), FakeClock()
    cache.account(body(), clock.now())
    clock.advance(299)
    assert cache.account(body(), clock.now()).cache_read_input_tokens == 2000  # refreshed
    clock.advance(299)
    assert cache.account(body(), clock.now()).cache_read_input_tokens == 2000
    clock.advance(301)
    expired = cache.account(body(), clock.now())
    assert expired.cache_read_input_tokens == 0 and expired.cache_creation_5m_tokens == 2000


def test_one_hour_entries_outlive_five_minutes_and_bill_as_1h_writes() -> None:
    cache, clock = PromptCache(), FakeClock()
    first = cache.account(body(control=HOUR), clock.now())
    assert (first.cache_creation_1h_tokens, first.cache_creation_5m_tokens) == (2000, 0)
    clock.advance(30 * 60)
    assert cache.account(body(control=HOUR), clock.now()).cache_read_input_tokens == 2000
    clock.advance(3601)
    assert cache.account(body(control=HOUR), clock.now()).cache_read_input_tokens == 0


def test_prefixes_below_the_model_minimum_are_not_cached() -> None:
    cache = PromptCache()
    short = body(system="s" * 4000)  # 1000 tokens < 1024
    for _ in range(2):
        usage = cache.account(short, 0.0)
        assert usage.cache_creation_input_tokens == usage.cache_read_input_tokens == 0
        assert usage.input_tokens == 1000 + TURN_TOKENS
    # The same 2000-token prefix caches on Sonnet but not on Haiku 4.5 (minimum 4096).
    haiku = {**body(), "model": "claude-haiku-4-5-20251001"}
    assert cache.account(haiku, 0.0).cache_creation_input_tokens == 0
    assert min_cacheable_tokens("claude-haiku-4-5-20251001") == 4096
    assert min_cacheable_tokens("claude-opus-4-5") == 4096
    assert min_cacheable_tokens("claude-opus-4-1-20250805") == 1024
    assert min_cacheable_tokens("claude-3-5-haiku-latest") == 2048


def test_a_rolling_breakpoint_reads_the_last_turn_through_the_lookback() -> None:
    cache = PromptCache()
    turn1 = [user("task " * 100, EPH)]
    first = cache.account(body(*turn1, control=None), 0.0)
    # One write of the whole prompt; only the turn's framing after the last block is not cached.
    assert first.cache_creation_5m_tokens == first.total_input_tokens - TURN_TOKENS
    # Next turn: the breakpoint moved to the newest block; the old one is within 20 blocks.
    reply = {"role": "assistant", "content": [{"type": "text", "text": "ok " * 50}]}
    turn2 = [user("task " * 100), reply, user("more " * 30, EPH)]
    second = cache.account(body(*turn2, control=None), 0.0)
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.cache_creation_5m_tokens == (second.total_input_tokens - first.total_input_tokens)
    assert second.input_tokens == TURN_TOKENS


def test_lookback_stops_after_20_blocks() -> None:
    cache = PromptCache()
    head = user("task " * 100, EPH)
    cache.account(body(head, control=None), 0.0)
    many = [{"type": "text", "text": f"block {i}"} for i in range(21)]
    many[-1]["cache_control"] = EPH
    plain_head = user("task " * 100)
    far = body(plain_head, {"role": "assistant", "content": many}, control=None)
    assert cache.account(far, 0.0).cache_read_input_tokens == 0
    cache.clear()
    cache.account(body(head, control=None), 0.0)
    near = body(plain_head, {"role": "assistant", "content": many[1:]}, control=None)
    assert cache.account(near, 0.0).cache_read_input_tokens > 0  # 20 blocks back: found


def test_changing_an_earlier_block_invalidates_everything_after_it() -> None:
    cache = PromptCache()
    tools = [{"name": "read_file", "input_schema": {"type": "object"}, "cache_control": EPH}]
    conversation = [user("q " * 3000, EPH)]
    cache.account(body(*conversation, tools=tools), 0.0)
    again = cache.account(body(*conversation, tools=tools), 0.0)
    assert again.cache_creation_input_tokens == 0 and again.input_tokens == TURN_TOKENS
    # A changed system prompt: the tools entry (below the minimum) is all that could match.
    changed = cache.account(body(*conversation, system=BIG + "!", tools=tools), 0.0)
    assert changed.cache_read_input_tokens == 0
    # Changed thinking keeps the tools+system entry but not the messages'.
    thinking = {"type": "enabled", "budget_tokens": 2048}
    think = cache.account(body(*conversation, tools=tools, thinking=thinking), 0.0)
    system_prefix = think.cache_read_input_tokens
    assert 2000 <= system_prefix < think.total_input_tokens
    assert think.cache_creation_5m_tokens == think.total_input_tokens - system_prefix - TURN_TOKENS


def test_at_most_four_breakpoints_and_valid_controls() -> None:
    cache = PromptCache()
    five = [user(f"m{i} " * 10, EPH) for i in range(4)]
    with pytest.raises(CacheRequestError, match="A maximum of 4 blocks with cache_control"):
        cache.account(body(*five), 0.0)
    with pytest.raises(CacheRequestError, match="ttl"):
        cache.account(body(control={"type": "ephemeral", "ttl": "2h"}), 0.0)
    with pytest.raises(CacheRequestError, match="must not come after"):
        cache.account(body(user("x", HOUR)), 0.0)  # 5m on system, then 1h
    assert len(cache) == 0


def test_automatic_caching_puts_the_breakpoint_on_the_last_block() -> None:
    cache = PromptCache()
    request = body(user("question " * 10), control=None, cache_control=EPH)
    cached = prompt_tokens(request) - TURN_TOKENS
    assert cache.account(request, 0.0).cache_creation_5m_tokens == cached
    assert cache.account(request, 0.0).cache_read_input_tokens == cached
