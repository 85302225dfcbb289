"""Per-key and per-tenant request limits for authenticated callers.

Limits are shared by all replicas through Redis when ``REDIS_URL`` is set
(:class:`SharedQuotaStore`). When Redis is absent, down or slow, each replica decides alone
with in-process buckets, so a Redis outage never fails a request; during it the fleet as a
whole may admit up to (replicas x limit). Throttling is logged as ``auth.rate_limited`` with the
key id and tenant, at most once per key every ``log_every_s`` (with how many were not logged),
so a client hammering away cannot flood the log.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from quarterdeck.resilience.breaker import SharedStateUnavailable
from quarterdeck.resilience.ratelimit import TokenBucket
from quarterdeck.security.auth.principal import Principal
from quarterdeck.security.auth.quota import Decision, Quota, decide
from quarterdeck.security.auth.shared_quota import SharedQuotaStore

log = structlog.get_logger(__name__)


class RequestLimiter:
    def __init__(
        self,
        key_per_minute: float,
        tenant_per_minute: float,
        *,
        store: SharedQuotaStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        log_every_s: float = 10.0,
    ) -> None:
        """A limit of 0 means unlimited (that bucket is not kept at all)."""
        self.key_per_minute = key_per_minute
        self.tenant_per_minute = tenant_per_minute
        self.store = store
        self._clock = clock
        self._local: dict[str, TokenBucket] = {}
        self._log_every_s = log_every_s
        self._throttle_log: dict[str, tuple[float, int]] = {}

    @property
    def enabled(self) -> bool:
        return self.key_per_minute > 0 or self.tenant_per_minute > 0

    @property
    def shared(self) -> bool:
        return self.store is not None and self.store.available

    def _buckets(self, principal: Principal) -> list[tuple[str, str, float]]:
        wanted = [
            ("key", f"key:{principal.key_id}", self.key_per_minute),
            ("tenant", f"tenant:{principal.tenant}", self.tenant_per_minute),
        ]
        return [b for b in wanted if b[2] > 0]

    async def hit(self, principal: Principal) -> Decision | None:
        """Count one request; None when no limit applies. Never raises for Redis trouble."""
        buckets = self._buckets(principal)
        if not buckets:
            return None
        shared = False
        if self.store is not None and self.store.available:
            try:
                allowed, left = await self.store.take([(name, lim) for _, name, lim in buckets])
                shared = True
            except SharedStateUnavailable:
                allowed, left = self._take_local(buckets)
        else:
            allowed, left = self._take_local(buckets)
        decision = Decision(
            allowed,
            tuple(
                Quota(scope, lim, tokens)
                for (scope, _, lim), tokens in zip(buckets, left, strict=True)
            ),
        )
        if not allowed:
            self._log_throttled(principal, decision, shared)
        return decision

    def _take_local(self, buckets: list[tuple[str, str, float]]) -> tuple[bool, list[float]]:
        now = self._clock()
        local = [self._bucket(name, lim) for _, name, lim in buckets]
        before = [
            Quota(scope, lim, b.available(now))
            for (scope, _, lim), b in zip(buckets, local, strict=True)
        ]
        allowed, after = decide(before)
        for bucket, tokens in zip(local, after, strict=True):
            bucket.tokens = tokens
        return allowed, after

    def _bucket(self, name: str, limit: float) -> TokenBucket:
        bucket = self._local.get(name)
        if bucket is None:
            bucket = self._local[name] = TokenBucket.per_minute(limit)
        return bucket

    def _log_throttled(self, principal: Principal, decision: Decision, shared: bool) -> None:
        now = self._clock()
        last, suppressed = self._throttle_log.get(principal.key_id, (None, 0))
        if last is not None and now - last < self._log_every_s:
            self._throttle_log[principal.key_id] = (last, suppressed + 1)
            return
        self._throttle_log[principal.key_id] = (now, 0)
        log.warning(
            "auth.rate_limited",
            key_id=principal.key_id,
            tenant=principal.tenant,
            limited_by=decision.limited_by,
            retry_after_s=decision.retry_after_s,
            shared=shared,
            suppressed=suppressed,
        )

    async def aclose(self) -> None:
        if self.store is not None:
            await self.store.close()
