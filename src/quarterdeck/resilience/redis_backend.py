"""Redis implementations of the breaker and rate-limit stores, so replicas share state.

Redis is an optimisation here, never a dependency: every caller keeps an in-process copy and
uses it whenever :class:`RedisLink` says Redis is down. The link fails fast while down (no
network round trip per call), logs once per outage, and pings in the background until Redis
answers again.

- Breakers: ``quarterdeck:breaker:<name>`` holds :class:`BreakerState` JSON. Updates are a
  WATCH/MULTI optimistic transaction around the same pure :func:`step` the in-process breaker
  uses, so there is one state machine, not a Python one and a Lua one. Reads that change
  nothing (the common ``allow`` on a closed circuit) do not write.
- Buckets: a hash ``{tokens, ts}`` per key, updated by one Lua script that uses Redis's own
  clock (``TIME``), so replica clock skew cannot mint tokens. The same script settles a grant
  to real usage (``adjust``: a charge that may leave the bucket in debt, or a refund).

Keys carry a TTL: an untouched breaker or bucket reverts to its fresh state anyway, so expiry
loses nothing, and a Redis restart (we run it without persistence) is the same as expiry.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, WatchError

from quarterdeck.resilience.breaker import (
    BreakerConfig,
    BreakerState,
    Event,
    SharedStateUnavailable,
    Step,
    merge,
    step,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")

BREAKER_PREFIX = "quarterdeck:breaker:"
_MAX_WATCH_RETRIES = 32

_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local ceiling = tonumber(ARGV[5])
local data = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(data[1])
local ts = tonumber(data[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
if now > ts then tokens = tokens + (now - ts) * rate else now = ts end
if tokens > capacity then tokens = capacity end
if ceiling >= 0 and tokens > ceiling then tokens = ceiling end
local wait = 0
if ARGV[6] == 'adjust' then
  tokens = math.min(capacity, math.max(-capacity, tokens - n))
elseif n > 0 then
  if tokens + 1e-9 >= n then
    tokens = math.max(0, tokens - n)
  else
    wait = (n - tokens) / rate
  end
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return tostring(wait)
"""


