"""Client-side rate limits: wait for capacity here rather than collect 429s from the provider.

:class:`TokenBucket` is pure (time is an argument). It starts from configured limits and
tightens itself from the ``anthropic-ratelimit-*`` response headers, which tell what the
organisation's real limits are, how much of them is left, and (RFC 3339) when the bucket will
be full again. Headers only ever *tighten*: a configured limit below the provider's is kept on
purpose (the API key may be shared with other systems).

:class:`SharedBucket` puts one bucket in a :class:`BucketStore` (Redis, atomic Lua; see
:mod:`quarterdeck.resilience.redis_backend`) so replicas draw from one budget, and falls back
to its in-process bucket while the store is unreachable. :class:`ProviderLimiter` holds a
provider's buckets (requests, tokens, input-tokens, output-tokens per minute) and has the
async :meth:`~ProviderLimiter.acquire` the executor awaits before each call: it queues (sleeps)
until capacity is there and never fails.

``now`` is Unix seconds, so RFC 3339 reset times convert directly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import structlog

from quarterdeck.resilience.breaker import SharedStateUnavailable

log = structlog.get_logger(__name__)

PERIOD_S = 60.0
"""Anthropic's limits are per minute and replenish continuously."""
FAMILIES = ("requests", "tokens", "input-tokens", "output-tokens")
_EPS = 1e-9


@dataclass(frozen=True)
class HeaderLimit:
    """One ``anthropic-ratelimit-<family>-*`` triple; missing or unparseable parts are None."""

    limit: float | None
    remaining: float | None
    reset_at: float | None
    """Unix seconds at which the bucket will be full again."""


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value >= 0 else None


def parse_rfc3339(text: str | None) -> float | None:
    """An RFC 3339 timestamp as Unix seconds; naive times are taken as UTC."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def parse_ratelimit_headers(headers: Mapping[str, str]) -> dict[str, HeaderLimit]:
    """The ``anthropic-ratelimit-*`` families present in ``headers`` (case-insensitive)."""
    lower = {k.lower(): v for k, v in headers.items()}
    found: dict[str, HeaderLimit] = {}
    for family in FAMILIES:
        prefix = f"anthropic-ratelimit-{family}-"
        parts = [lower.get(prefix + p) for p in ("limit", "remaining", "reset")]
        if any(p is not None for p in parts):
            found[family] = HeaderLimit(
                _number(parts[0]), _number(parts[1]), parse_rfc3339(parts[2])
            )
    return found


@dataclass
class TokenBucket:
    """A continuously refilling bucket. ``take`` never blocks: it grants or says how long to wait.

    ``family`` picks which ``anthropic-ratelimit-<family>-*`` headers
    :meth:`update_from_headers` reads.
    """

    capacity: float
    refill_per_s: float
    family: str = "requests"
    tokens: float = -1.0
    """Current tokens; negative means "start full"."""
    updated: float | None = None
    slow_rate: float = 0.0
    slow_until: float = 0.0
    configured_capacity: float = field(init=False)
    configured_refill: float = field(init=False)

    def __post_init__(self) -> None:
        if self.capacity <= 0 or self.refill_per_s <= 0:
            raise ValueError("capacity and refill_per_s must be positive")
        self.configured_capacity = self.capacity
        self.configured_refill = self.refill_per_s
        if self.tokens < 0:
            self.tokens = self.capacity

    @classmethod
    def per_minute(cls, limit: float, family: str = "requests") -> TokenBucket:
        return cls(limit, limit / PERIOD_S, family)

    def _refill(self, now: float) -> None:
        if self.updated is None:
            self.updated = now
            return
        if now <= self.updated:
            return
        t = self.updated
        if self.slow_until > t:  # the header-implied rate holds until the provider's reset
            seg = min(now, self.slow_until) - t
            self.tokens += seg * self.slow_rate
            t += seg
        self.tokens = min(self.capacity, self.tokens + (now - t) * self.refill_per_s)
        self.updated = now

    def available(self, now: float) -> float:
        self._refill(now)
        return self.tokens

    def take(self, n: float, now: float) -> float:
        """Take ``n`` tokens: 0.0 if granted, else the seconds until they would be there.

        A refusal takes nothing (the caller waits and asks again). ``n`` above the capacity is
        clamped to it, so an oversized request waits for a full bucket instead of forever.
        """
        n = min(max(n, 0.0), self.capacity)
        self._refill(now)
        if self.tokens + _EPS >= n:
            self.tokens = max(0.0, self.tokens - n)
            return 0.0
        need = n - self.tokens
        wait = 0.0
        if self.slow_until > now:
            slow_gain = (self.slow_until - now) * self.slow_rate
            if slow_gain >= need:
                return need / self.slow_rate
            need -= slow_gain
            wait = self.slow_until - now
        return wait + need / self.refill_per_s

    def adjust(self, delta: float, now: float) -> None:
        """Settle a grant to what was really used: take ``delta`` more (positive) or give it
        back (negative), at once and without waiting.

        A charge may leave the bucket in debt (below zero, at most one capacity), which the next
        :meth:`take` waits out: the tokens were used, so the limit must see them. A refund never
        fills the bucket past its capacity."""
        self._refill(now)
        self.tokens = min(self.capacity, max(-self.capacity, self.tokens - delta))

    def update(
        self, limit: float | None, remaining: float | None, reset_at: float | None, now: float
    ) -> None:
        """Tighten from what the provider reported (never loosen past the configured limits)."""
        self._refill(now)
        if limit:
            self.capacity = min(self.configured_capacity, limit)
            self.refill_per_s = min(self.configured_refill, limit / PERIOD_S)
        self.tokens = min(self.tokens, self.capacity)
        if remaining is None:
            return
        self.tokens = min(self.tokens, remaining)
        if reset_at is not None and reset_at > now and remaining < self.capacity:
            # The provider says the bucket is full at reset_at; if that is slower than our
            # nominal refill, follow it until then.
            implied = (self.capacity - remaining) / (reset_at - now)
            if implied < self.refill_per_s:
                self.slow_rate, self.slow_until = implied, reset_at

    def update_from_headers(self, headers: Mapping[str, str], now: float) -> bool:
        """Apply this bucket's family of rate-limit headers; True if any were present."""
        found = parse_ratelimit_headers(headers).get(self.family)
        if found is None:
            return False
        self.update(found.limit, found.remaining, found.reset_at, now)
        return True


