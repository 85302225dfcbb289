"""Rate-limit header math, and the in-process request limiter (time driven by hand)."""

from __future__ import annotations

import pytest

from quarterdeck.kit.clock import FakeClock
from quarterdeck.security.auth import limiter as limiter_module
from quarterdeck.security.auth.limiter import RequestLimiter
from quarterdeck.security.auth.permissions import Role
from quarterdeck.security.auth.principal import Principal
from quarterdeck.security.auth.quota import Decision, Quota, decide


class RecordingLog:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []

    def warning(self, event: str, **fields: object) -> None:
        self.events.append((event, fields))


def key(key_id: str = "aaaaaaaa", tenant: str = "acme") -> Principal:
    return Principal(key_id, "test", Role.submitter, tenant)


# --- header math -----------------------------------------------------------------------------
def test_remaining_is_whole_tokens_and_reset_is_time_to_full():
    q = Quota("key", limit=60, tokens=10.4)  # refills 1 per second
    assert q.remaining == 10
    assert q.reset_s == 50  # 49.6 s to refill, rounded up
    assert Decision(True, (q,)).headers() == {
        "RateLimit-Limit": "60",
        "RateLimit-Remaining": "10",
        "RateLimit-Reset": "50",
    }


def test_a_full_bucket_resets_now():
    q = Quota("key", limit=600, tokens=600)
    assert (q.remaining, q.reset_s) == (600, 0)


def test_retry_after_is_the_wait_for_one_token_rounded_up_and_at_least_one():
    slow = Quota("key", limit=6, tokens=0.25)  # 0.1 token/s: 7.5 s to one token
    assert Decision(False, (slow,)).retry_after_s == 8
    almost = Quota("key", limit=600, tokens=0.999)  # 0.01 s away
    assert Decision(False, (almost,)).retry_after_s == 1
    assert Decision(True, (Quota("key", 60, 5),)).retry_after_s == 0


def test_with_two_buckets_the_headers_describe_the_emptier_one():
    key_q = Quota("key", limit=600, tokens=100)
    tenant_q = Quota("tenant", limit=3000, tokens=20)
    d = Decision(True, (key_q, tenant_q))
    assert d.binding is tenant_q
    assert d.headers()["RateLimit-Limit"] == "3000"
    tie_a, tie_b = Quota("key", 2, 0.9), Quota("tenant", 60, 0.9)  # both 0 remaining
    assert (tie_a.reset_s, tie_b.reset_s) == (33, 60)
    assert Decision(False, (tie_a, tie_b)).binding is tie_b  # the one longer to refill


def test_retry_after_waits_for_every_empty_bucket():
    d = Decision(False, (Quota("key", 60, 0), Quota("tenant", 6, 0.5)))
    assert d.limited_by == ["key", "tenant"]
    assert d.retry_after_s == 5  # the tenant needs 0.5 token at 0.1/s


def test_decide_takes_from_all_buckets_or_none():
    assert decide([Quota("key", 10, 3), Quota("tenant", 10, 1)]) == (True, [2, 0])
    assert decide([Quota("key", 10, 3), Quota("tenant", 10, 0.5)]) == (False, [3, 0.5])


# --- the in-process limiter ------------------------------------------------------------------
async def test_a_key_gets_its_burst_then_429_until_tokens_refill():
    clock = FakeClock(1000.0)
    limiter = RequestLimiter(3, 0, clock=clock.now)
    decisions = [await limiter.hit(key()) for _ in range(4)]
    assert [d.allowed for d in decisions if d] == [True, True, True, False]
    last = decisions[-1]
    assert last is not None and last.retry_after_s == 20  # 3/min: one token per 20 s
    assert last.headers()["RateLimit-Remaining"] == "0"
    clock.advance(20)
    again = await limiter.hit(key())
    assert again is not None and again.allowed


async def test_the_tenant_bucket_is_shared_by_its_keys_and_not_by_other_tenants():
    limiter = RequestLimiter(100, 2, clock=FakeClock(1000.0).now)
    a, b, other = key("aaaaaaaa"), key("bbbbbbbb"), key("cccccccc", tenant="globex")
    assert [(await limiter.hit(p)).allowed for p in (a, b, a)] == [True, True, False]  # type: ignore[union-attr]
    refused = await limiter.hit(b)
    assert refused is not None and refused.limited_by == ["tenant"]
    assert (await limiter.hit(other)).allowed  # type: ignore[union-attr]


async def test_a_request_refused_by_the_tenant_costs_the_key_nothing():
    limiter = RequestLimiter(5, 1, clock=FakeClock(1000.0).now)
    first = await limiter.hit(key())
    assert first is not None and first.allowed
    for _ in range(3):
        assert not (await limiter.hit(key())).allowed  # type: ignore[union-attr]
    key_quota = next(q for q in (await limiter.hit(key())).quotas if q.scope == "key")  # type: ignore[union-attr]
    assert key_quota.remaining == 4


async def test_zero_means_unlimited():
    limiter = RequestLimiter(0, 0)
    assert not limiter.enabled
    assert await limiter.hit(key()) is None
    only_tenant = RequestLimiter(0, 10)
    decision = await only_tenant.hit(key())
    assert decision is not None and [q.scope for q in decision.quotas] == ["tenant"]


async def test_throttling_is_logged_once_per_key_per_interval_with_a_count(
    monkeypatch: pytest.MonkeyPatch,
):
    log = RecordingLog()
    monkeypatch.setattr(limiter_module, "log", log)
    clock = FakeClock(1000.0)
    limiter = RequestLimiter(1, 0, clock=clock.now, log_every_s=10)
    for _ in range(5):
        await limiter.hit(key())  # 1 granted, 4 throttled
    assert len(log.events) == 1
    event, fields = log.events[0]
    assert event == "auth.rate_limited"
    assert fields["key_id"] == "aaaaaaaa" and fields["tenant"] == "acme"
    assert fields["limited_by"] == ["key"] and fields["suppressed"] == 0
    clock.advance(10)  # refills 1/6 of a token: still throttled, and now logged again
    await limiter.hit(key())
    assert len(log.events) == 2 and log.events[1][1]["suppressed"] == 3
    assert all("secret" not in str(f) for _, f in log.events)
