"""Many keys of one tenant, all at once, through the gateway of a real ``quarterdeck up``: the
tenant's budget is never overspent, and every refused call says why in Anthropic's envelope.

A check-then-call budget admits every one of these concurrent calls (each sees the same unspent
budget); only a reservation taken before the call, under the budget row's lock, keeps the total
under the limit.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import pytest

from quarterdeck.chaos.messages_api import MessagesAPIServer, make_usage, message, text
from tests.e2e.conftest import Deployment

pytestmark = pytest.mark.e2e

ADMIN = "bootstrap-admin-for-the-gateway-budget-0123456789"
MODEL = "claude-sonnet-4-5"
LIMIT = Decimal("0.20")
# Each answer bills 1,000 input and 1,000 output tokens: $0.003 + $0.015 = $0.018 at Sonnet 4.5.
PER_CALL = Decimal("0.018")
KEYS, CALLS_PER_KEY = 10, 5
PROMPT = "Summarise this log line by line. " * 125  # ~4,000 characters: ~1,000 tokens of text


@pytest.fixture
def upstream() -> Any:
    server = MessagesAPIServer().start()
    yield server
    server.stop()


def _key(url: str, name: str) -> str:
    created = httpx.post(
        f"{url}/v1/admin/keys",
        json={"name": name, "role": "submitter", "tenant": "thrifty"},
        headers={"authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    return str(created.json()["api_key"])


async def _call(url: str, key: str) -> int:
    client = anthropic.AsyncAnthropic(base_url=url, api_key=key, max_retries=0, timeout=60)
    try:
        await client.messages.create(
            model=MODEL, max_tokens=1000, messages=[{"role": "user", "content": PROMPT}]
        )
        return 200
    except anthropic.APIStatusError as exc:
        assert exc.status_code == 429, exc
        assert exc.body["error"]["type"] == "billing_error", exc.body
        assert exc.response.headers["x-should-retry"] == "false"
        return 429
    finally:
        await client.close()


def test_concurrent_calls_from_many_keys_never_spend_past_the_tenant_budget(
    deployment: Deployment, upstream: MessagesAPIServer
) -> None:
    deployment.start(
        "up",
        QUARTERDECK_AUTH_ENABLED="true",
        QUARTERDECK_ADMIN_API_KEY=ADMIN,
        QUARTERDECK_GATEWAY_UPSTREAM_URL=upstream.base_url,
        QUARTERDECK_GATEWAY_UPSTREAM_API_KEY="sk-upstream",
    )
    url = deployment.url
    upstream.script(
        [
            message(
                text("ok"), usage=make_usage(input_tokens=1000, output_tokens=1000), model=MODEL
            )
            for _ in range(KEYS * CALLS_PER_KEY)
        ]
    )
    put = httpx.put(
        f"{url}/v1/tenants/thrifty/budget",
        json={"daily_usd": float(LIMIT)},
        headers={"authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )
    assert put.status_code == 200, put.text
    keys = [_key(url, f"k{i}") for i in range(KEYS)]

    async def everyone() -> list[int]:
        return await asyncio.gather(*(_call(url, k) for k in keys for _ in range(CALLS_PER_KEY)))

    statuses = asyncio.run(everyone())

    admitted = statuses.count(200)
    assert admitted >= 1 and statuses.count(429) == len(statuses) - admitted, statuses
    assert len(upstream.requests) == admitted  # a refused call never reached the upstream
    usage = _usage(url)
    assert usage["calls"] == len(statuses)
    spent = Decimal(str(usage["cost_usd"]))
    assert spent == PER_CALL * admitted
    assert spent <= LIMIT, f"{admitted} calls spent ${spent}, past the ${LIMIT} budget"


def _usage(url: str) -> dict[str, Any]:
    """The tenant's recorded gateway usage, once every call is written (off the response path)."""
    deadline = time.monotonic() + 15
    row: dict[str, Any] = {}
    while time.monotonic() < deadline:
        got = httpx.get(
            f"{url}/v1/gateway/usage",
            params={"group_by": "tenant", "tenant": "thrifty"},
            headers={"authorization": f"Bearer {ADMIN}"},
            timeout=10,
        )
        assert got.status_code == 200, got.text
        rows = got.json()["rows"]
        row = rows[0] if rows else {}
        if row.get("calls") == KEYS * CALLS_PER_KEY:
            break
        time.sleep(0.2)
    return row
