"""HTTP endpoints of the audit log: search, verification, checkpoints, retention, shredding.

Thin: parse, call :class:`AuditLog`, shape the response. Authorization (who may read which
tenant's audit trail, who may shred) is added by the auth layer as route dependencies.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from quarterdeck.exceptions import NotFound, ValidationFailed
from quarterdeck.kit.durations import positive_duration
from quarterdeck.kit.wiring import provide
from quarterdeck.security.audit.models import (
    SEVERITIES,
    TENANT_RE,
    CheckpointPage,
    EventFilter,
    EventPage,
    RetentionOut,
    RetentionRequest,
    ShredResult,
    VerifyReport,
)
from quarterdeck.security.audit.service import AuditLog
from quarterdeck.security.auth import Permission, Principal, require

router = APIRouter(tags=["audit"])
TenantQuery = Annotated[str | None, Query(max_length=64, pattern=TENANT_RE.pattern)]
Audit = Annotated[AuditLog, Depends(provide(AuditLog))]


def _actor(request: Request) -> str:
    """Who asked: the authenticated principal when the auth layer set one, else the API."""
    principal = getattr(request.state, "principal", None)
    key_id = getattr(principal, "key_id", None)
    return f"key:{key_id}" if key_id else "api"


def _tenant(tenant: str) -> str:
    if not TENANT_RE.fullmatch(tenant):
        raise ValidationFailed(
            "tenant is malformed", errors=[{"field": "tenant", "message": "malformed"}]
        )
    return tenant


CanRead = Annotated[Principal, Depends(require(Permission.AUDIT_READ))]
CanManage = Annotated[Principal, Depends(require(Permission.AUDIT_MANAGE))]


def _scope(principal: Principal, tenant: str | None) -> str | None:
    """A tenant's auditor sees its own chain only; another tenant's is 404, not 403."""
    own = principal.tenant_filter()
    if own is None:
        return tenant
    if tenant is not None and tenant != own:
        raise NotFound(f"tenant {tenant} not found")
    return own


@router.get(
    "/v1/audit/events",
    response_model=EventPage,
    summary="Search audit events, newest first",
    description="Sensitive payloads are decrypted when the tenant's data key exists and read "
    '`{"shredded": true}` after crypto-shredding. `anomalies=true` keeps events that carry a '
    "policy decision or detector finding; `severity` (repeatable) narrows them.",
)
async def search_events(
    principal: CanRead,
    audit: Audit,
    tenant: TenantQuery = None,
    event_type: Annotated[list[str] | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=256)] = None,
    session_id: Annotated[
        str | None, Query(max_length=256, description="The run id for run events.")
    ] = None,
    since: Annotated[datetime | None, Query(description="Inclusive, RFC 3339.")] = None,
    until: Annotated[datetime | None, Query(description="Exclusive, RFC 3339.")] = None,
    anomalies: bool = False,
    severity: Annotated[list[str] | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> EventPage:
    for value in severity or []:
        if value not in SEVERITIES:
            raise ValidationFailed(
                f"severity must be one of {', '.join(SEVERITIES)}",
                errors=[{"field": "severity", "message": f"unknown severity {value!r}"}],
            )
    for when in (since, until):
        if when is not None and when.tzinfo is None:
            raise ValidationFailed(
                "times need a timezone (e.g. 2026-01-01T00:00:00Z)",
                errors=[{"field": "since/until", "message": "timezone required"}],
            )
    f = EventFilter(
        tenant=_scope(principal, tenant),
        event_types=event_type,
        actor=actor,
        session_id=session_id,
        since=since,
        until=until,
        anomalies=anomalies or bool(severity),
        severities=severity,
        cursor=cursor,
        limit=limit,
    )
    return await audit.search(f)


@router.get(
    "/v1/audit/verify",
    response_model=VerifyReport,
    summary="Verify the hash chains and signed checkpoints",
    description="Answers 200 either way; `ok` is false and `problems` lists each piece of "
    "evidence (edited, deleted, reordered, truncated events, forged checkpoints).",
)
async def verify(principal: CanRead, audit: Audit, tenant: TenantQuery = None) -> VerifyReport:
    return await audit.verify(_scope(principal, tenant))


@router.get(
    "/v1/audit/checkpoints",
    response_model=CheckpointPage,
    summary="Signed checkpoints, oldest first, for off-site storage",
)
async def checkpoints(
    principal: CanRead,
    audit: Audit,
    tenant: TenantQuery = None,
    cursor: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> CheckpointPage:
    return await audit.checkpoints(_scope(principal, tenant), cursor, limit)


@router.get(
    "/v1/audit/retention/{tenant}", response_model=RetentionOut, summary="A tenant's retention"
)
async def get_retention(tenant: str, principal: CanRead, audit: Audit) -> RetentionOut:
    principal.ensure_tenant(tenant, "tenant", tenant)
    seconds = await audit.get_retention(_tenant(tenant))
    return RetentionOut(tenant=tenant, retention_seconds=seconds)


@router.put(
    "/v1/audit/retention/{tenant}",
    response_model=RetentionOut,
    summary="Set a tenant's audit retention",
    description="Events are purged only in whole segments sealed by a signed checkpoint older "
    "than the retention, so some events live up to one checkpoint interval longer.",
)
async def put_retention(
    tenant: str, body: RetentionRequest, request: Request, principal: CanManage, audit: Audit
) -> RetentionOut:
    seconds = positive_duration(body.retention, "retention")
    await audit.set_retention(_tenant(tenant), seconds, actor=_actor(request))
    return RetentionOut(tenant=tenant, retention_seconds=seconds)


@router.post(
    "/v1/audit/tenants/{tenant}/shred",
    response_model=ShredResult,
    summary="Crypto-shred a tenant's audit payloads (irreversible)",
    description="Destroys the tenant's data keys: every sensitive payload recorded so far "
    "becomes unreadable, while the events and the hash chain stay intact and verifiable.",
)
async def shred(tenant: str, request: Request, principal: CanManage, audit: Audit) -> ShredResult:
    count = await audit.shred_tenant(_tenant(tenant), actor=_actor(request))
    return ShredResult(tenant=tenant, keys_shredded=count)
