"""Token buckets, Anthropic rate-limit headers and queued acquisition, on a FakeClock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

from quarterdeck.kit.clock import FakeClock
from quarterdeck.resilience.breaker import SharedStateUnavailable
from quarterdeck.resilience.ratelimit import (
    HeaderLimit,
    ProviderLimiter,
    SharedBucket,
    TokenBucket,
    parse_ratelimit_headers,
    parse_rfc3339,
)

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
T0 = EPOCH.timestamp()


def rfc3339(seconds_after_t0: float) -> str:
    return (EPOCH + timedelta(seconds=seconds_after_t0)).isoformat().replace("+00:00", "Z")


def fake_sleep(clock: FakeClock) -> Callable[[float], Awaitable[None]]:
    async def sleep(seconds: float) -> None:
        clock.advance(seconds)
        await asyncio.sleep(0)

    return sleep


def test_take_grants_until_empty_then_says_how_long_to_wait() -> None:
    bucket = TokenBucket(capacity=10, refill_per_s=2)
    for _ in range(10):
        assert bucket.take(1, T0) == 0.0
    assert bucket.take(1, T0) == pytest.approx(0.5)
    assert bucket.take(4, T0) == pytest.approx(2.0)
    assert bucket.available(T0) == pytest.approx(0.0)  # refusals take nothing


def test_refill_is_continuous_and_capped_at_capacity() -> None:
    bucket = TokenBucket(capacity=10, refill_per_s=2)
    bucket.take(10, T0)
    assert bucket.available(T0 + 1.5) == pytest.approx(3.0)
    assert bucket.take(3, T0 + 1.5) == 0.0
    assert bucket.available(T0 + 1000) == 10.0


def test_waiting_the_returned_time_is_enough() -> None:
    clock = FakeClock(start=T0)
    bucket = TokenBucket.per_minute(60)  # 1 per second
    bucket.take(60, clock.now())
    wait = bucket.take(5, clock.now())
    assert wait == pytest.approx(5.0)
    clock.advance(wait)
    assert bucket.take(5, clock.now()) == 0.0


def test_oversized_requests_wait_for_a_full_bucket_instead_of_forever() -> None:
    bucket = TokenBucket(capacity=100, refill_per_s=10)
    bucket.take(100, T0)
    assert bucket.take(1_000, T0) == pytest.approx(10.0)
    assert bucket.take(1_000, T0 + 10) == 0.0


def test_parse_headers_all_families_case_insensitive() -> None:
    headers = {
        "Anthropic-RateLimit-Requests-Limit": "50",
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": "2026-01-01T00:00:01Z",
        "anthropic-ratelimit-tokens-limit": "30000",
        "anthropic-ratelimit-tokens-remaining": "oops",
        "anthropic-ratelimit-input-tokens-limit": "20000",
        "anthropic-ratelimit-output-tokens-remaining": "8000",
        "anthropic-ratelimit-output-tokens-reset": "2026-01-01T00:00:30+00:00",
        "content-type": "application/json",
    }
    found = parse_ratelimit_headers(headers)
    assert found["requests"] == HeaderLimit(50, 49, T0 + 1)
    assert found["tokens"] == HeaderLimit(30000, None, None)
    assert found["input-tokens"] == HeaderLimit(20000, None, None)
    assert found["output-tokens"] == HeaderLimit(None, 8000, T0 + 30)
    assert parse_ratelimit_headers({"x": "1"}) == {}


def test_rfc3339_parsing() -> None:
    assert parse_rfc3339("2026-01-01T00:00:10Z") == T0 + 10
    assert parse_rfc3339("2026-01-01T01:00:10+01:00") == T0 + 10
    assert parse_rfc3339("2026-01-01T00:00:10.5") == T0 + 10.5  # naive: UTC
    assert parse_rfc3339("tomorrow") is None
    assert parse_rfc3339(None) is None


def test_headers_tighten_a_looser_configured_limit() -> None:
    bucket = TokenBucket.per_minute(1000)
    assert bucket.update_from_headers(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "3",
            "anthropic-ratelimit-requests-reset": rfc3339(56.4),
        },
        T0,
    )
    assert bucket.capacity == 50 and bucket.refill_per_s == pytest.approx(50 / 60)
    assert bucket.available(T0) == 3
    for _ in range(3):
        assert bucket.take(1, T0) == 0.0
    assert bucket.take(1, T0) == pytest.approx(1.2)


def test_headers_never_loosen_a_stricter_configured_limit() -> None:
    bucket = TokenBucket.per_minute(10)
    bucket.take(5, T0)
    bucket.update_from_headers(
        {
            "anthropic-ratelimit-requests-limit": "4000",
            "anthropic-ratelimit-requests-remaining": "3999",
        },
        T0,
    )
    assert bucket.capacity == 10 and bucket.available(T0) == pytest.approx(5)


def test_a_later_reset_than_nominal_slows_refill_until_the_reset() -> None:
    bucket = TokenBucket.per_minute(60, family="tokens")  # nominal 1/s
    bucket.update_from_headers(
        {
            "anthropic-ratelimit-tokens-limit": "60",
            "anthropic-ratelimit-tokens-remaining": "0",
            "anthropic-ratelimit-tokens-reset": rfc3339(120),  # full only in 120 s: 0.5/s
        },
        T0,
    )
    assert bucket.take(10, T0) == pytest.approx(20.0)
    assert bucket.available(T0 + 20) == pytest.approx(10.0)
    assert bucket.available(T0 + 120) == pytest.approx(60.0)
    bucket.take(60, T0 + 120)
    assert bucket.available(T0 + 130) == pytest.approx(10.0)  # nominal rate again


def test_an_earlier_reset_than_nominal_is_ignored() -> None:
    bucket = TokenBucket.per_minute(60)
    bucket.update(60, 0, T0 + 1, T0)  # "full in 1 s" would loosen: keep 1/s
    assert bucket.take(10, T0) == pytest.approx(10.0)


def test_headers_for_other_families_are_ignored() -> None:
    bucket = TokenBucket.per_minute(60, family="requests")
    assert not bucket.update_from_headers({"anthropic-ratelimit-tokens-remaining": "0"}, T0)
    assert bucket.available(T0) == 60


def test_invalid_buckets() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0, 1)
    with pytest.raises(ValueError):
        TokenBucket(1, 0)


async def test_acquire_queues_instead_of_failing() -> None:
    clock = FakeClock(start=T0)
    bucket = SharedBucket(
        "k", TokenBucket(capacity=2, refill_per_s=1), clock=clock.now, sleep=fake_sleep(clock)
    )
    assert await bucket.acquire() == 0.0
    assert await bucket.acquire() == 0.0
    assert await bucket.acquire(3) == pytest.approx(2.0)  # clamps to capacity 2, waits 2 s
    assert clock.now() == pytest.approx(T0 + 2)


async def test_acquire_is_first_come_first_served() -> None:
    clock = FakeClock(start=T0)
    bucket = SharedBucket(
        "k", TokenBucket(capacity=10, refill_per_s=1), clock=clock.now, sleep=fake_sleep(clock)
    )
    await bucket.acquire(10)
    order: list[str] = []

    async def want(label: str, n: int) -> None:
        await bucket.acquire(n)
        order.append(label)

    await asyncio.gather(want("big", 8), want("small-1", 1), want("small-2", 1))
    assert order == ["big", "small-1", "small-2"]


class DownStore:
    available = True

    async def take(self, *args: object) -> float:
        raise SharedStateUnavailable("down")

    async def close(self) -> None:
        return None


async def test_store_outage_falls_back_to_a_local_share() -> None:
    clock = FakeClock(start=T0)
    bucket = SharedBucket(
        "k",
        TokenBucket(capacity=10, refill_per_s=1),
        store=DownStore(),
        local_share=0.5,
        clock=clock.now,
    )
    granted = 0
    while await bucket.take(1) == 0.0:
        granted += 1
    assert granted == 5  # half the limit while replicas cannot coordinate


async def test_provider_limiter_acquires_requests_and_tokens_and_reads_headers() -> None:
    clock = FakeClock(start=T0)
    limiter = ProviderLimiter(
        "anthropic",
        requests_per_minute=60,
        tokens_per_minute=6_000,
        clock=clock.now,
        sleep=fake_sleep(clock),
    )
    assert set(limiter.buckets) == {"requests", "tokens"}
    assert await limiter.acquire(input_tokens=5_000, output_tokens=1_000) == 0.0
    waited = await limiter.acquire(input_tokens=1_000)  # tokens: 0 left, 100/s
    assert waited == pytest.approx(10.0)
    await limiter.update_from_headers(
        {"anthropic-ratelimit-requests-limit": "6", "anthropic-ratelimit-requests-remaining": "0"}
    )
    assert limiter.buckets["requests"].bucket.capacity == 6
    assert await limiter.acquire() == pytest.approx(10.0)  # 6/min: one every 10 s


async def test_without_a_store_each_process_takes_its_share_of_the_limit() -> None:
    """``up --worker-processes 2`` without Redis: each process may use half the limit."""
    clock = FakeClock(start=T0)
    bucket = SharedBucket(
        "k", TokenBucket(capacity=10, refill_per_s=1), local_share=0.5, clock=clock.now
    )
    granted = 0
    while await bucket.take(1) == 0.0:
        granted += 1
    assert granted == 5
