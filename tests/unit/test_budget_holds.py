"""The pure rules behind budget holds: when a period resets, which limit a call passes first,
and what the refusal says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from quarterdeck.budgets.models import (
    BudgetExceeded,
    Limit,
    first_exceeded,
    seconds_until_reset,
)


@pytest.mark.parametrize(
    ("now", "period", "seconds"),
    [
        (datetime(2025, 3, 15, 12, 0, tzinfo=UTC), "daily", 12 * 3600),
        (datetime(2025, 3, 15, 23, 59, 59, tzinfo=UTC), "daily", 1),
        (datetime(2025, 3, 15, 23, 59, 59, 500_000, tzinfo=UTC), "daily", 1),  # rounded up
        (datetime(2025, 3, 15, 0, 0, tzinfo=UTC), "daily", 86400),
        (datetime(2025, 3, 31, 12, 0, tzinfo=UTC), "monthly", 12 * 3600),
        (datetime(2025, 12, 31, 23, 0, tzinfo=UTC), "monthly", 3600),  # into next year
        (datetime(2024, 2, 1, 0, 0, tzinfo=UTC), "monthly", 29 * 86400),  # leap February
        (datetime(2025, 2, 1, 0, 0, tzinfo=UTC), "monthly", 28 * 86400),
        # a local time is converted to UTC first: 01:00 at +02:00 is 23:00 UTC the day before
        (datetime(2025, 3, 16, 1, 0, tzinfo=timezone(timedelta(hours=2))), "daily", 3600),
        (datetime(2025, 3, 15, 12, 0), "daily", 12 * 3600),  # naive means UTC
    ],
)
def test_seconds_until_the_utc_period_resets(now: datetime, period: str, seconds: int) -> None:
    assert seconds_until_reset(period, now) == seconds  # type: ignore[arg-type]


def test_a_run_budget_never_resets() -> None:
    assert seconds_until_reset("total", datetime(2025, 3, 15, tzinfo=UTC)) is None


def limit(scope: str, period: str, cap: str, spent: str) -> Limit:
    return Limit(scope, f"{scope}-1", period, Decimal(cap), Decimal(spent))  # type: ignore[arg-type]


def test_first_exceeded_reports_the_first_failing_limit_in_order() -> None:
    limits = [
        limit("tenant", "daily", "10", "1"),
        limit("tenant", "monthly", "100", "99.5"),
        limit("key", "daily", "1", "0.9"),
        limit("run", "total", "0.1", "0.1"),
    ]
    assert first_exceeded(limits, Decimal("0.4")) is limits[2]
    assert first_exceeded(limits, Decimal("0.6")) is limits[1]
    assert first_exceeded(limits[:1], Decimal("9")) is None, "reaching a limit exactly is allowed"
    assert first_exceeded(limits[:1], Decimal("9.0000000001")) is limits[0]
    assert first_exceeded(limits[3:], Decimal(0)) is None
    assert first_exceeded([], Decimal(1000)) is None


def test_budget_exceeded_keeps_the_tenant_form_the_executor_uses() -> None:
    exc = BudgetExceeded("acme", "daily", Decimal(10), Decimal("3.75"), Decimal("6.26"))
    assert exc.scope == "tenant" and exc.subject == "acme" and exc.retry_after_s is None
    assert exc.status == 402 and exc.type_slug == "budget-exceeded"
    assert exc.detail == (
        "tenant 'acme' daily budget exceeded: $3.7500 spent of $10.0000 today (UTC), "
        "and the next call could cost up to $6.2600"
    )
    assert exc.extra["tenant"] == "acme" and exc.extra["spent_usd"] == 3.75


def test_budget_exceeded_for_a_key_and_a_run() -> None:
    key = BudgetExceeded(
        "acme",
        "monthly",
        Decimal(5),
        Decimal(5),
        Decimal("0.05"),
        scope="key",
        subject="k7h3m2p9",
        retry_after_s=3600,
    )
    assert key.detail.startswith("key 'k7h3m2p9' monthly budget exceeded: $5.0000 spent of")
    assert "this month (UTC)" in key.detail
    assert key.extra == {
        "tenant": "acme",
        "scope": "key",
        "subject": "k7h3m2p9",
        "period": "monthly",
        "limit_usd": 5.0,
        "spent_usd": 5.0,
        "estimate_usd": 0.05,
        "retry_after_s": 3600,
    }
    run = BudgetExceeded(
        "acme", "total", Decimal(1), Decimal("0.99"), Decimal("0.05"), scope="run", subject="r1"
    )
    assert run.detail.startswith("run 'r1' budget exceeded: $0.9900 spent of $1.0000 in total")
    assert run.retry_after_s is None and run.extra["retry_after_s"] is None
