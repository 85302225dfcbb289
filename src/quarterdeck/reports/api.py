"""HTTP endpoints of the monthly report: the report in four formats, the stored ones, and FOCUS.

Thin: parse, check the caller's reach, call :class:`ReportService`, shape the bytes. Reach
follows the runs' convention: a key of one tenant gets its own tenant's report (a ``tenant=``
naming another is a 403, not silently ignored), a key of tenant ``*`` any tenant's or, without
``tenant=``, the all-tenant report. ``reports:read`` is tenant-scoped (operators and auditors of
a tenant have it); incidents and the platform's operations appear in the all-tenant report only.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response

from quarterdeck.kit.clock import utcnow
from quarterdeck.kit.wiring import provide
from quarterdeck.reports.compute import last_full_month
from quarterdeck.reports.models import MonthlyReport, StoredReport
from quarterdeck.reports.service import ReportService, check_tenant
from quarterdeck.security.auth import Permission, Principal, require

router = APIRouter(tags=["reports"])
Reports = Annotated[ReportService, Depends(provide(ReportService))]
CanRead = Annotated[Principal, Depends(require(Permission.REPORTS_READ))]

Format = Literal["json", "md", "html", "pdf"]
MEDIA_TYPES: dict[str, str] = {
    "md": "text/markdown; charset=utf-8",
    "html": "text/html; charset=utf-8",
    "pdf": "application/pdf",
}

MONTH_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])$"
TENANT_PATTERN = r"^$|^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$"
MonthQuery = Annotated[
    str | None,
    Query(
        max_length=16,
        pattern=MONTH_PATTERN,
        description="`YYYY-MM` (UTC), not in the future; default: the last full month.",
    ),
]
TenantQuery = Annotated[
    str | None,
    Query(
        max_length=64,
        pattern=TENANT_PATTERN,
        description="One tenant (keys of tenant `*`); default: your reach.",
    ),
]


def reach(principal: Principal, tenant: str | None) -> str | None:
    """The tenant a report covers: a tenant key's own (naming another is 403), else the one a
    ``*`` key names, else None (all tenants)."""
    return principal.reach(check_tenant(tenant), Permission.REPORTS_READ)


def filename(month: str, tenant: str | None, ext: str) -> str:
    return f"quarterdeck-report-{month}{'-' + tenant if tenant else ''}.{ext}"


@router.get(
    "/v1/reports/monthly",
    response_model=MonthlyReport,
    summary="The monthly operations report, computed from stored data",
    description="`format=json` (default) returns the report; `md`, `html` and `pdf` return the "
    "rendered document as a download. A finished month is served from the stored report when "
    "it used the same ROI inputs; the current month is computed now and marked `partial`. "
    "`hourly_cost` and `minutes_saved` are the ROI estimate's inputs (default: the settings).",
    responses={
        200: {
            "content": {
                "text/markdown": {},
                "text/html": {},
                "application/pdf": {},
            }
        },
        403: {"description": "A key of one tenant naming another tenant."},
    },
)
async def monthly_report(
    principal: CanRead,
    reports: Reports,
    month: MonthQuery = None,
    format: Annotated[Format, Query(description="json, md, html or pdf.")] = "json",
    tenant: TenantQuery = None,
    hourly_cost: Annotated[float | None, Query(ge=0, le=1e9)] = None,
    minutes_saved: Annotated[float | None, Query(ge=0, le=1e9)] = None,
) -> MonthlyReport | Response:
    scope = reach(principal, tenant)
    report = await reports.monthly(
        month or last_full_month(utcnow()),
        scope,
        hourly_cost=hourly_cost,
        minutes_saved=minutes_saved,
    )
    if format == "json":
        return report
    from quarterdeck.reports.render import render  # matplotlib and WeasyPrint load on first use

    # 1-5 s of CPU for charts and a PDF: off the event loop (the charts avoid pyplot's state).
    body = await asyncio.to_thread(render, report, format)
    return Response(
        content=body,
        media_type=MEDIA_TYPES[format],
        headers={
            "Content-Disposition": (
                f'attachment; filename="{filename(report.month, report.tenant, format)}"'
            )
        },
    )


@router.get(
    "/v1/reports",
    response_model=list[StoredReport],
    summary="Stored monthly reports, newest month first",
    description="Reports the leader generated on the first of each month (all tenants, and "
    "each tenant with activity). A key of one tenant sees its own tenant's only.",
)
async def stored_reports(
    principal: CanRead,
    reports: Reports,
    month: MonthQuery = None,
    tenant: TenantQuery = None,
) -> list[StoredReport]:
    own = principal.tenant_filter()
    scope = reach(principal, tenant) if (own is not None or tenant) else None
    return await reports.stored(scope, month)


@router.get(
    "/v1/reports/focus",
    summary="The month's cost as FinOps FOCUS CSV",
    description="One row per UTC day x tenant x model x source (run or gateway) x agent type, "
    "with BilledCost, EffectiveCost, ListCost in USD and tokens as the consumed quantity.",
    responses={200: {"content": {"text/csv": {}}}, 403: {"description": "Another tenant."}},
    response_class=Response,
)
async def focus_export(
    principal: CanRead,
    reports: Reports,
    month: MonthQuery = None,
    tenant: TenantQuery = None,
) -> Response:
    scope = reach(principal, tenant)
    chosen = month or last_full_month(utcnow())
    body = await reports.focus(chosen, scope)
    return Response(
        content=body,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{filename(chosen, scope, "focus.csv")}"'
        },
    )