class RedisLink:
    """One Redis client plus whether to use it.

    ``available`` turns False on the first connection error (logged once) and True again when a
    background ping succeeds (logged once). Operations while unavailable raise
    :class:`SharedStateUnavailable` immediately.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 0.5,
        reconnect_interval_s: float = 1.0,
    ) -> None:
        self.url = url
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),  # we fall back instead of retrying in the client
        )
        self.reconnect_interval_s = reconnect_interval_s
        self.available = True
        self._reconnect: asyncio.Task[None] | None = None
        self._closed = False

    async def run(self, op: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        if not self.available or self._closed:
            raise SharedStateUnavailable(f"redis at {self._where} is unavailable")
        try:
            return await op(self.client)
        except (RedisError, OSError) as exc:
            self._lost(exc)
            raise SharedStateUnavailable(str(exc)) from exc

    @property
    def _where(self) -> str:
        kwargs = self.client.connection_pool.connection_kwargs
        return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"

    def _lost(self, exc: BaseException) -> None:
        if not self.available:
            return
        self.available = False
        log.warning("redis.unavailable", redis=self._where, error=str(exc) or type(exc).__name__)
        if self._reconnect is None or self._reconnect.done():
            self._reconnect = asyncio.get_running_loop().create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.reconnect_interval_s)
            try:
                await self.client.ping()
            except (RedisError, OSError):
                continue
            self.available = True
            log.info("redis.reconnected", redis=self._where)
            return

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._reconnect is not None:
            self._reconnect.cancel()
            try:
                await self._reconnect
            except asyncio.CancelledError:
                pass
        try:
            await self.client.aclose()
        except (RedisError, OSError):
            pass


class RedisBreakerStore:
    """A :class:`~quarterdeck.resilience.breaker.BreakerStore` over Redis."""

    def __init__(self, link: RedisLink | str, *, prefix: str = BREAKER_PREFIX) -> None:
        self.link = RedisLink(link) if isinstance(link, str) else link
        self.prefix = prefix

    @property
    def available(self) -> bool:
        return self.link.available

    async def apply(self, name: str, cfg: BreakerConfig, event: Event, now: float) -> Step:
        def change(before: BreakerState) -> tuple[BreakerState, bool]:
            return step(before, cfg, event, now)

        before, after, allowed = await self._update(name, cfg, change)
        return Step(before, after, allowed)

    async def merge(
        self, name: str, cfg: BreakerConfig, local: BreakerState, now: float
    ) -> BreakerState:
        def change(before: BreakerState) -> tuple[BreakerState, bool]:
            return merge(before, local, cfg, now), True

        return (await self._update(name, cfg, change))[1]

    async def read(self, name: str) -> BreakerState:
        """The stored state as is (no time applied); for tests and diagnostics."""
        raw = await self.link.run(lambda r: r.get(self.prefix + name))
        return BreakerState.from_json(raw)

    async def _update(
        self,
        name: str,
        cfg: BreakerConfig,
        change: Callable[[BreakerState], tuple[BreakerState, bool]],
    ) -> tuple[BreakerState, BreakerState, bool]:
        key = self.prefix + name
        ttl_ms = math.ceil(cfg.ttl_s * 1000)

        async def transaction(r: aioredis.Redis) -> tuple[BreakerState, BreakerState, bool]:
            async with r.pipeline(transaction=True) as pipe:
                for _ in range(_MAX_WATCH_RETRIES):
                    try:
                        await pipe.watch(key)
                        before = BreakerState.from_json(await pipe.get(key))
                        after, allowed = change(before)
                        if after == before:
                            await pipe.unwatch()  # type: ignore[no-untyped-call]
                        else:
                            pipe.multi()  # type: ignore[no-untyped-call]
                            pipe.set(key, after.to_json(), px=ttl_ms)
                            await pipe.execute()
                        return before, after, allowed
                    except WatchError:
                        continue
            raise SharedStateUnavailable(f"breaker {name!r}: too much contention")

        return await self.link.run(transaction)

    async def close(self) -> None:
        await self.link.close()


class RedisBucketStore:
    """A :class:`~quarterdeck.resilience.ratelimit.BucketStore` over Redis (atomic Lua)."""

    def __init__(self, link: RedisLink | str) -> None:
        self.link = RedisLink(link) if isinstance(link, str) else link
        self._script = self.link.client.register_script(_TAKE)

    @property
    def available(self) -> bool:
        return self.link.available

    async def take(
        self, key: str, capacity: float, refill_per_s: float, n: float, ceiling: float | None
    ) -> float:
        ttl_ms = math.ceil((capacity / refill_per_s + 60.0) * 1000)
        args: list[str | int] = [
            repr(float(capacity)),
            repr(float(refill_per_s)),
            repr(float(n)),
            ttl_ms,
            repr(-1.0 if ceiling is None else float(ceiling)),
        ]

        async def run(r: aioredis.Redis) -> float:
            result = await self._script(keys=[key], args=args, client=r)
            return float(result)

        return await self.link.run(run)

    async def adjust(self, key: str, capacity: float, refill_per_s: float, delta: float) -> None:
        """Charge (positive) or refund (negative) ``delta`` at once, as
        :meth:`~quarterdeck.resilience.ratelimit.TokenBucket.adjust` does (debt down to minus
        one capacity)."""
        ttl_ms = math.ceil((capacity / refill_per_s + 60.0) * 1000)
        args: list[str | int] = [
            repr(float(capacity)),
            repr(float(refill_per_s)),
            repr(float(delta)),
            ttl_ms,
            repr(-1.0),
            "adjust",
        ]

        async def run(r: aioredis.Redis) -> None:
            await self._script(keys=[key], args=args, client=r)

        await self.link.run(run)

    async def close(self) -> None:
        await self.link.close()


def redis_stores(url: str, **link_options: float) -> tuple[RedisBreakerStore, RedisBucketStore]:
    """Both stores over one connection pool (close either, or the link, to close both)."""
    link = RedisLink(url, **link_options)
    return RedisBreakerStore(link), RedisBucketStore(link)
