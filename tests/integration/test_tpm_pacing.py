"""A burst of model calls is paced by the tokens-per-minute limit, not the requests limit, and
each call is settled to the tokens it really used: through the resilient caller, the real
anthropic SDK against the Messages API stand-in, and the real limiter, in-process and shared
through a real redis-server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from quarterdeck.chaos.messages_api import Conversation, MessagesAPIServer
from quarterdeck.config import load_settings
from quarterdeck.providers.factory import build_provider
from quarterdeck.providers.types import Message, ModelRequest, TextBlock
from quarterdeck.resilience import ProviderLimiter
from quarterdeck.resilience.calls import ResilientCaller
from quarterdeck.resilience.redis_backend import redis_stores
from quarterdeck.resilience.tokens import after_call, estimate_input_tokens
from tests.support.redis_server import redis_server  # noqa: F401

pytest_plugins = ["tests.support.fixtures"]
pytestmark = pytest.mark.asyncio

TPM = 60_000.0  # 1,000 tokens per second
RPM = 6_000.0  # 100 requests per second: never the limit here
BURST = 4
REAL_INPUT = 600  # what the stand-in reports per call, well above the ~260-token estimate


def make_request(i: int) -> ModelRequest:
    return ModelRequest(
        model="claude-sonnet-4-5",
        messages=[Message(role="user", content=[TextBlock(f"call {i:03d} " + "y" * 1_000)])],
        max_tokens=64,
    )


@pytest.mark.parametrize("backend", ["in-process", "redis"])
async def test_a_burst_is_paced_by_tokens_per_minute_and_settled_to_real_usage(
    backend: str,
    messages_api: MessagesAPIServer,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    store = link = None
    if backend == "redis":
        server = request.getfixturevalue("redis_server")
        _, store = redis_stores(server.url)
        link = store.link
    headers = messages_api.rate_limit_headers
    messages_api.rate_limit_headers = {}  # the stand-in's 50 rpm would otherwise tighten RPM
    messages_api.conversation = Conversation(
        turns=1, latency_s=0.0, input_tokens=REAL_INPUT, output_tokens=10
    )
    settings = load_settings(
        None,
        data_dir=tmp_path,
        provider="anthropic",
        anthropic_api_key="sk-ant-test",
        anthropic_base_url=messages_api.base_url,
    )
    provider = build_provider(settings)
    limiter = ProviderLimiter(
        "anthropic", requests_per_minute=RPM, tokens_per_minute=TPM, store=store
    )
    caller = ResilientCaller(provider, limiter=limiter)
    try:
        # The bucket starts full; empty it so the burst is paced from the first call.
        await limiter.buckets["tokens"].acquire(TPM)
        estimates = [estimate_input_tokens(make_request(i)) for i in range(BURST + 1)]
        assert all(250 <= e <= 270 for e in estimates)

        started = time.monotonic()
        results = await asyncio.gather(
            *(caller.call("coder", make_request(i)) for i in range(BURST))
        )
        burst_s = time.monotonic() - started
        assert limiter.waits["requests"] == 0.0, "never paced by requests per minute"
        # Concurrent calls each wait for their estimate: about sum(estimates) / 1,000 s.
        assert burst_s >= 0.85 * sum(estimates[:BURST]) / 1_000
        assert burst_s < 3 * sum(estimates[:BURST]) / 1_000 + 1.0

        # Each call was settled to what it used (600 in + 10 out, not its ~260 estimate): the
        # calls after it wait out the difference, so the burst and one more call take as long
        # as their real tokens at 1,000/s (estimates alone would take half as long).
        used = [after_call(r.response.model, r.response.usage).combined for r in results]
        assert used == [REAL_INPUT + 10] * BURST
        await caller.call("coder", make_request(BURST))
        total_s = time.monotonic() - started
        expected = (sum(used) + estimates[BURST]) / 1_000
        assert total_s == pytest.approx(expected, rel=0.15)
        assert total_s > 1.5 * sum(estimates) / 1_000
        assert limiter.waits["requests"] == 0.0
    finally:
        messages_api.rate_limit_headers = headers
        await provider.aclose()
        if link is not None:
            await link.close()