class BucketStore(Protocol):
    """Shared buckets. ``take`` is atomic and, like :meth:`TokenBucket.take`, returns seconds
    to wait (0 when granted); ``ceiling`` lowers the stored tokens to at most that first.
    Raises :class:`SharedStateUnavailable` when unreachable."""

    @property
    def available(self) -> bool: ...

    async def take(
        self, key: str, capacity: float, refill_per_s: float, n: float, ceiling: float | None
    ) -> float: ...

    async def adjust(self, key: str, capacity: float, refill_per_s: float, delta: float) -> None:
        """Atomically :meth:`TokenBucket.adjust` the stored bucket."""

    async def close(self) -> None: ...


Sleep = Callable[[float], Awaitable[None]]


class SharedBucket:
    """One bucket, in ``store`` when reachable, else in-process.

    Without a reachable store each process uses its own bucket, charged ``n / local_share``:
    set ``local_share`` to 1/processes to keep them inside the limit together (the runtime uses
    1/``worker_processes``, the processes one ``up`` starts; the default 1.0 lets each use the
    whole limit, which the provider's 429s then correct).
    """

    def __init__(
        self,
        key: str,
        bucket: TokenBucket,
        *,
        store: BucketStore | None = None,
        local_share: float = 1.0,
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
        max_sleep_s: float = 5.0,
    ) -> None:
        if not 0 < local_share <= 1:
            raise ValueError("local_share must be in (0, 1]")
        self.key = key
        self.bucket = bucket
        self.store = store
        self.local_share = local_share
        self._clock = clock
        self._sleep = sleep
        self._max_sleep = max_sleep_s
        self._queue = asyncio.Lock()
        self._degraded = False

    @property
    def shared(self) -> bool:
        return self.store is not None and self.store.available

    async def take(self, n: float = 1.0) -> float:
        """One non-blocking attempt: 0.0 if granted, else seconds to wait."""
        return await self._take(n, None)

    async def _take(self, n: float, ceiling: float | None) -> float:
        now = self._clock()
        if self.store is not None and self.store.available:
            try:
                wait = await self.store.take(
                    self.key,
                    self.bucket.capacity,
                    self.bucket.refill_per_s,
                    min(n, self.bucket.capacity),
                    ceiling,
                )
            except SharedStateUnavailable as exc:
                if not self._degraded:
                    log.warning("ratelimit.shared_state_unavailable", key=self.key, error=str(exc))
                self._degraded = True
            else:
                if self._degraded:
                    log.info("ratelimit.shared_state_restored", key=self.key)
                self._degraded = False
                return wait
        return self.bucket.take(n / self.local_share, now)

    async def acquire(self, n: float = 1.0) -> float:
        """Wait until ``n`` tokens are granted; returns the seconds spent waiting.

        Waiters in this process queue first-come first-served, so a large request is not
        starved by a stream of small ones. Sleeps are capped at ``max_sleep_s`` so a change of
        store (Redis lost or back) or of limits is noticed promptly.
        """
        waited = 0.0
        async with self._queue:
            while True:
                wait = await self.take(n)
                if wait <= 0:
                    return waited
                wait = min(wait, self._max_sleep)
                await self._sleep(wait)
                waited += wait

    async def adjust(self, delta: float) -> None:
        """Charge (positive) or refund (negative) ``delta`` tokens now: the settlement of a
        grant to real usage. In the store when reachable, else in the local bucket (charged
        ``delta / local_share``, as :meth:`take` charges)."""
        if delta == 0:
            return
        if self.store is not None and self.store.available:
            try:
                await self.store.adjust(
                    self.key, self.bucket.capacity, self.bucket.refill_per_s, delta
                )
            except SharedStateUnavailable as exc:
                if not self._degraded:
                    log.warning("ratelimit.shared_state_unavailable", key=self.key, error=str(exc))
                self._degraded = True
            else:
                return
        self.bucket.adjust(delta / self.local_share, self._clock())

    async def update(self, found: HeaderLimit) -> None:
        """Tighten limits from response headers, locally and (``remaining``) in the store."""
        self.bucket.update(found.limit, found.remaining, found.reset_at, self._clock())
        if found.remaining is not None and self.store is not None:
            await self._take(0.0, found.remaining)


