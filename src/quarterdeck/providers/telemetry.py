"""Feeds provider calls and failures into the Prometheus metrics.

One place decides how a call is counted, so the agent loop, the proxy and the simulated provider
all produce the same series. Label values go through :func:`metrics.bounded` because model names
and error types come from remote servers and user config, and an unbounded label value is a
cardinality leak.
"""

from __future__ import annotations

from decimal import Decimal

from quarterdeck import metrics
from quarterdeck.exceptions import ProviderError
from quarterdeck.providers.types import Usage

SEVERITIES = ("low", "medium", "high", "critical")


def record_call(
    agent_type: str,
    provider: str,
    model: str,
    usage: Usage,
    cost: Decimal | None,
    latency_s: float,
    ttft_s: float | None = None,
) -> None:
    """Count tokens, cost (only when known; unknown-cost tokens go to UNPRICED_TOKENS so the gap
    is visible rather than a silent zero), latency and, for streamed calls, time to first token."""
    tokens = usage.total_tokens
    if tokens:
        metrics.child(metrics.TOKENS, agent_type, model).inc(tokens)
    if cost is None:
        if tokens:
            metrics.child(metrics.UNPRICED_TOKENS, agent_type, model).inc(tokens)
    elif cost > 0:
        metrics.child(metrics.COST, agent_type, model).inc(float(cost))
    metrics.child(metrics.PROVIDER_LATENCY, provider, model).observe(max(0.0, latency_s))
    if ttft_s is not None:
        metrics.child(metrics.PROVIDER_TTFT, provider, model).observe(max(0.0, ttft_s))


def severity(error: ProviderError) -> str:
    """How loudly a failure should page: bad credentials stop every run (critical); server
    faults and timeouts mean the provider is unhealthy (high); rate limiting and overload are
    expected under load and retried (medium); the rest are one request's problem (low)."""
    status = error.status_code
    if status in (401, 403) or error.error_type in ("authentication_error", "permission_error"):
        return "critical"
    if status in (429, 529) or error.overloaded or error.error_type == "rate_limit_error":
        return "medium"
    if (status is not None and status >= 500) or error.error_type in (
        "timeout",
        "timeout_error",
        "connection_error",
        "api_error",
    ):
        return "high"
    return "low"


def record_error(agent_type: str, error: ProviderError) -> None:
    metrics.ERRORS.labels(
        agent_type=metrics.bounded(agent_type),
        error_type=metrics.bounded(error.error_type),
        severity=severity(error),
    ).inc()
