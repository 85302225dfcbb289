"""The retry policy, rule by rule, on a FakeClock (no sleeping, no real time)."""

from __future__ import annotations

import asyncio
import random

import pytest

from quarterdeck.exceptions import ProviderError
from quarterdeck.kit.clock import FakeClock
from quarterdeck.resilience.retry import GiveUp, RetryAt, RetryPolicy, classify, is_spend_limit

NO_JITTER = RetryPolicy(jitter=0.0)


def status(code: int, error_type: str = "api_error", **kw: object) -> ProviderError:
    return ProviderError(f"HTTP {code}", status_code=code, error_type=error_type, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "error",
    [
        status(408, "timeout_error"),
        status(409, "conflict"),
        status(429, "rate_limit_error"),
        status(500),
        status(502),
        status(503),
        status(504),
        status(529, "overloaded_error"),
        ProviderError("overloaded", error_type="overloaded_error"),
        ProviderError("reset by peer", error_type="connection_error"),
        ProviderError("timed out", error_type="timeout"),
        TimeoutError(),
        ConnectionResetError(),
        ConnectionRefusedError(),
    ],
    ids=repr,
)
def test_transient_errors_are_retried_on_the_schedule(error: BaseException) -> None:
    clock = FakeClock()
    decision = NO_JITTER.decide(error, attempt=1, now=clock.now(), started=clock.now())
    assert isinstance(decision, RetryAt), decision
    assert decision.delay == 1.0
    assert decision.at == clock.now() + 1.0


@pytest.mark.parametrize("code", [400, 401, 403, 404, 413, 422])
def test_client_errors_are_never_retried(code: int) -> None:
    decision = NO_JITTER.decide(status(code, "invalid_request_error"), 1, 0.0, 0.0)
    assert isinstance(decision, GiveUp)
    assert not decision.exhausted
    assert str(code) in decision.reason


@pytest.mark.parametrize(
    "error",
    [
        ProviderError(
            "anthropic 429 rate_limit_error: You have reached your specified workspace API "
            "spend limit",
            status_code=429,
            error_type="rate_limit_error",
        ),
        ProviderError("429: billing hard limit reached", status_code=429),
        ProviderError("Your credit balance is too low", status_code=429),
        ProviderError("payment required", status_code=402, error_type="billing_error"),
        ProviderError("no status, but billing", error_type="billing_error"),
        ProviderError("You exceeded your current quota", status_code=429),
    ],
)
def test_spend_limits_are_never_retried(error: ProviderError) -> None:
    assert is_spend_limit(error)
    decision = NO_JITTER.decide(error, 1, 0.0, 0.0)
    assert isinstance(decision, GiveUp)
    assert decision.kind == "spend_limit"


def test_a_plain_rate_limit_is_not_a_spend_limit() -> None:
    err = status(429, "rate_limit_error")
    assert not is_spend_limit(err)
    assert classify(err).kind == "rate_limit"


def test_schedule_is_followed_attempt_by_attempt_then_attempts_run_out() -> None:
    clock = FakeClock()
    started = clock.now()
    policy = RetryPolicy(jitter=0.0, total_budget_s=1000)
    delays = []
    attempt = 1
    while True:
        decision = policy.decide(status(503), attempt, clock.now(), started)
        if isinstance(decision, GiveUp):
            break
        delays.append(decision.delay)
        clock.advance(decision.delay)
        attempt += 1
    assert delays == [1.0, 5.0, 15.0, 30.0]
    assert attempt == 5
    assert decision.exhausted and "5 attempt" in decision.reason


def test_schedule_repeats_its_last_step_when_more_attempts_are_allowed() -> None:
    policy = RetryPolicy(jitter=0.0, max_attempts=8, total_budget_s=1e6)
    decision = policy.decide(status(500), 6, 0.0, 0.0)
    assert isinstance(decision, RetryAt) and decision.delay == 30.0


def test_jitter_stays_within_bounds_and_is_reproducible() -> None:
    policy = RetryPolicy(jitter=0.2)
    seen = set()
    for seed in range(200):
        decision = policy.decide(status(500), 2, 0.0, 0.0, rng=random.Random(seed))
        assert isinstance(decision, RetryAt)
        assert 4.0 <= decision.delay <= 6.0
        seen.add(round(decision.delay, 6))
    assert len(seen) > 100  # actually spread out
    a = policy.decide(status(500), 2, 0.0, 0.0, rng=random.Random(7))
    b = policy.decide(status(500), 2, 0.0, 0.0, rng=random.Random(7))
    assert a == b


