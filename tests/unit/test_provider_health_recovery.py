"""The provider check and its recovery when a model's breaker opens: degraded while a fallback
serves, failing when nothing does. Pure: in-process breakers on a FakeClock, no network."""

from __future__ import annotations

from quarterdeck.health.checks import CheckResult
from quarterdeck.health.provider import ProviderCallWindow, ProviderCheck
from quarterdeck.health.recovery import ProviderRecovery
from quarterdeck.kit.clock import FakeClock
from quarterdeck.resilience.breaker import BreakerConfig, Breakers

PRIMARY, FALLBACK, SPARE = "claude-primary-t", "claude-fallback-t", "claude-spare-t"
OPEN_FOR = 60.0


def build(
    fallbacks: dict[str, list[str]] | None = None,
) -> tuple[FakeClock, Breakers, ProviderCheck, ProviderRecovery]:
    clock = FakeClock(1_000.0)
    breakers = Breakers(
        config=BreakerConfig(failure_threshold=1, open_for_s=OPEN_FOR), clock=clock.now
    )
    check = ProviderCheck(
        "anthropic",
        breakers=breakers,
        window=ProviderCallWindow(),
        fallbacks={PRIMARY: [FALLBACK]} if fallbacks is None else fallbacks,
    )
    return clock, breakers, check, ProviderRecovery(check, breakers)


async def fail(breakers: Breakers, model: str) -> None:
    """One failed call: a closed breaker with threshold 1 opens; a half-open one re-opens."""
    await breakers.allow(f"anthropic:{model}")
    await breakers.record_failure(f"anthropic:{model}")


async def succeed(breakers: Breakers, model: str) -> None:
    await breakers.allow(f"anthropic:{model}")
    await breakers.record_success(f"anthropic:{model}")


async def detect_and_recover(check: ProviderCheck, recovery: ProviderRecovery) -> CheckResult:
    first = await check.check()
    assert not first.healthy, "an open breaker is detected before anything is accepted"
    assert f"circuit open for anthropic:{PRIMARY}" in first.reason
    result = await recovery.recover(first, 0.0)
    assert result.recheck is not None
    return result.recheck


async def test_open_primary_with_a_serving_fallback_is_accepted_as_degraded() -> None:
    _, breakers, check, recovery = build()
    await succeed(breakers, FALLBACK)
    await fail(breakers, PRIMARY)
    failed = await check.check()
    result = await recovery.recover(failed, 0.0)
    assert result.success and result.recheck is not None and result.recheck.healthy
    assert result.recheck.details["degraded"] == {PRIMARY: FALLBACK}
    assert result.recheck.reason == (
        f"degraded: {PRIMARY} circuit open; fallback {FALLBACK} serving"
    )
    assert f"{PRIMARY} circuit open; fallback {FALLBACK} serving" in result.message
    assert "CircuitBreakerOpen" in result.message
    assert result.details["degraded"] == {PRIMARY: FALLBACK}
    again = await check.check()
    assert again.healthy and again.details["breakers"][f"anthropic:{PRIMARY}"] == "open"


async def test_fallback_never_called_here_counts_when_its_breaker_is_closed() -> None:
    _, breakers, check, recovery = build()
    await fail(breakers, PRIMARY)  # this process has not called the fallback yet
    recheck = await detect_and_recover(check, recovery)
    assert recheck.healthy and recheck.details["degraded"] == {PRIMARY: FALLBACK}


async def test_a_model_without_a_fallback_keeps_failing() -> None:
    _, breakers, check, recovery = build(fallbacks={})
    await fail(breakers, PRIMARY)
    failed = await check.check()
    within = await recovery.recover(failed, 10.0)
    assert within.success, "within give_up_after_s the provider gets time"
    assert within.recheck is not None and not within.recheck.healthy
    assert "degraded" not in within.recheck.details
    assert within.details["uncovered"] == [PRIMARY]
    late = await recovery.recover(failed, recovery.give_up_after_s + 1)
    assert not late.success and "circuit open" in late.message
    assert not (await check.check()).healthy


async def test_partial_cover_still_fails_for_the_uncovered_model() -> None:
    _, breakers, check, recovery = build()
    await fail(breakers, PRIMARY)
    await fail(breakers, SPARE)
    failed = await check.check()
    result = await recovery.recover(failed, 0.0)
    assert result.recheck is not None and not result.recheck.healthy
    assert result.recheck.reason == f"circuit open for anthropic:{SPARE}"
    assert result.recheck.details["degraded"] == {PRIMARY: FALLBACK}
    assert result.details["uncovered"] == [SPARE]
    assert f"no fallback serves {SPARE}" in result.message


async def test_half_open_cycles_of_a_dead_primary_do_not_flap() -> None:
    clock, breakers, check, recovery = build()
    await fail(breakers, PRIMARY)
    assert (await detect_and_recover(check, recovery)).healthy
    for _ in range(3):  # the primary stays dead: open -> half-open -> failed probe -> open
        clock.advance(OPEN_FOR)
        half = await check.check()
        assert half.healthy and half.details["degraded"] == {PRIMARY: FALLBACK}
        assert half.reason == f"degraded: {PRIMARY} circuit half_open; fallback {FALLBACK} serving"
        await fail(breakers, PRIMARY)
        reopened = await check.check()
        assert reopened.healthy and reopened.details["degraded"] == {PRIMARY: FALLBACK}
    clock.advance(OPEN_FOR)
    await succeed(breakers, PRIMARY)  # the probe succeeds: closed, the entry is dropped
    healed = await check.check()
    assert healed.healthy and healed.reason == "" and "degraded" not in healed.details
    assert check.degraded == {}
    await fail(breakers, PRIMARY)  # a new outage is detected again, not silently accepted
    assert not (await check.check()).healthy


async def test_fallback_breaker_opening_fails_the_check_again() -> None:
    clock, breakers, check, recovery = build()
    await fail(breakers, PRIMARY)
    assert (await detect_and_recover(check, recovery)).healthy
    await fail(breakers, FALLBACK)
    failed = await check.check()
    assert not failed.healthy and "degraded" not in failed.details
    assert failed.reason == f"circuit open for anthropic:{FALLBACK}, anthropic:{PRIMARY}"
    result = await recovery.recover(failed, 0.0)
    assert result.recheck is not None and not result.recheck.healthy
    assert result.details["uncovered"] == [FALLBACK, PRIMARY]
    clock.advance(OPEN_FOR)  # the fallback half-open lets one probe through: not serving yet
    assert await check.serving_fallback(PRIMARY) is None
    await succeed(breakers, FALLBACK)  # fallback closed again; the primary is still open
    clock.advance(1.0)
    await fail(breakers, PRIMARY)  # the primary's half-open probe failed: open again
    recovered = await recovery.recover(await check.check(), 0.0)
    assert recovered.recheck is not None and recovered.recheck.healthy
    assert recovered.recheck.details["degraded"] == {PRIMARY: FALLBACK}


async def test_the_first_closed_fallback_in_the_chain_is_the_one_serving() -> None:
    _, breakers, check, recovery = build(fallbacks={PRIMARY: [FALLBACK, SPARE]})
    await fail(breakers, FALLBACK)
    await fail(breakers, PRIMARY)
    assert await check.serving_fallback(PRIMARY) == SPARE
    result = await recovery.recover(await check.check(), 0.0)
    assert result.recheck is not None
    assert result.recheck.details["degraded"] == {PRIMARY: SPARE}
    # the fallback's own open breaker has no fallback of its own: still failing
    assert result.recheck.reason == f"circuit open for anthropic:{FALLBACK}"
