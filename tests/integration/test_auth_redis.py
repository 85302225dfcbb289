"""Request limits shared through a REAL redis-server, and what happens when it dies.

Two limiters with their own connection pools stand in for two replicas. Redis is killed
(SIGKILL) mid-test: requests must still be decided (in-process) and never fail, and sharing
must resume by itself when Redis is back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from quarterdeck.app import create_app
from quarterdeck.resilience.redis_backend import RedisLink
from quarterdeck.runtime import Runtime
from quarterdeck.security.auth.limiter import RequestLimiter
from quarterdeck.security.auth.permissions import Role
from quarterdeck.security.auth.principal import Principal
from quarterdeck.security.auth.shared_quota import KEY_PREFIX, SharedQuotaStore
from tests.conftest import eventually
from tests.support.redis_server import RedisServer, redis_server  # noqa: F401

ADMIN = "redis-test-bootstrap-admin-key-0123456789"


def principal(key_id: str = "aaaaaaaa", tenant: str = "acme") -> Principal:
    return Principal(key_id, "t", Role.submitter, tenant)


@pytest.fixture
async def replicas(
    redis_server: RedisServer,  # noqa: F811
) -> AsyncIterator[Callable[[float, float], list[RequestLimiter]]]:
    made: list[RequestLimiter] = []

    def make(key_limit: float, tenant_limit: float) -> list[RequestLimiter]:
        pair = []
        for _ in range(2):
            link = RedisLink(redis_server.url, timeout_s=0.5, reconnect_interval_s=0.1)
            pair.append(RequestLimiter(key_limit, tenant_limit, store=SharedQuotaStore(link)))
        made.extend(pair)
        return pair

    yield make
    for limiter in made:
        await limiter.aclose()


async def granted(limiter: RequestLimiter, p: Principal) -> bool:
    decision = await limiter.hit(p)
    assert decision is not None
    return decision.allowed


async def test_replicas_share_one_key_budget(replicas: Callable[..., list[RequestLimiter]]):
    a, b = replicas(5, 0)
    results = [await granted(r, principal()) for r in (a, b) * 5]
    assert results.count(True) == 5 and results[:5] == [True] * 5
    assert a.shared and b.shared
    last = await b.hit(principal())
    assert last is not None and last.headers()["RateLimit-Remaining"] == "0"


async def test_shared_buckets_take_from_key_and_tenant_together_or_not_at_all(
    replicas: Callable[..., list[RequestLimiter]],
):
    a, b = replicas(3, 2)
    assert await granted(a, principal("aaaaaaaa"))
    assert await granted(b, principal("bbbbbbbb"))
    refused = await a.hit(principal("aaaaaaaa"))
    assert refused is not None and not refused.allowed and refused.limited_by == ["tenant"]
    key_quota = next(q for q in refused.quotas if q.scope == "key")
    assert key_quota.remaining == 2  # the refused request did not cost the key a token
    assert await granted(b, principal("cccccccc", tenant="globex"))


async def test_a_dead_redis_falls_back_in_process_and_sharing_resumes(
    replicas: Callable[..., list[RequestLimiter]],
    redis_server: RedisServer,  # noqa: F811
):
    a, _ = replicas(3, 0)
    assert [await granted(a, principal()) for _ in range(4)] == [True, True, True, False]
    redis_server.kill()
    # The first call notices; neither it nor any later one raises.
    decisions = [await a.hit(principal()) for _ in range(4)]
    assert not a.shared
    assert [d.allowed for d in decisions if d] == [True, True, True, False]
    redis_server.start()
    await eventually(lambda: a.shared, timeout=10)
    assert await granted(a, principal())  # an empty Redis: a full bucket again
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await client.exists(f"{KEY_PREFIX}key:aaaaaaaa") == 1
    finally:
        await client.aclose()


@pytest.fixture
async def secured_with_redis(
    make_settings: Callable[..., Any],
    redis_server: RedisServer,  # noqa: F811
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    settings = make_settings(
        auth_enabled=True,
        admin_api_key=ADMIN,
        redis_url=redis_server.url,
        rate_limit_key_per_minute=2,
        rate_limit_tenant_per_minute=0,
        health_monitor_enabled=False,
    )
    rt = Runtime(settings, with_workers=False)
    await rt.start()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(settings, rt)), base_url="http://qd"
    ) as client:
        yield rt, client
    await rt.stop()


async def test_the_api_keeps_answering_when_redis_dies(
    secured_with_redis: tuple[Runtime, httpx.AsyncClient],
    redis_server: RedisServer,  # noqa: F811
):
    rt, client = secured_with_redis
    key = (await rt.auth.create("ci", Role.submitter, "acme")).api_key
    headers = {"Authorization": f"Bearer {key}"}
    codes = [(await client.get("/v1/agent-types", headers=headers)).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert rt.auth.limiter.shared
    redis_server.kill()
    after = [(await client.get("/v1/agent-types", headers=headers)) for _ in range(3)]
    assert [r.status_code for r in after] == [200, 200, 429]  # counted in-process now
    assert all("ratelimit-remaining" in r.headers for r in after)
    assert not rt.auth.limiter.shared