@dataclass(frozen=True)
class Grant:
    """What :meth:`ProviderLimiter.reserve` took: tokens per configured token family (the
    amounts to settle against real usage) and the seconds it waited for them."""

    held: dict[str, float]
    waited_s: float


class ProviderLimiter:
    """A provider's buckets: requests per minute plus whichever token limits are configured.

    Keys are ``quarterdeck:ratelimit:<provider>:<family>``, so every replica using the same
    provider (and API key) shares them. A call reserves its request and estimated tokens before
    it is made (:meth:`reserve`) and settles them to its real usage after (:meth:`adjust`; see
    :mod:`quarterdeck.resilience.tokens` for what is counted).
    """

    def __init__(
        self,
        provider: str,
        *,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        input_tokens_per_minute: float | None = None,
        output_tokens_per_minute: float | None = None,
        store: BucketStore | None = None,
        local_share: float = 1.0,
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.provider = provider
        limits = {
            "requests": requests_per_minute,
            "tokens": tokens_per_minute,
            "input-tokens": input_tokens_per_minute,
            "output-tokens": output_tokens_per_minute,
        }
        self.buckets = {
            family: SharedBucket(
                f"quarterdeck:ratelimit:{provider}:{family}",
                TokenBucket.per_minute(limit, family),
                store=store,
                local_share=local_share,
                clock=clock,
                sleep=sleep,
            )
            for family, limit in limits.items()
            if limit
        }
        self.waits: dict[str, float] = dict.fromkeys(self.buckets, 0.0)
        """Seconds spent waiting for each bucket, in total: which limit paces the calls."""

    async def reserve(self, tokens: Mapping[str, float]) -> Grant:
        """Wait for one request and ``tokens`` (family -> amount); returns what was taken of
        each configured token family, for :meth:`adjust` once the real usage is known.

        An amount above a bucket's capacity takes the whole bucket (see :meth:`TokenBucket.take`)
        and is held as that, so the settlement charges the rest.
        """
        held: dict[str, float] = {}
        total = 0.0
        for family, bucket in self.buckets.items():
            n = 1.0 if family == "requests" else max(0.0, float(tokens.get(family, 0)))
            if n > 0:
                waited = await bucket.acquire(n)
                self.waits[family] += waited
                total += waited
            if family != "requests":
                held[family] = min(n, bucket.bucket.capacity)
        return Grant(held, total)

    async def adjust(self, deltas: Mapping[str, float]) -> None:
        """Charge (positive) or refund (negative) tokens per family, without waiting."""
        for family, delta in deltas.items():
            bucket = self.buckets.get(family)
            if bucket is not None and delta:
                await bucket.adjust(delta)

    async def acquire(self, input_tokens: int = 0, output_tokens: int = 0) -> float:
        """Wait for one request and the given tokens; returns seconds waited.

        ``output_tokens`` is an estimate (e.g. ``max_tokens``, or 0): the real count is known
        only afterwards (:meth:`adjust` settles it; the next response's headers correct too).
        """
        grant = await self.reserve(
            {
                "tokens": input_tokens + output_tokens,
                "input-tokens": input_tokens,
                "output-tokens": output_tokens,
            }
        )
        return grant.waited_s

    async def update_from_headers(self, headers: Mapping[str, str]) -> None:
        """Tighten every configured bucket from a response's ``anthropic-ratelimit-*``."""
        for family, found in parse_ratelimit_headers(headers).items():
            bucket = self.buckets.get(family)
            if bucket is not None:
                await bucket.update(found)
