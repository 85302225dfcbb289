"""The circuit breaker state machine and the Breakers registry, on a FakeClock."""

from __future__ import annotations

import pytest

from quarterdeck import metrics
from quarterdeck.exceptions import ProviderError
from quarterdeck.kit.clock import FakeClock
from quarterdeck.resilience.breaker import (
    BreakerConfig,
    Breakers,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    CircuitStatus,
    InMemoryBreakerStore,
    SharedStateUnavailable,
    Step,
    breaker_name,
    merge,
    step,
)

CLOSED, HALF_OPEN, OPEN = CircuitStatus.CLOSED, CircuitStatus.HALF_OPEN, CircuitStatus.OPEN


def gauge(name: str) -> float | None:
    return metrics.REGISTRY.get_sample_value("claude_agent_circuit_state", {"dependency": name})


def tripped(cb: CircuitBreaker, clock: FakeClock) -> CircuitBreaker:
    for _ in range(cb.failure_threshold):
        cb.record_failure(clock.now())
    return cb


def test_opens_after_threshold_failures_within_the_window() -> None:
    clock = FakeClock()
    cb = CircuitBreaker("anthropic:m")
    for _ in range(4):
        cb.record_failure(clock.now())
        clock.advance(1)
    assert cb.state(clock.now()) is CLOSED and cb.allow(clock.now())
    cb.record_failure(clock.now())
    assert cb.state(clock.now()) is OPEN
    assert not cb.allow(clock.now())


def test_failures_outside_the_window_do_not_count() -> None:
    clock = FakeClock()
    cb = CircuitBreaker("x", window_s=30)
    for _ in range(4):
        cb.record_failure(clock.now())
    clock.advance(30)  # the first four fall out of the window
    for _ in range(4):
        cb.record_failure(clock.now())
        clock.advance(1)
    assert cb.state(clock.now()) is CLOSED
    assert len(cb.current.failures) <= cb.failure_threshold


def test_open_rejects_until_open_for_elapses_then_half_opens() -> None:
    clock = FakeClock()
    cb = tripped(CircuitBreaker("x"), clock)
    clock.advance(59.9)
    assert not cb.allow(clock.now())
    assert cb.retry_in(clock.now()) == pytest.approx(0.1)
    clock.advance(0.1)
    assert cb.state(clock.now()) is HALF_OPEN
    assert cb.retry_in(clock.now()) == 0.0


def test_half_open_lets_only_the_configured_probes_through() -> None:
    clock = FakeClock()
    cb = tripped(CircuitBreaker("x", half_open_probes=2), clock)
    clock.advance(60)
    assert cb.allow(clock.now())
    assert cb.allow(clock.now())
    assert not cb.allow(clock.now())  # two probes in flight
    cb.record_success(clock.now())
    assert cb.state(clock.now()) is HALF_OPEN  # one of two successes
    assert cb.allow(clock.now())  # the finished probe freed its slot
    cb.record_success(clock.now())
    assert cb.state(clock.now()) is CLOSED
    assert cb.current == BreakerState()


def test_a_probe_success_closes_with_the_default_single_probe() -> None:
    clock = FakeClock()
    cb = tripped(CircuitBreaker("x"), clock)
    clock.advance(60)
    assert cb.allow(clock.now())
    assert not cb.allow(clock.now())
    cb.record_success(clock.now())
    assert cb.state(clock.now()) is CLOSED and cb.allow(clock.now())


def test_a_failure_in_half_open_reopens_for_a_full_period() -> None:
    clock = FakeClock()
    cb = tripped(CircuitBreaker("x"), clock)
    clock.advance(60)
    assert cb.allow(clock.now())
    cb.record_failure(clock.now())
    assert cb.state(clock.now()) is OPEN
    clock.advance(59)
    assert not cb.allow(clock.now())
    clock.advance(1)
    assert cb.allow(clock.now())


def test_a_probe_that_never_reports_expires() -> None:
    clock = FakeClock()
    cb = tripped(CircuitBreaker("x", probe_timeout_s=10), clock)
    clock.advance(60)
    assert cb.allow(clock.now())  # this probe's process dies
    clock.advance(9)
    assert not cb.allow(clock.now())
    clock.advance(1)
    assert cb.allow(clock.now())


def test_release_frees_a_probe_without_counting() -> None:
    clock = FakeClock()
    cb = tripped(CircuitBreaker("x"), clock)
    clock.advance(60)
    assert cb.allow(clock.now())
    cb.release(clock.now())
    assert cb.state(clock.now()) is HALF_OPEN
    assert cb.allow(clock.now())


def test_late_results_while_open_change_nothing() -> None:
    clock = FakeClock()
    cb = tripped(CircuitBreaker("x"), clock)
    opened = cb.current.opened_at
    clock.advance(10)
    cb.record_failure(clock.now())
    cb.record_success(clock.now())
    assert cb.state(clock.now()) is OPEN and cb.current.opened_at == opened


