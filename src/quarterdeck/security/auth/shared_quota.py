"""Request quotas shared by every replica through Redis, one atomic Lua call per request.

The resilience layer's bucket store answers "how long to wait", which is what a client that
queues needs. A server that answers 429 instead needs how many tokens are *left* (for
``RateLimit-Remaining``) and must take from the key's and the tenant's buckets together or not
at all, so this is its own small script; it reuses :class:`RedisLink` for connections,
fail-fast while Redis is down, and reconnection.

The script uses Redis's clock (``TIME``), so replica clock skew cannot mint tokens. Both keys
carry the ``{apilimits}`` hash tag so a Redis Cluster puts them in one slot (a multi-key
script requires it). Keys expire once a bucket would be full again anyway, so nothing
accumulates and a Redis restart (no persistence) only forgives some requests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import redis.asyncio as aioredis

from quarterdeck.resilience.redis_backend import RedisLink
from quarterdeck.security.auth.quota import PERIOD_S

KEY_PREFIX = "quarterdeck:{apilimits}:"

_TAKE_ALL = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local n = #KEYS
local tokens = {}
local stamps = {}
local ok = 1
for i = 1, n do
  local capacity = tonumber(ARGV[i + 2])
  local data = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local tk = tonumber(data[1])
  local ts = tonumber(data[2])
  if tk == nil or ts == nil then
    tk = capacity
    ts = now
  end
  if now > ts then
    tk = tk + (now - ts) * capacity / period
    ts = now
  end
  if tk > capacity then tk = capacity end
  tokens[i] = tk
  stamps[i] = ts
  if tk + 1e-9 < 1 then ok = 0 end
end
local out = {ok}
for i = 1, n do
  if ok == 1 then tokens[i] = math.max(0, tokens[i] - 1) end
  redis.call('HSET', KEYS[i], 'tokens', tostring(tokens[i]), 'ts', tostring(stamps[i]))
  redis.call('PEXPIRE', KEYS[i], ttl)
  out[i + 1] = tostring(tokens[i])
end
return out
"""


class SharedQuotaStore:
    """Takes one request from several buckets in Redis, all or none."""

    def __init__(self, link: RedisLink | str, *, prefix: str = KEY_PREFIX) -> None:
        self.link = RedisLink(link) if isinstance(link, str) else link
        self.prefix = prefix
        self._script = self.link.client.register_script(_TAKE_ALL)

    @property
    def available(self) -> bool:
        return self.link.available

    async def take(self, buckets: Sequence[tuple[str, float]]) -> tuple[bool, list[float]]:
        """(granted, tokens left per bucket) for ``(name, per-minute limit)`` pairs.

        Raises :class:`~quarterdeck.resilience.breaker.SharedStateUnavailable` when Redis is
        unreachable (at once, while it is known to be down).
        """
        keys = [self.prefix + name for name, _ in buckets]
        # An empty bucket is full again after one period whatever its size; a minute more
        # covers a slow script.
        ttl_ms = math.ceil((PERIOD_S + 60.0) * 1000)
        args: list[str | int] = [ttl_ms, repr(PERIOD_S)]
        args += [repr(float(limit)) for _, limit in buckets]

        async def run(r: aioredis.Redis) -> tuple[bool, list[float]]:
            result = await self._script(keys=keys, args=args, client=r)
            return bool(int(result[0])), [float(v) for v in result[1:]]

        return await self.link.run(run)

    async def close(self) -> None:
        await self.link.close()
