"""Resilience for calls to model providers and other dependencies.

- :mod:`.retry`: whether and when to retry a failed call (pure policy).
- :mod:`.breaker`: circuit breakers, and the :class:`Breakers` registry that shares them.
- :mod:`.ratelimit`: client-side token buckets fed by ``anthropic-ratelimit-*`` headers.
- :mod:`.redis_backend`: the Redis stores that let replicas share breakers and buckets.

The Redis classes are imported lazily, so importing the pure policies never imports redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quarterdeck.resilience.breaker import (
    DATABASE,
    REDIS,
    BreakerConfig,
    Breakers,
    BreakerState,
    BreakerStore,
    CircuitBreaker,
    CircuitOpenError,
    CircuitStatus,
    InMemoryBreakerStore,
    SharedStateUnavailable,
    breaker_name,
)
from quarterdeck.resilience.ratelimit import (
    BucketStore,
    ProviderLimiter,
    SharedBucket,
    TokenBucket,
    parse_ratelimit_headers,
)
from quarterdeck.resilience.retry import GiveUp, RetryAt, RetryPolicy, classify, is_spend_limit

if TYPE_CHECKING:
    from quarterdeck.resilience.redis_backend import (
        RedisBreakerStore,
        RedisBucketStore,
        RedisLink,
        redis_stores,
    )

_LAZY = {"RedisBreakerStore", "RedisBucketStore", "RedisLink", "redis_stores"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from quarterdeck.resilience import redis_backend

        return getattr(redis_backend, name)
    raise AttributeError(name)


__all__ = [
    "DATABASE",
    "REDIS",
    "BreakerConfig",
    "BreakerState",
    "BreakerStore",
    "Breakers",
    "BucketStore",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitStatus",
    "GiveUp",
    "InMemoryBreakerStore",
    "ProviderLimiter",
    "RedisBreakerStore",
    "RedisBucketStore",
    "RedisLink",
    "RetryAt",
    "RetryPolicy",
    "SharedBucket",
    "SharedStateUnavailable",
    "TokenBucket",
    "breaker_name",
    "classify",
    "is_spend_limit",
    "parse_ratelimit_headers",
    "redis_stores",
]
