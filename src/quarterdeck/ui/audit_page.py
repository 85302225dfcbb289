"""The audit log page: search (as ``GET /v1/audit/events``), verify the chains (as
``GET /v1/audit/verify``) and export (as ``GET /v1/audit/export``), with the API's reach.

Reach is the API's ``_scope``: an auditor of one tenant reads that tenant's chain only, and
naming another tenant is *not found*. Verification reads every event of every chain in reach,
which is far from cheap, so it never runs on a page load: it is a button (a POST, so it carries
the CSRF token like any costly action) whose report is shown once, not stored.

Times typed into the form are UTC (``datetime-local`` has no zone); RFC 3339 with an offset is
accepted too, so a link from elsewhere can say what it means.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import Response, StreamingResponse

from quarterdeck.exceptions import NotFound, ValidationFailed
from quarterdeck.kit.clock import utcnow
from quarterdeck.kit.ids import is_id
from quarterdeck.kit.wiring import provide, provide_optional
from quarterdeck.security.audit import AuditLog
from quarterdeck.security.audit.event_types import KNOWN_EVENT_TYPES
from quarterdeck.security.audit.models import (
    SEVERITIES,
    TENANT_RE,
    EventFilter,
    EventPage,
    VerifyReport,
)
from quarterdeck.security.auth import Permission
from quarterdeck.tenants.maintenance import AUDIT_VERIFY
from quarterdeck.tenants.service import TenantData
from quarterdeck.ui.guard import AuditReader, action
from quarterdeck.ui.web import SECURITY_HEADERS, Viewer, render

router = APIRouter()
Audit = Annotated[AuditLog, Depends(provide(AuditLog))]
Tenants = Annotated[TenantData | None, Depends(provide_optional(TenantData))]


async def scheduled_verify(viewer: Viewer, tenants: TenantData | None) -> dict[str, Any] | None:
    """The last scheduled full verification (``tenants/maintenance.py``, daily), for a viewer
    of every tenant: it covers them all, so a tenant's auditor verifies its own on demand."""
    if viewer.tenant is not None or tenants is None:
        return None
    last = await tenants.last_maintenance(AUDIT_VERIFY)
    if last is None:
        return {"never": True}
    at, ok, summary = last
    return {"never": False, "at": at, "ok": ok, **summary}


AuditVerifier = Annotated[Viewer, Depends(action(Permission.AUDIT_READ))]
"""Verifying changes nothing, but it is costly: a post, so a forged page cannot make browsers
start it."""
TenantQuery = Annotated[str | None, Query(max_length=64)]
TimeQuery = Annotated[str | None, Query(max_length=64)]
LIMITS = (50, 100, 200, 500)


def scope(viewer: Viewer, tenant: str | None) -> str | None:
    """The API's ``_scope``: a tenant's auditor sees its own chain only (another tenant's is
    404, not 403); an all-tenant auditor sees the tenant it names, or all."""
    own = viewer.tenant
    if own is None:
        return tenant
    if tenant is not None and tenant != own:
        raise NotFound(f"tenant {tenant} not found")
    return own


def _tenant(value: str | None) -> str | None:
    value = (value or "").strip() or None
    if value is not None and not TENANT_RE.fullmatch(value):
        raise ValidationFailed(
            "tenant is malformed", errors=[{"field": "tenant", "message": "malformed"}]
        )
    return value


def utc_time(value: str | None, name: str) -> datetime | None:
    """A form's time: RFC 3339, or a zone-less ``datetime-local`` value read as UTC."""
    value = (value or "").strip()
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value)
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValidationFailed(
            f"{name} is not a time (e.g. 2026-01-01T00:00, read as UTC)",
            errors=[{"field": name, "message": str(exc)}],
        ) from exc


@dataclass
class Search:
    """The search form as typed (kept to refill it) and the filter it stands for."""

    tenant: str = ""
    event_type: str = ""
    actor: str = ""
    session_id: str = ""
    since: str = ""
    until: str = ""
    anomalies: bool = False
    severity: list[str] = field(default_factory=list)
    limit: int = LIMITS[0]

    def shown(self, value: str) -> str:
        """A time as a ``datetime-local`` field shows it (UTC), or as typed if it is not one."""
        try:
            when = utc_time(value, "time")
        except ValidationFailed:
            return value
        return when.strftime("%Y-%m-%dT%H:%M:%S") if when else ""

    def query(self, **extra: str | None) -> str:
        """This search as a query string (``extra``: the cursor), empty fields left out."""
        pairs: list[tuple[str, str]] = [
            (name, value)
            for name, value in (
                ("tenant", self.tenant),
                ("event_type", self.event_type),
                ("actor", self.actor),
                ("session_id", self.session_id),
                ("since", self.since),
                ("until", self.until),
            )
            if value
        ]
        if self.anomalies:
            pairs.append(("anomalies", "true"))
        pairs += [("severity", s) for s in self.severity]
        if self.limit != LIMITS[0]:
            pairs.append(("limit", str(self.limit)))
        pairs += [(k, v) for k, v in extra.items() if v]
        return urlencode(pairs)

    def export_query(self) -> str:
        """What the export takes of it: the API's export filters only (tenant and times)."""
        fields = (("tenant", self.tenant), ("since", self.since), ("until", self.until))
        return urlencode([(k, v) for k, v in fields if v])

    def to_filter(self, viewer: Viewer, cursor: str | None) -> EventFilter:
        """The filter ``search_events`` builds, with its checks (ValidationFailed, NotFound)."""
        for value in self.severity:
            if value not in SEVERITIES:
                raise ValidationFailed(
                    f"severity must be one of {', '.join(SEVERITIES)}",
                    errors=[{"field": "severity", "message": f"unknown severity {value!r}"}],
                )
        types = [t.strip() for t in self.event_type.split(",") if t.strip()] or None
        return EventFilter(
            tenant=scope(viewer, _tenant(self.tenant)),
            event_types=types,
            actor=self.actor.strip() or None,
            session_id=self.session_id.strip() or None,
            since=utc_time(self.since, "since"),
            until=utc_time(self.until, "until"),
            anomalies=self.anomalies or bool(self.severity),
            severities=self.severity or None,
            cursor=cursor,
            limit=self.limit,
        )


