"""Token limits that take real token counts: the estimate before a call, the API's counting rule
after it, and the settlement between the two, on the pure bucket with a fake clock."""

from __future__ import annotations

import pytest

from quarterdeck.exceptions import ProviderError
from quarterdeck.kit.clock import FakeClock
from quarterdeck.providers.types import (
    Message,
    ModelRequest,
    ModelResponse,
    TextBlock,
    ToolSpec,
    Usage,
)
from quarterdeck.resilience.calls import ResilientCaller
from quarterdeck.resilience.ratelimit import ProviderLimiter, TokenBucket
from quarterdeck.resilience.retry import RetryPolicy
from quarterdeck.resilience.tokens import (
    TokenCharge,
    after_call,
    before_call,
    cache_reads_count,
    estimate_input_tokens,
    settlement,
)

T0 = 1_700_000_000.0


def fake_sleep(clock: FakeClock):  # type: ignore[no-untyped-def]
    async def sleep(seconds: float) -> None:
        clock.advance(seconds)

    return sleep


def request(text: str = "x" * 400, max_tokens: int = 1000, tools: bool = False) -> ModelRequest:
    specs = (
        [ToolSpec("read_file", "Read a file", {"type": "object", "properties": {}})]
        if tools
        else []
    )
    return ModelRequest(
        model="claude-sonnet-4-5",
        messages=[Message(role="user", content=[TextBlock(text)])],
        system="sys" * 100,
        tools=specs,
        max_tokens=max_tokens,
    )


def test_the_input_estimate_is_a_quarter_of_the_characters_sent_tools_included() -> None:
    plain = estimate_input_tokens(request())
    assert plain == estimate_input_tokens(request())  # deterministic
    # 300 system chars + the message as JSON (400 chars of text and its envelope)
    assert 700 / 4 <= plain <= 760 / 4
    with_tools = estimate_input_tokens(request(tools=True))
    assert with_tools > plain, "tool schemas are part of the input"
    longer = estimate_input_tokens(request("x" * 4400))
    assert longer - plain == 1000  # 4,000 more characters: 1,000 more tokens


def test_before_a_call_input_is_the_estimate_and_output_is_max_tokens() -> None:
    charge = before_call(request(max_tokens=2048))
    estimate = estimate_input_tokens(request())
    assert charge == TokenCharge(input=estimate, output=2048, combined=estimate)


@pytest.mark.parametrize(
    ("model", "reads_count"),
    [
        ("claude-sonnet-4-5", False),
        ("claude-opus-4-1-20250805", False),
        ("us.anthropic.claude-haiku-4-5-20251001-v1:0", False),
        ("claude-3-5-haiku-20241022", True),
        ("claude-3-haiku-20240307", True),
        ("gpt-4o", True),  # not a Claude model: we cannot know, so reads count
    ],
)
def test_cache_reads_count_toward_input_limits_only_where_the_api_counts_them(
    model: str, reads_count: bool
) -> None:
    assert cache_reads_count(model) is reads_count
    usage = Usage(
        input_tokens=100,
        output_tokens=40,
        cache_creation_input_tokens=1_000,
        cache_read_input_tokens=10_000,
    )
    counted = after_call(model, usage)
    expected_input = 1_100 + (10_000 if reads_count else 0)
    assert counted == TokenCharge(input=expected_input, output=40, combined=expected_input + 40)


def test_settlement_charges_or_refunds_the_difference_per_family() -> None:
    held = {"tokens": 500.0, "input-tokens": 500.0, "output-tokens": 4096.0}
    actual = TokenCharge(input=1_200, output=96, combined=1_296)
    assert settlement(held, actual) == {
        "tokens": 796.0,
        "input-tokens": 700.0,
        "output-tokens": -4000.0,
    }
    assert settlement({"tokens": 10.0}, TokenCharge(10, 0, 10)) == {}


def test_a_bucket_settled_above_its_grant_goes_into_debt_and_the_next_take_waits_it_out() -> None:
    clock = FakeClock(start=T0)
    bucket = TokenBucket.per_minute(6_000, "tokens")  # 100 tokens/s
    assert bucket.take(1_000, clock.now()) == 0.0
    bucket.adjust(+6_000, clock.now())  # the call really used 7,000: 5,000 left - 6,000
    assert bucket.available(clock.now()) == pytest.approx(-1_000)
    assert bucket.take(500, clock.now()) == pytest.approx(15.0)  # 1,500 short at 100/s
    clock.advance(15.0)
    assert bucket.take(500, clock.now()) == 0.0