def test_state_round_trips_through_json_and_bad_json_is_closed() -> None:
    clock = FakeClock()
    cb = tripped(CircuitBreaker("x"), clock)
    restored = BreakerState.from_json(cb.current.to_json())
    assert restored == cb.current
    assert BreakerState.from_json(restored.to_json().encode()) == cb.current
    assert BreakerState.from_json(None) == BreakerState()
    assert BreakerState.from_json("{not json") == BreakerState()
    assert BreakerState.from_json('{"status": 7}') == BreakerState()


def test_merge_prefers_the_more_severe_state_and_unions_failures() -> None:
    cfg = BreakerConfig()
    opened, _ = step(BreakerState(), cfg, "failure", 0.0)
    for t in (1.0, 2.0, 3.0, 4.0):
        opened, _ = step(opened, cfg, "failure", t)
    assert opened.status is OPEN
    assert merge(BreakerState(), opened, cfg, 5.0).status is OPEN
    assert merge(opened, BreakerState(), cfg, 5.0).status is OPEN
    a = BreakerState(failures=(1.0, 2.0, 3.0))
    b = BreakerState(failures=(1.5, 2.5))
    merged = merge(a, b, cfg, 4.0)
    assert merged.status is OPEN  # 5 failures in the window between the two replicas


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        BreakerConfig(failure_threshold=0)
    with pytest.raises(ValueError):
        BreakerConfig(window_s=0)


# --- the registry ---------------------------------------------------------------------------


async def test_two_registries_share_state_through_a_store() -> None:
    clock = FakeClock(start=1_000.0)
    store = InMemoryBreakerStore()
    a = Breakers(store, clock=clock.now)
    b = Breakers(store, clock=clock.now)
    name = breaker_name("anthropic", "claude-sonnet-4-5")
    assert name == "anthropic:claude-sonnet-4-5"
    for _ in range(5):
        await a.record_failure(name)
    assert not await b.allow(name)
    assert await b.state(name) is OPEN
    assert gauge(name) == 2.0
    clock.advance(60)
    assert await b.allow(name)  # b takes the one probe...
    assert not await a.allow(name)  # ...so a may not
    assert gauge(name) == 1.0
    await b.record_success(name)
    assert await a.state(name) is CLOSED
    assert gauge(name) == 0.0


async def test_guard_records_outcomes_and_raises_when_open() -> None:
    clock = FakeClock()
    reg = Breakers(clock=clock.now)
    for _ in range(5):
        with pytest.raises(ProviderError):
            async with reg.guard("database"):
                raise ProviderError("boom", status_code=503)
    with pytest.raises(CircuitOpenError) as info:
        async with reg.guard("database"):
            raise AssertionError("must not run")
    assert info.value.retry_after == 60 and info.value.status == 503
    clock.advance(60)
    async with reg.guard("database"):
        pass
    assert await reg.state("database") is CLOSED


async def test_guard_does_not_count_client_errors_or_rate_limits() -> None:
    reg = Breakers(clock=FakeClock().now)
    for code in (400, 429, 400, 429, 404, 413):
        with pytest.raises(ProviderError):
            async with reg.guard("anthropic:m"):
                raise ProviderError("nope", status_code=code)
    assert await reg.state("anthropic:m") is CLOSED


class FlakyStore(InMemoryBreakerStore):
    """An in-memory store that can be switched off, like Redis going away."""

    def __init__(self) -> None:
        super().__init__()
        self.up = True

    @property
    def available(self) -> bool:
        return self.up

    async def apply(self, *args: object, **kw: object) -> Step:
        if not self.up:
            raise SharedStateUnavailable("down")
        return await super().apply(*args, **kw)  # type: ignore[arg-type]


async def test_store_outage_falls_back_in_process_and_merges_on_recovery() -> None:
    clock = FakeClock(start=5_000.0)
    store = FlakyStore()
    a = Breakers(store, clock=clock.now)
    b = Breakers(store, clock=clock.now)
    await a.allow("p:m")
    assert a.shared
    store.up = False
    for _ in range(5):
        await a.record_failure("p:m")  # learned while cut off
    assert not a.shared
    assert not await a.allow("p:m")  # the local copy works
    assert await b.allow("p:m")  # b's own local copy knows nothing of a's failures
    store.up = True
    assert not await a.allow("p:m")  # reconnect: a pushes its OPEN state first
    assert a.shared
    assert not await b.allow("p:m")  # and b now sees it


async def test_local_only_names_never_touch_the_store() -> None:
    store = InMemoryBreakerStore()
    reg = Breakers(store, clock=FakeClock().now)
    for _ in range(5):
        await reg.record_failure("redis")
    assert "redis" not in store.states
    assert await reg.state("redis") is OPEN