def _page(
    request: Request,
    viewer: Viewer,
    search: Search,
    result: EventPage | None,
    *,
    cursor: str | None = None,
    report: VerifyReport | None = None,
    verify_tenant: str = "",
    error: str | None = None,
    status: int = 200,
    scheduled: dict[str, Any] | None = None,
) -> Response:
    items = result.items if result else []
    next_cursor = result.next_cursor if result else None
    return render(
        request,
        "audit.html",
        viewer,
        status=status,
        search=search,
        rows=[
            (
                e,
                bool(e.session_id and is_id(e.session_id, "run")),
                _details(e.model_dump(mode="json")),
            )
            for e in items
        ],
        next_href=f"/ui/audit?{search.query(cursor=next_cursor)}" if next_cursor else None,
        first_href=f"/ui/audit?{search.query()}" if cursor else None,
        export_href=f"/ui/audit/export?{search.export_query()}".rstrip("?"),
        event_types=sorted(KNOWN_EVENT_TYPES),
        severities=SEVERITIES,
        limits=LIMITS,
        report=report,
        verify_tenant=verify_tenant,
        error=error,
        scheduled=scheduled,
    )


def _details(event: dict[str, object]) -> str:
    """An event's body as readable JSON (chain fields left out: the table has them)."""
    body = {
        k: v
        for k, v in event.items()
        if k not in ("tenant", "seq", "hash", "timestamp", "event_type", "actor")
        and v not in (None, [], {})
    }
    return json.dumps(body, indent=2, ensure_ascii=False, sort_keys=True)


@router.get("/ui/audit", summary="Audit log")
async def audit_page(
    request: Request,
    viewer: AuditReader,
    audit: Audit,
    tenants: Tenants,
    tenant: TenantQuery = None,
    event_type: Annotated[list[str] | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=256)] = None,
    session_id: Annotated[str | None, Query(max_length=256)] = None,
    since: TimeQuery = None,
    until: TimeQuery = None,
    anomalies: bool = False,
    severity: Annotated[list[str] | None, Query(max_length=16)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = LIMITS[0],
) -> Response:
    search = Search(
        tenant=tenant or "",
        event_type=",".join(t for t in (event_type or []) if t),
        actor=actor or "",
        session_id=session_id or "",
        since=since or "",
        until=until or "",
        anomalies=anomalies,
        severity=[s for s in (severity or []) if s],
        limit=limit,
    )
    try:
        result = await audit.search(search.to_filter(viewer, cursor))
    except ValidationFailed as exc:
        return _page(request, viewer, search, None, error=exc.detail, status=422)
    last = await scheduled_verify(viewer, tenants)
    return _page(request, viewer, search, result, cursor=cursor, scheduled=last)


@router.post("/ui/audit/verify", summary="Verify the audit chains")
async def verify_chain(
    request: Request,
    viewer: AuditVerifier,
    audit: Audit,
    tenant: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """``GET /v1/audit/verify`` for the viewer's reach; htmx gets the report alone."""
    report = await audit.verify(scope(viewer, _tenant(tenant)))
    if "hx-request" in request.headers:
        return render(request, "fragments/audit_verify.html", viewer, report=report)
    result = await audit.search(Search().to_filter(viewer, None))
    return _page(request, viewer, Search(), result, report=report, verify_tenant=tenant)


@router.get("/ui/audit/export", summary="Download audit events as JSON Lines")
async def export(
    viewer: AuditReader,
    audit: Audit,
    tenant: TenantQuery = None,
    since: TimeQuery = None,
    until: TimeQuery = None,
) -> StreamingResponse:
    """Exactly ``GET /v1/audit/export``'s lines, as a file to keep."""
    reach = scope(viewer, _tenant(tenant))
    lines = audit.export(reach, utc_time(since, "since"), utc_time(until, "until"))

    async def body() -> AsyncIterator[bytes]:
        async for line in lines:
            text = json.dumps(line, ensure_ascii=False, separators=(",", ":"))
            yield (text + "\n").encode("utf-8")

    name = f"audit-{reach or 'all'}-{utcnow().strftime('%Y%m%dT%H%M%SZ')}.jsonl"
    headers = {**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'}
    return StreamingResponse(body(), media_type="application/x-ndjson", headers=headers)