def test_retry_after_longer_than_the_schedule_is_honoured() -> None:
    decision = NO_JITTER.decide(status(429, retry_after=12.5), 1, 100.0, 100.0)
    assert isinstance(decision, RetryAt)
    assert decision.delay == 12.5 and decision.at == 112.5


def test_retry_after_never_shortens_the_schedule() -> None:
    decision = NO_JITTER.decide(status(429, retry_after=0.2), 3, 0.0, 0.0)
    assert isinstance(decision, RetryAt) and decision.delay == 15.0


def test_retry_after_is_capped() -> None:
    decision = NO_JITTER.decide(status(429, retry_after=3600.0), 1, 0.0, 0.0)
    assert isinstance(decision, RetryAt) and decision.delay == 60.0
    small_cap = RetryPolicy(jitter=0.0, max_retry_after=10.0)
    decision = small_cap.decide(status(529, "overloaded_error", retry_after=45.0), 1, 0.0, 0.0)
    assert isinstance(decision, RetryAt) and decision.delay == 10.0


def test_total_budget_includes_time_spent_in_failing_attempts() -> None:
    clock = FakeClock()
    started = clock.now()
    clock.advance(100.0)  # the first attempt itself hung for 100 s
    ok = NO_JITTER.decide(status(503), 1, clock.now(), started)
    assert isinstance(ok, RetryAt)  # 100 + 1 <= 120
    clock.advance(16.0)
    # attempt 2 failed at t=116: waiting 5 s lands at 121 > 120
    over = NO_JITTER.decide(status(503), 2, clock.now(), started)
    assert isinstance(over, GiveUp) and over.exhausted and "budget" in over.reason


def test_budget_boundary_is_inclusive() -> None:
    decision = NO_JITTER.decide(status(503), 1, 119.0, 0.0)
    assert isinstance(decision, RetryAt)  # 119 + 1 == 120, not over
    decision = NO_JITTER.decide(status(503), 1, 119.5, 0.0)
    assert isinstance(decision, GiveUp)


def test_retry_after_counts_against_the_budget() -> None:
    decision = NO_JITTER.decide(status(429, retry_after=60.0), 1, 70.0, 0.0)
    assert isinstance(decision, GiveUp) and decision.exhausted


def test_cancellation_and_bugs_are_not_retried() -> None:
    assert isinstance(NO_JITTER.decide(asyncio.CancelledError(), 1, 0.0, 0.0), GiveUp)
    assert isinstance(NO_JITTER.decide(KeyboardInterrupt(), 1, 0.0, 0.0), GiveUp)
    bug = NO_JITTER.decide(ValueError("oops"), 1, 0.0, 0.0)
    assert isinstance(bug, GiveUp) and "ValueError" in bug.reason


def test_provider_flag_decides_when_there_is_no_status() -> None:
    retry = NO_JITTER.decide(ProviderError("malformed stream", retryable=True), 1, 0.0, 0.0)
    assert isinstance(retry, RetryAt)
    stop = NO_JITTER.decide(ProviderError("content policy", retryable=False), 1, 0.0, 0.0)
    assert isinstance(stop, GiveUp)


def test_breaker_classification() -> None:
    assert classify(status(503)).trips_breaker
    assert classify(status(529, "overloaded_error")).trips_breaker
    assert classify(TimeoutError()).trips_breaker
    assert classify(ProviderError("x", error_type="connection_error")).trips_breaker
    assert not classify(status(429, "rate_limit_error")).trips_breaker
    assert not classify(status(400)).trips_breaker
    assert not classify(asyncio.CancelledError()).trips_breaker


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        NO_JITTER.decide(status(500), 0, 0.0, 0.0)
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


@pytest.mark.parametrize(
    ("status", "error_type", "detail", "expected"),
    [
        (400, "invalid_request_error", "prompt is too long: 215000 tokens > 200000 maximum", True),
        (400, "invalid_request_error", "This model's maximum context length is 128000", True),
        (400, "context_length_exceeded", "too long", True),
        (400, "invalid_request_error", "messages: field required", False),
        (529, "overloaded_error", "prompt is too long", False),
    ],
)
def test_context_overflow_is_recognised_by_its_message(status, error_type, detail, expected):
    from quarterdeck.resilience.retry import is_context_overflow

    err = ProviderError(detail, status_code=status, error_type=error_type)
    assert is_context_overflow(err) is expected
