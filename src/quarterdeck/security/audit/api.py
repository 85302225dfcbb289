"""HTTP endpoints of the audit log: search, export, verification, checkpoints, retention,
purge, shredding. ``quarterdeck audit`` uses them (it opens Postgres only with ``--direct``).

Thin: parse, call :class:`AuditLog`, shape the response. Authorization (who may read which
tenant's audit trail, who may shred) is added by the auth layer as route dependencies.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, field_validator

from quarterdeck.exceptions import NotFound, ValidationFailed
from quarterdeck.kit.durations import positive_duration
from quarterdeck.kit.wiring import provide
from quarterdeck.security.audit.checkpoints import Checkpoint
from quarterdeck.security.audit.models import (
    SEVERITIES,
    TENANT_RE,
    CheckpointPage,
    EventFilter,
    EventPage,
    Problem,
    PurgeResult,
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


def _aware(since: datetime | None, until: datetime | None) -> None:
    for name, when in (("since", since), ("until", until)):
        if when is not None and when.tzinfo is None:
            raise ValidationFailed(
                "times need a timezone (e.g. 2026-01-01T00:00:00Z)",
                errors=[{"field": name, "message": "timezone required"}],
            )
        try:
            if when is not None:
                when.astimezone(UTC)
        except OverflowError as exc:  # e.g. 0001-01-01T00:00+01:00: before year 1 in UTC
            raise ValidationFailed(
                f"{name} is out of range", errors=[{"field": name, "message": "out of range"}]
            ) from exc


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
    _aware(since, until)
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
    cursor: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,  # a bigint: larger is a 422
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


BIGINT_MAX = 2**63 - 1
_Bigint = Annotated[int, Field(strict=True, ge=0, le=BIGINT_MAX)]
_HEX = r"^(?:[0-9a-fA-F]{2})*$"
_BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


class CheckpointIn(BaseModel):
    """A checkpoint sent back for verification: the exported shape (``CheckpointOut``), with
    every rule the server applies stated in the schema, so a wrong type (``false`` for an id) or
    a malformed hash is a 422 naming it, never coerced into a checkpoint that fails as forged."""

    id: _Bigint
    tenant: str = Field(pattern=TENANT_RE.pattern)
    seq: _Bigint
    head_hash: str = Field(pattern=_HEX)
    count: _Bigint
    created_at: datetime
    prev: str = Field(pattern=_HEX)
    key_fingerprint: str
    public_key: str = Field(default="", description="Raw Ed25519 public key, base64.")
    payload: str = Field(default="", description="The exact canonical JSON that was signed.")
    signature: str = Field(pattern=_BASE64, description="Ed25519 signature over payload, base64.")

    @field_validator("created_at", mode="before")
    @classmethod
    def _rfc3339(cls, value: object) -> object:
        """As exported: an RFC 3339 string, not a number pydantic would read as epoch seconds."""
        if not isinstance(value, str):
            raise ValueError("must be an RFC 3339 date-time string")
        return value


class VerifyAgainst(BaseModel):
    """Checkpoints kept off-site (``audit checkpoints export``), to catch a truncation that
    deleted recent checkpoints along with the events."""

    checkpoints: list[CheckpointIn] = Field(max_length=1_000_000)


def _checkpoint(out: CheckpointIn, index: int) -> Checkpoint:
    """The checkpoint to verify against; the schema has already refused what Postgres could not
    store or ``fromhex``/``b64decode`` could not read, this is the last line."""
    where = f"checkpoints.{index}"
    try:
        return Checkpoint(
            id=out.id,
            tenant=out.tenant,
            seq=out.seq,
            head_hash=bytes.fromhex(out.head_hash),
            count=out.count,
            created_at=out.created_at,
            prev=bytes.fromhex(out.prev),
            key_fingerprint=out.key_fingerprint,
            signature=base64.b64decode(out.signature, validate=True),
        )
    except (ValueError, binascii.Error) as exc:
        raise ValidationFailed(
            f"{where} is malformed: {exc}", errors=[{"field": where, "message": str(exc)}]
        ) from exc


@router.post(
    "/v1/audit/verify",
    response_model=VerifyReport,
    summary="Verify the hash chains against checkpoints kept off-site",
    description="Like `GET /v1/audit/verify`, and also checks the stored chain against the "
    "given checkpoints (exported earlier with `GET /v1/audit/checkpoints`).",
)
async def verify_against(
    body: VerifyAgainst, principal: CanRead, audit: Audit, tenant: TenantQuery = None
) -> VerifyReport:
    scope = _scope(principal, tenant)
    external = [_checkpoint(cp, i) for i, cp in enumerate(body.checkpoints)]
    for cp in external:
        if scope is not None and cp.tenant != scope:
            raise NotFound(f"tenant {cp.tenant} not found")
    return await audit.verify(scope, external)


@router.get(
    "/v1/audit/export",
    summary="Export events as JSON Lines, in chain order, each with its hashed record",
    description="Decrypted where the tenant's data key exists. Each line carries `prev_hash` "
    "and `record`, the exact canonical bytes hashed, so the chain can be recomputed offline.",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
async def export(
    principal: CanRead,
    audit: Audit,
    tenant: TenantQuery = None,
    since: Annotated[datetime | None, Query(description="Inclusive, RFC 3339.")] = None,
    until: Annotated[datetime | None, Query(description="Exclusive, RFC 3339.")] = None,
) -> StreamingResponse:
    _aware(since, until)
    lines = audit.export(_scope(principal, tenant), since, until)

    async def body() -> AsyncIterator[bytes]:
        async for line in lines:
            text = json.dumps(line, ensure_ascii=False, separators=(",", ":"))
            yield (text + "\n").encode("utf-8")

    return StreamingResponse(body(), media_type="application/x-ndjson")


class PurgeOut(BaseModel):
    purged: list[PurgeResult]
    problems: list[Problem]


@router.post(
    "/v1/audit/purge",
    response_model=PurgeOut,
    summary="Purge events older than their tenant's retention, in whole sealed segments",
    description="Runs what the scheduled purge runs, now. A segment that does not verify is "
    "kept and reported in `problems`.",
)
async def purge(principal: CanManage, audit: Audit, tenant: TenantQuery = None) -> PurgeOut:
    outcome = await audit.purge(tenant=tenant)
    return PurgeOut(purged=outcome.purged, problems=outcome.problems)
