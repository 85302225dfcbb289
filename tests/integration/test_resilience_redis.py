"""Breakers and rate limits shared through a REAL redis-server, and surviving its loss.

Two registries with their own connection pools stand in for two replicas. Redis is killed
(SIGKILL) mid-test: both must keep deciding in-process, quickly and without raising, and both
must reconnect by themselves when it comes back (empty: it runs without persistence).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from quarterdeck import metrics
from quarterdeck.resilience import (
    BreakerConfig,
    Breakers,
    CircuitStatus,
    ProviderLimiter,
    redis_backend,
)
from quarterdeck.resilience import breaker as breaker_module
from quarterdeck.resilience.redis_backend import RedisLink, redis_stores
from tests.conftest import eventually
from tests.support.redis_server import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.asyncio

MODEL = "anthropic:claude-sonnet-4-5"


class RecordingLog:
    """Stands in for a module's structlog logger, keeping event names."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def _record(self, event: str, **_: object) -> None:
        self.events.append(event)

    info = warning = error = debug = _record


@dataclass
class Replica:
    link: RedisLink
    breakers: Breakers
    limiter: ProviderLimiter

    @property
    def shared(self) -> bool:
        return self.link.available


@pytest.fixture
async def replicas(redis_server: RedisServer) -> AsyncIterator[tuple[Replica, Replica]]:  # noqa: F811
    made = []
    for _ in range(2):
        # 2 s, not the production 0.5 s: 29 contended WATCH/MULTI retries on a loaded CI machine
        # once passed 0.5 s and read as "Redis unreachable" (shared False), which is not what
        # these tests are about; a killed Redis still fails at once (connection refused).
        breaker_store, bucket_store = redis_stores(
            redis_server.url, timeout_s=2.0, reconnect_interval_s=0.1
        )
        made.append(
            Replica(
                breaker_store.link,
                Breakers(breaker_store),
                ProviderLimiter("anthropic", requests_per_minute=10, store=bucket_store),
            )
        )
    try:
        yield made[0], made[1]
    finally:
        for replica in made:
            await replica.link.close()


async def count_granted(limiter: ProviderLimiter, tries: int) -> int:
    bucket = limiter.buckets["requests"]
    results = await asyncio.gather(*(bucket.take(1) for _ in range(tries)))
    return sum(1 for wait in results if wait == 0.0)


async def test_replicas_share_open_state(
    replicas: tuple[Replica, Replica],
    redis_server: RedisServer,  # noqa: F811
) -> None:
    a, b = replicas
    assert await b.breakers.allow(MODEL)
    for _ in range(5):
        await a.breakers.record_failure(MODEL)
    assert not await b.breakers.allow(MODEL)  # b never saw a failure itself
    assert await b.breakers.state(MODEL) is CircuitStatus.OPEN
    assert (
        metrics.REGISTRY.get_sample_value("claude_agent_circuit_state", {"dependency": MODEL})
        == 2.0
    )
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        key = f"quarterdeck:breaker:{MODEL}"
        assert await client.exists(key)
        assert 0 < await client.ttl(key) <= 60 + 60 + 60
    finally:
        await client.aclose()


async def test_concurrent_failures_from_both_replicas_are_never_lost(
    replicas: tuple[Replica, Replica],
) -> None:
    """WATCH/MULTI under contention: 29 concurrent failures are 29, and the 30th opens."""
    a, b = replicas
    cfg = BreakerConfig(failure_threshold=30)
    ra = Breakers(a.breakers.store, config=cfg)
    rb = Breakers(b.breakers.store, config=cfg)
    await asyncio.gather(
        *(ra.record_failure("contended") for _ in range(15)),
        *(rb.record_failure("contended") for _ in range(14)),
    )
    assert ra.shared and rb.shared
    assert await rb.state("contended") is CircuitStatus.CLOSED
    assert len(rb.get("contended").current.failures) == 29
    await ra.record_failure("contended")
    assert await rb.state("contended") is CircuitStatus.OPEN


async def test_the_token_bucket_is_shared_and_atomic(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    granted = await asyncio.gather(count_granted(a.limiter, 15), count_granted(b.limiter, 15))
    assert sum(granted) == 10  # 10 rpm between both replicas, none lost or double-spent
    assert await b.limiter.buckets["requests"].take(1) > 0


async def test_headers_seen_by_one_replica_tighten_the_shared_bucket(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    await a.limiter.update_from_headers({"anthropic-ratelimit-requests-remaining": "2"})
    assert await count_granted(b.limiter, 5) == 2


async def test_both_keep_working_without_redis_and_reconnect_when_it_returns(
    replicas: tuple[Replica, Replica],
    redis_server: RedisServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b = replicas
    link_log, breaker_log = RecordingLog(), RecordingLog()
    monkeypatch.setattr(redis_backend, "log", link_log)
    monkeypatch.setattr(breaker_module, "log", breaker_log)
    for _ in range(5):
        await a.breakers.record_failure(MODEL)
    assert not await b.breakers.allow(MODEL)  # b's local copy now mirrors OPEN

    redis_server.kill()

    started = time.monotonic()
    # Both keep deciding in-process, without raising.
    assert not await a.breakers.allow(MODEL)
    assert not await b.breakers.allow(MODEL)
    assert not a.shared and not b.shared
    assert not a.breakers.shared and not b.breakers.shared
    for _ in range(5):
        await b.breakers.record_failure("database")  # learned while cut off
    assert await b.breakers.state("database") is CircuitStatus.OPEN
    assert await a.breakers.allow("database")  # a cannot know yet
    assert await count_granted(a.limiter, 15) == 10  # each replica: its local bucket
    assert await count_granted(b.limiter, 15) == 10
    for _ in range(100):
        await a.breakers.allow("anthropic:other-model")
    assert time.monotonic() - started < 2.0, "fallback must not wait on a dead Redis"

    # Logged once per replica per outage, not once per call.
    assert link_log.events.count("redis.unavailable") == 2
    assert breaker_log.events.count("circuit.shared_state_unavailable") == 2

    redis_server.start()  # same port, empty
    await eventually(lambda: a.shared and b.shared, timeout=10)

    # The first shared call from each replica pushes what it learned while cut off.
    assert not await a.breakers.allow(MODEL)
    assert a.breakers.shared
    assert not await b.breakers.allow("database")
    assert b.breakers.shared
    assert not await a.breakers.allow("database")  # b's outage-time knowledge reached a
    # The restarted Redis is empty again, so the shared bucket starts full: 10 between both.
    granted = await asyncio.gather(count_granted(a.limiter, 15), count_granted(b.limiter, 15))
    assert sum(granted) == 10
    assert link_log.events.count("redis.reconnected") == 2
    assert breaker_log.events.count("circuit.shared_state_restored") == 2
