"""``/v1/tenants/{tenant}``: erase a tenant's data; read and set its run-data retention.

Erasure and retention changes are platform actions (``audit:manage``, admin keys only): a
tenant must not be able to shorten the evidence kept about it, nor erase itself by mistake.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from quarterdeck.kit.durations import positive_duration
from quarterdeck.kit.wiring import provide
from quarterdeck.security.auth import Permission, Principal, require
from quarterdeck.tenants.models import ErasureResult, RetentionIn, RetentionOut
from quarterdeck.tenants.service import TenantData, check_tenant

router = APIRouter(tags=["tenants"])
Tenants = Annotated[TenantData, Depends(provide(TenantData))]
CanRead = Annotated[Principal, Depends(require(Permission.AUDIT_READ))]
CanManage = Annotated[Principal, Depends(require(Permission.AUDIT_MANAGE))]


def _actor(principal: Principal) -> str:
    key_id = getattr(principal, "key_id", None)
    return f"key:{key_id}" if key_id else "api"


@router.post(
    "/v1/tenants/{tenant}/erase",
    response_model=ErasureResult,
    summary="Erase all of a tenant's data (irreversible)",
    description="Revokes the tenant's API keys, cancels its active runs, deletes its runs with "
    "every row and workspace that belongs to them, its held tool calls, gateway call records "
    "and incidents, and crypto-shreds its audit payloads (the hash chain still verifies). "
    "Audited as `tenant.erasure_requested` before and `tenant.erased` (counts) after. 404 when "
    "nothing of the tenant exists; 409 when its runs do not stop in time.",
)
async def erase(tenant: str, principal: CanManage, data: Tenants) -> ErasureResult:
    return await data.erase(check_tenant(tenant), actor=_actor(principal))


@router.get(
    "/v1/tenants/{tenant}/retention",
    response_model=RetentionOut,
    summary="How long a tenant's finished runs are kept",
)
async def get_retention(tenant: str, principal: CanRead, data: Tenants) -> RetentionOut:
    principal.ensure_tenant(check_tenant(tenant), "tenant", tenant)
    return await data.get_retention(tenant)


@router.put(
    "/v1/tenants/{tenant}/retention",
    response_model=RetentionOut,
    summary="Set how long a tenant's finished runs are kept",
    description="Finished runs (with their events, checkpoints, archives and workspaces) older "
    "than this are deleted by the scheduled purge (QUARTERDECK_RUN_PURGE_INTERVAL).",
)
async def put_retention(
    tenant: str, body: RetentionIn, principal: CanManage, data: Tenants
) -> RetentionOut:
    seconds = positive_duration(body.retention, "retention")
    return await data.set_retention(check_tenant(tenant), seconds, actor=_actor(principal))
