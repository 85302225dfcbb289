"""The gateway page: what relayed model calls did and cost, by tenant, key, model and session.

It reads exactly what ``GET /v1/gateway/usage`` and ``/v1/gateway/calls`` read, with the same
reach (``reports_api.reach``: a tenant's key sees its own tenant, and asking for another one is
a 403, not a silently narrowed page) and the same 503 when this process runs no gateway reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from quarterdeck.exceptions import ValidationFailed
from quarterdeck.gateway.models import CallFilter, UsageGroup, UsageRow
from quarterdeck.gateway.reads import month_of
from quarterdeck.gateway.reports_api import Calls, reach
from quarterdeck.kit.clock import utcnow
from quarterdeck.ui.guard import GatewayReader
from quarterdeck.ui.overview import cache_hit_rate
from quarterdeck.ui.web import render

router = APIRouter()

PAGE_SIZE = 50
GROUP_LIMIT = 100


@dataclass(frozen=True, slots=True)
class Period:
    value: str
    label: str


PERIODS: tuple[Period, ...] = (
    Period("month", "This month"),
    Period("7d", "Last 7 days"),
    Period("today", "Today"),
)


def period_start(period: str, now: datetime) -> datetime:
    """Where ``period`` begins (UTC); every period runs to now."""
    if period == "month":
        return month_of(now)[0]
    if period == "7d":
        return now - timedelta(days=7)
    if period == "today":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    choices = ", ".join(p.value for p in PERIODS)
    raise ValidationFailed(
        f"unknown period {period!r}; choose from {choices}",
        errors=[{"field": "period", "message": f"choose from {choices}"}],
    )


def _top(rows: list[UsageRow]) -> list[UsageRow]:
    """Biggest spenders first, at most ``GROUP_LIMIT`` rows (a table, not an export)."""
    return sorted(rows, key=lambda r: (-r.cost_usd, -r.calls))[:GROUP_LIMIT]


@router.get("/ui/gateway", summary="Gateway")
async def gateway_page(
    request: Request,
    viewer: GatewayReader,
    calls: Calls,
    period: Annotated[str, Query(max_length=16)] = "month",
    tenant: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    now = utcnow()
    since = period_start(period, now)
    scope = reach(viewer.principal, tenant or None)

    async def grouped(group: UsageGroup) -> list[UsageRow]:
        report = await calls.usage(since=since, until=None, group_by=[group], tenant=scope, now=now)
        return _top(report.rows)

    totals = await calls.usage(since=since, until=None, group_by=[], tenant=scope, now=now)
    total = totals.rows[0] if totals.rows else None
    tables: dict[str, list[UsageRow]] = {}
    if viewer.tenant is None and scope is None:
        tables["tenant"] = await grouped("tenant")
    for group in ("key", "model", "session"):
        tables[group] = await grouped(group)
    recent = await calls.list(
        CallFilter(since=since, limit=PAGE_SIZE, cursor=cursor or None), scope
    )
    context: dict[str, Any] = {
        "periods": PERIODS,
        "period": period,
        "since": since,
        "tenant": scope,
        "asked_tenant": tenant or "",
        "total": total,
        "hit_rate": cache_hit_rate(total) if total is not None else None,
        "tables": tables,
        "recent": recent,
        "cursor": cursor,
    }
    return render(request, "gateway.html", viewer, **context)
