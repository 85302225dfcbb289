"""Budgets' records and rules: limits, spend status, the refusal, and which limit a call passes.

Pure: no I/O, so the API, the service and the executor share one definition of a period and of
"remaining" without importing the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from quarterdeck.exceptions import QuarterdeckError

TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$"
PERIODS = ("daily", "monthly")
KEY_ID_PATTERN = r"^[0-9abcdefghjkmnpqrstvwxyz]{8}$"
"""An API key's public id (``security.auth.keys.KEY_ID_RE``)."""
Scope = Literal["tenant", "key", "run"]
Period = Literal["daily", "monthly", "total"]
Money = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]
"""Exact in Python (numeric in Postgres), a plain number in JSON."""


class BudgetExceeded(QuarterdeckError):
    """A call refused because it could pass a budget.

    ``scope`` says whose budget: the tenant's (``subject`` is the tenant), an API key's
    (``subject`` is the key id) or a run's (``period`` ``"total"``). ``retry_after_s`` is the
    number of seconds until the period resets (UTC), so a client told to stop knows when it may
    start again; a run budget never resets, so it is None there. The positional constructor is
    the tenant form the run executor has always used.
    """

    status = 402
    type_slug = "budget-exceeded"
    title = "Budget exceeded"

    def __init__(
        self,
        tenant: str,
        period: str,
        limit: Decimal,
        spent: Decimal,
        estimate: Decimal,
        *,
        scope: Scope = "tenant",
        subject: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        subject = tenant if subject is None else subject
        if scope == "run":
            what, when = f"run {subject!r} budget", "in total"
        else:
            when = "today (UTC)" if period == "daily" else "this month (UTC)"
            what = f"{scope} {subject!r} {period} budget"
        super().__init__(
            f"{what} exceeded: ${spent:.4f} spent of ${limit:.4f} "
            f"{when}, and the next call could cost up to ${estimate:.4f}",
            extra={
                "tenant": tenant,
                "scope": scope,
                "subject": subject,
                "period": period,
                "limit_usd": float(limit),
                "spent_usd": float(spent),
                "estimate_usd": float(estimate),
                "retry_after_s": retry_after_s,
            },
        )
        self.tenant, self.period, self.scope, self.subject = tenant, period, scope, subject
        self.limit, self.spent, self.estimate = limit, spent, estimate
        self.retry_after_s = retry_after_s


class TenantBudget(BaseModel):
    tenant: str
    daily_usd: Money | None
    monthly_usd: Money | None
    updated_at: datetime


class BudgetUpdate(BaseModel):
    """Body of ``PUT /v1/tenants/{tenant}/budget`` and ``PUT /v1/keys/{key_id}/budget``; a null
    limit means "no limit"."""

    model_config = ConfigDict(extra="forbid")

    daily_usd: Money | None = Field(default=None, ge=0, le=10_000_000)
    monthly_usd: Money | None = Field(default=None, ge=0, le=100_000_000)


class BudgetStatus(BaseModel):
    tenant: str
    daily_limit_usd: Money | None
    monthly_limit_usd: Money | None
    daily_spent_usd: Money
    monthly_spent_usd: Money
    daily_remaining_usd: Money | None
    monthly_remaining_usd: Money | None
    as_of: datetime
    updated_at: datetime | None


def period_starts(now: datetime) -> tuple[datetime, datetime]:
    """Start of the UTC day and month containing ``now``."""
    now = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return day, day.replace(day=1)


def remaining(limit: Decimal | None, spent: Decimal) -> Decimal | None:
    return None if limit is None else max(Decimal(0), limit - spent)


def as_money(value: Decimal | float | None) -> Decimal | None:
    if value is None:
        return None
    return value if isinstance(value, Decimal) else Decimal(str(value))


class KeyBudget(BaseModel):
    key_id: str
    daily_usd: Money | None
    monthly_usd: Money | None
    updated_at: datetime


class KeyBudgetStatus(BaseModel):
    """An API key's gateway budget: limits, spend (calls plus holds in flight), what is left."""

    key_id: str
    tenant: str
    daily_limit_usd: Money | None
    monthly_limit_usd: Money | None
    daily_spent_usd: Money
    monthly_spent_usd: Money
    daily_remaining_usd: Money | None
    monthly_remaining_usd: Money | None
    as_of: datetime
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit a call is held to, and what is already spent (or held) against it."""

    scope: Scope
    subject: str
    period: Period
    limit: Decimal
    spent: Decimal


def first_exceeded(limits: list[Limit], amount: Decimal) -> Limit | None:
    """The first limit that ``spent + amount`` would pass, in the order given; None if none.

    Reaching a limit exactly is allowed (the same rule as :meth:`BudgetService.check` and the
    reservation statement's condition).
    """
    for limit in limits:
        if limit.spent + amount > limit.limit:
            return limit
    return None


def seconds_until_reset(period: Period, now: datetime) -> int | None:
    """Whole seconds (rounded up, at least 1) until the UTC period containing ``now`` ends;
    None for a run's total budget, which never resets."""
    if period == "total":
        return None
    now = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
    day, month = period_starts(now)
    if period == "daily":
        end = day + timedelta(days=1)
    else:
        end = (month + timedelta(days=32)).replace(day=1)
    left = (end - now).total_seconds()
    return max(1, int(left) + (0 if left == int(left) else 1))
