"""Builds the resilience layer of one process from its settings (called by ``runtime.py``).

Why here: the breakers are shared by the workers' calls and the gateway's, and both the
breakers' state and the rate limits' buckets live in Redis when ``REDIS_URL`` is set (else in
the process); which store, which limits and which retry schedule is a decision about this
layer, so it is made next to it rather than in the composition root.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from quarterdeck.config import Settings
from quarterdeck.providers.pricing import Pricing
from quarterdeck.providers.types import Provider
from quarterdeck.resilience import (
    BreakerConfig,
    Breakers,
    BucketStore,
    ProviderLimiter,
    RetryPolicy,
)
from quarterdeck.resilience.calls import ResilientCaller

__all__ = ["build_breakers", "build_caller"]


def build_breakers(
    settings: Settings,
) -> tuple[Breakers, BucketStore | None, Callable[[], Awaitable[None]] | None]:
    """The circuit breakers, the rate limits' shared bucket store (None: in-process), and what
    closes the Redis connection when there is one."""
    s = settings
    breaker_store, buckets, close = None, None, None
    if s.redis_url is not None:
        from quarterdeck.resilience import redis_stores

        breaker_store, buckets = redis_stores(s.redis_url.get_secret_value())
        close = breaker_store.close
    breakers = Breakers(
        breaker_store,
        config=BreakerConfig(
            failure_threshold=s.breaker_failure_threshold,
            open_for_s=s.breaker_open_for,
            window_s=s.breaker_window,
        ),
    )
    return breakers, buckets, close


def build_caller(
    settings: Settings,
    provider: Provider,
    pricing: Pricing,
    breakers: Breakers,
    buckets: BucketStore | None,
) -> ResilientCaller:
    """Retries, breakers and rate limits (a worker process's share of each per-minute limit);
    the caller also prices and counts every provider call (``pricing``)."""
    s = settings
    limiter = None
    per_minute = (
        s.provider_requests_per_minute,
        s.provider_tokens_per_minute,
        s.provider_input_tokens_per_minute,
        s.provider_output_tokens_per_minute,
    )
    if any(limit is not None for limit in per_minute):
        limiter = ProviderLimiter(
            provider.name,
            requests_per_minute=s.provider_requests_per_minute,
            tokens_per_minute=s.provider_tokens_per_minute,
            input_tokens_per_minute=s.provider_input_tokens_per_minute,
            output_tokens_per_minute=s.provider_output_tokens_per_minute,
            store=buckets,
            local_share=1.0 / s.worker_processes,
        )
    policy = RetryPolicy(
        schedule=tuple(s.retry_schedule),
        max_attempts=s.retry_max_attempts,
        total_budget_s=s.retry_budget,
    )
    return ResilientCaller(
        provider,
        streaming=provider.name != "simulated",
        policy=policy,
        breakers=breakers,
        limiter=limiter,
        fallbacks=s.model_fallbacks,
        context_fallbacks=s.context_fallbacks,
        pricing=pricing,
    )
