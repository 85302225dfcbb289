"""The Reports page: one month's operations report, read in the dashboard and downloaded.

It reads through the same :class:`ReportService` and reach rule as ``GET /v1/reports/monthly``
(``reports:read``; a tenant's viewer sees its own tenant only), and shows the same layout the
Markdown, HTML and PDF are printed from (``reports.render_layout``), so a figure on the page
reads exactly as in the downloads. Charts are in the downloads only: the dashboard's CSP allows
no inline style, which matplotlib's SVG uses.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from quarterdeck.kit.clock import utcnow
from quarterdeck.kit.wiring import provide
from quarterdeck.reports.api import MEDIA_TYPES, filename, reach
from quarterdeck.reports.compute import last_full_month
from quarterdeck.reports.service import ReportService
from quarterdeck.security.auth import Permission
from quarterdeck.ui.guard import page
from quarterdeck.ui.web import SECURITY_HEADERS, Viewer, render

router = APIRouter()
Reports = Annotated[ReportService, Depends(provide(ReportService))]
ReportReader = Annotated[Viewer, Depends(page(Permission.REPORTS_READ))]
MonthQuery = Annotated[str | None, Query(max_length=16)]
TenantQuery = Annotated[str | None, Query(max_length=64)]
MONTHS_OFFERED = 12


def recent_months(now: datetime, count: int = MONTHS_OFFERED) -> list[str]:
    """This month and the ``count - 1`` before it, newest first."""
    year, month = now.astimezone(UTC).year, now.astimezone(UTC).month
    out = []
    for _ in range(count):
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return out


@router.get("/ui/reports", summary="Reports")
async def reports_page(
    request: Request,
    viewer: ReportReader,
    reports: Reports,
    month: MonthQuery = None,
    tenant: TenantQuery = None,
) -> Response:
    from quarterdeck.reports.render_layout import layout

    scope = reach(viewer.principal, tenant or None)
    chosen = month or last_full_month(utcnow())
    report = await reports.monthly(chosen, scope)
    return render(
        request,
        "reports.html",
        viewer,
        view=layout(report),
        report=report,
        month=chosen,
        tenant=scope,
        months=recent_months(utcnow()),
        stored=await reports.stored(tenant=scope),
        pick_tenant=viewer.tenant is None,
    )


@router.get("/ui/reports/file", summary="Report download")
async def report_file(
    viewer: ReportReader,
    reports: Reports,
    month: MonthQuery = None,
    tenant: TenantQuery = None,
    format: Annotated[Literal["md", "html", "pdf", "json", "focus"], Query()] = "pdf",
) -> Response:
    """The month as a file: ``GET /v1/reports/monthly``'s formats, or FOCUS CSV."""
    import asyncio

    scope = reach(viewer.principal, tenant or None)
    chosen = month or last_full_month(utcnow())
    if format == "focus":
        body, media = await reports.focus(chosen, scope), "text/csv; charset=utf-8"
        name = filename(chosen, scope, "focus.csv")
    else:
        report = await reports.monthly(chosen, scope)
        if format == "json":
            body, media = report.model_dump_json(indent=2).encode(), "application/json"
        else:
            from quarterdeck.reports.render import render as render_report

            body = await asyncio.to_thread(render_report, report, format)
            media = MEDIA_TYPES[format]
        name = filename(chosen, scope, format)
    headers = {**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'}
    return Response(content=body, media_type=media, headers=headers)