def test_a_refund_gives_tokens_back_but_never_past_the_capacity() -> None:
    clock = FakeClock(start=T0)
    bucket = TokenBucket.per_minute(6_000, "output-tokens")
    assert bucket.take(4_096, clock.now()) == 0.0
    bucket.adjust(-4_000, clock.now())  # only 96 were written
    assert bucket.available(clock.now()) == pytest.approx(5_904)
    bucket.adjust(-10_000, clock.now())
    assert bucket.available(clock.now()) == 6_000
    bucket.adjust(+100_000, clock.now())  # debt is bounded by one capacity
    assert bucket.available(clock.now()) == -6_000


async def test_the_limiter_paces_by_real_usage_not_by_the_estimate() -> None:
    clock = FakeClock(start=T0)
    limiter = ProviderLimiter(
        "anthropic",
        requests_per_minute=6_000,
        input_tokens_per_minute=6_000,
        output_tokens_per_minute=6_000,
        clock=clock.now,
        sleep=fake_sleep(clock),
    )
    charge = before_call(request(max_tokens=1_000))
    families = {f: charge.family(f) for f in ("tokens", "input-tokens", "output-tokens")}
    grant = await limiter.reserve(families)
    assert grant.waited_s == 0.0
    assert set(grant.held) == {"input-tokens", "output-tokens"}
    # The answer used 6,000 input tokens (say, a large cache write) and 100 output tokens.
    actual = after_call(
        "claude-sonnet-4-5",
        Usage(input_tokens=1_000, output_tokens=100, cache_creation_input_tokens=5_000),
    )
    await limiter.adjust(settlement(grant.held, actual))
    out = limiter.buckets["output-tokens"].bucket.available(clock.now())
    assert out == pytest.approx(6_000 - 100), "the unused max_tokens came back"
    started = clock.now()
    second = await limiter.reserve(families)
    # Input is 6,000 - 6,000 = 0 left; the estimate needs charge.input more at 100/s.
    assert second.waited_s == pytest.approx(charge.input / 100, rel=0.05)
    assert clock.now() - started == pytest.approx(second.waited_s)
    assert limiter.waits["requests"] == 0.0, "paced by tokens, not requests"
    assert limiter.waits["input-tokens"] > 0


async def test_an_estimate_above_the_capacity_is_held_as_the_capacity_and_charged_after() -> None:
    clock = FakeClock(start=T0)
    limiter = ProviderLimiter(
        "anthropic", tokens_per_minute=600, clock=clock.now, sleep=fake_sleep(clock)
    )
    grant = await limiter.reserve({"tokens": 1_000})
    assert grant.held == {"tokens": 600}
    await limiter.adjust(settlement(grant.held, TokenCharge(1_000, 0, 1_000)))
    assert limiter.buckets["tokens"].bucket.available(clock.now()) == pytest.approx(-400)


class OnceRefused:
    """A provider that answers 429 to the first call (before doing any work), then succeeds
    with the given usage."""

    name = "anthropic"

    def __init__(self, usage: Usage) -> None:
        self.usage = usage
        self.calls = 0

    async def complete(self, req: ModelRequest) -> ModelResponse:
        self.calls += 1
        if self.calls == 1:
            raise ProviderError("slow down", status_code=429, error_type="rate_limit_error")
        return ModelResponse(
            id="m",
            model=req.model,
            message=Message(role="assistant", content=[TextBlock("ok")]),
            stop_reason="end_turn",
            usage=self.usage,
        )

    def stream(self, req: ModelRequest):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


async def test_the_caller_refunds_a_refused_attempt_and_settles_the_answer_to_its_usage() -> None:
    clock = FakeClock(start=T0)
    limiter = ProviderLimiter(
        "anthropic",
        input_tokens_per_minute=60_000,
        output_tokens_per_minute=60_000,
        clock=clock.now,
        sleep=fake_sleep(clock),
    )
    usage = Usage(input_tokens=700, output_tokens=50, cache_read_input_tokens=9_000)
    provider = OnceRefused(usage)
    caller = ResilientCaller(
        provider,
        limiter=limiter,
        policy=RetryPolicy(schedule=(0.0,), max_attempts=2),
        sleep=fake_sleep(clock),
        clock=clock.now,
    )
    result = await caller.call("coder", request(max_tokens=4_096))
    assert result.attempts == 2 and provider.calls == 2
    now = clock.now()
    # Two attempts reserved; the refused one gave everything back and the answer kept exactly
    # its usage: 700 input (cache reads do not count for claude-sonnet-4-5) and 50 output.
    assert limiter.buckets["input-tokens"].bucket.available(now) == pytest.approx(60_000 - 700)
    assert limiter.buckets["output-tokens"].bucket.available(now) == pytest.approx(60_000 - 50)
