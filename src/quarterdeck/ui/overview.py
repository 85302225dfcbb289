"""The overview page: the state of the whole system (within the viewer's reach) at a glance.

Each section is shown only to a viewer with the permission its API route needs, and reads what
that route reads with the same reach (runs and budgets by ``viewer.tenant``, gateway usage by
``reach``, incidents platform-only), so the overview never shows more than the API would. A
section whose service this process does not run is left out instead of failing the page: the
overview is where someone looks when part of the system is down.

The stat cards are one live region: the runs SSE stream (``/ui/live/changes``, fed by the
process's one ``RunEventHub``) says something changed and htmx re-reads
``/ui/fragments/overview``; no open page polls the database on a timer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from quarterdeck.budgets.models import BudgetStatus
from quarterdeck.budgets.service import BudgetService
from quarterdeck.gateway.models import UsageRow
from quarterdeck.gateway.reads import GatewayCalls
from quarterdeck.gateway.reports_api import reach
from quarterdeck.incidents.models import Incident, IncidentFilter, IncidentStatus
from quarterdeck.incidents.service import IncidentService
from quarterdeck.kit.clock import utcnow
from quarterdeck.kit.wiring import services
from quarterdeck.runs.insights import RunInsights
from quarterdeck.security.auth import Permission
from quarterdeck.ui.guard import SignedIn
from quarterdeck.ui.web import Viewer, render

router = APIRouter()

LIVE_URL = "/ui/live/changes"
FRAGMENT_URL = "/ui/fragments/overview"
NEWEST_INCIDENTS = 5
OPEN_COUNT_CAP = 500


@dataclass(frozen=True, slots=True)
class OpenIncidents:
    count: int
    capped: bool
    newest: list[Incident]


def cache_hit_rate(row: UsageRow) -> float | None:
    """Share of prompt tokens read from the cache (the runs' figure, for gateway calls)."""
    prompt = row.input_tokens + row.cache_read_tokens + row.cache_write_tokens
    return row.cache_read_tokens / prompt if prompt else None


async def _budgets(
    request: Request, viewer: Viewer, now: datetime, tenants: list[str] | None
) -> list[BudgetStatus] | None:
    budgets = services(request.app).get(BudgetService)
    if budgets is None or not viewer.can(Permission.BUDGETS_READ):
        return None
    if viewer.tenant is not None:
        names = [viewer.tenant]
    elif tenants is not None:
        names = tenants
    else:
        insights = services(request.app).get(RunInsights)
        names = await insights.active_tenants(now) if insights is not None else []
    out = [await budgets.status(name, now) for name in names]
    if viewer.tenant is not None:
        return out  # a tenant sees its own, limited or not
    return [s for s in out if s.daily_limit_usd is not None or s.monthly_limit_usd is not None]


async def _incidents(request: Request, viewer: Viewer) -> OpenIncidents | None:
    incidents = services(request.app).get(IncidentService)
    if incidents is None or not viewer.can(Permission.INCIDENTS_READ):
        return None
    unresolved = [IncidentStatus.open, IncidentStatus.acknowledged]
    page = await incidents.list(IncidentFilter(status=unresolved, limit=OPEN_COUNT_CAP))
    return OpenIncidents(
        count=len(page.items),
        capped=page.next_cursor is not None,
        newest=page.items[:NEWEST_INCIDENTS],
    )


async def _gateway(request: Request, viewer: Viewer, now: datetime) -> UsageRow | None:
    calls = services(request.app).get(GatewayCalls)
    if calls is None or not viewer.can(Permission.GATEWAY_READ):
        return None
    report = await calls.usage(
        since=None, until=None, group_by=[], tenant=reach(viewer.principal, None), now=now
    )
    return report.rows[0] if report.rows else None


async def gather(request: Request, viewer: Viewer, *, whole: bool = True) -> dict[str, Any]:
    """What the page shows, each section within the viewer's reach; ``whole=False``: only the
    live stat cards (the budgets table and incident list wait for a reload)."""
    now = utcnow()
    insights = services(request.app).get(RunInsights)
    runs = None
    if insights is not None and viewer.can(Permission.RUNS_READ):
        runs = await insights.latest(viewer.tenant)  # shared by every page of this reach
    gateway = await _gateway(request, viewer, now)
    tenants = runs.tenants if runs else None
    return {
        "now": now,
        "runs": runs,
        "incidents": await _incidents(request, viewer),
        "budgets": await _budgets(request, viewer, now, tenants) if whole else None,
        "gateway": gateway,
        "gateway_hit_rate": cache_hit_rate(gateway) if gateway is not None else None,
        "live_url": LIVE_URL,
        "fragment_url": FRAGMENT_URL,
    }


@router.get("/ui", summary="Overview")
async def overview(request: Request, viewer: SignedIn) -> Response:
    return render(request, "overview.html", viewer, **await gather(request, viewer))


@router.get(FRAGMENT_URL, summary="Overview stat cards (live refresh)")
async def overview_fragment(request: Request, viewer: SignedIn) -> Response:
    context = await gather(request, viewer, whole=False)
    return render(request, "fragments/overview_stats.html", viewer, **context)
