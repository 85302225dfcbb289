"""Feeds provider calls and failures into the Prometheus metrics.

One place decides how a call is counted, so the agent loop, the proxy and the simulated provider
all produce the same series. Model names go through :func:`metrics.model` (configured models and
the price table's, else ``other``) and error types through :func:`metrics.bounded`, because they
come from remote servers and user input, and an unbounded label value is a cardinality leak.
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
    *,
    unpriced: bool = False,
) -> None:
    """Count tokens, cost, latency and, for streamed calls, time to first token.

    A model without a price of its own (``unpriced``: its cost is the fallback model's
    estimate) or with no cost at all (``cost`` None) also counts its tokens in
    UNPRICED_TOKENS, so the gap in exact pricing stays visible; an estimated cost is added to
    the cost series like any other, since budgets charge it."""
    label = metrics.model(model)
    tokens = usage.total_tokens
    if tokens:
        metrics.child(metrics.TOKENS, agent_type, label).inc(tokens)
        if cost is None or unpriced:
            metrics.child(metrics.UNPRICED_TOKENS, agent_type, label).inc(tokens)
    if cost is not None and cost > 0:
        metrics.child(metrics.COST, agent_type, label).inc(float(cost))
    metrics.child(metrics.PROVIDER_LATENCY, provider, label).observe(max(0.0, latency_s))
    if ttft_s is not None:
        metrics.child(metrics.PROVIDER_TTFT, provider, label).observe(max(0.0, ttft_s))


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
