"""``GET``/``PUT /v1/tenants/{tenant}/budget``: a tenant's limits, spend and what is left.

A tenant's keys may read their own tenant's budget (another tenant's is a 404); setting a budget
is a platform decision (``budgets:write``, keys of tenant ``*``: admin and operator).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from quarterdeck.budgets.service import (
    TENANT_PATTERN,
    BudgetService,
    BudgetStatus,
    BudgetUpdate,
)
from quarterdeck.security.auth import Permission, Principal, require
from quarterdeck.security.trail import record_change

router = APIRouter(tags=["budgets"])
Tenant = Annotated[str, Path(pattern=TENANT_PATTERN)]


def _service(request: Request) -> BudgetService:
    runtime = request.app.state.runtime
    service: BudgetService | None = getattr(runtime, "budgets", None)
    return service if service is not None else BudgetService(runtime.db)


@router.get(
    "/v1/tenants/{tenant}/budget",
    response_model=BudgetStatus,
    summary="A tenant's daily and monthly limits, spend so far and remaining USD (UTC periods)",
)
async def get_budget(
    request: Request,
    tenant: Tenant,
    principal: Annotated[Principal, Depends(require(Permission.BUDGETS_READ))],
) -> BudgetStatus:
    principal.ensure_tenant(tenant, "tenant", tenant)
    return await _service(request).status(tenant)


@router.put(
    "/v1/tenants/{tenant}/budget",
    response_model=BudgetStatus,
    summary="Set a tenant's limits; null means no limit for that period",
)
async def put_budget(
    request: Request,
    tenant: Tenant,
    body: BudgetUpdate,
    principal: Annotated[Principal, Depends(require(Permission.BUDGETS_WRITE))],
) -> BudgetStatus:
    principal.ensure_tenant(tenant, "tenant", tenant)
    service = _service(request)
    await service.set(tenant, body.daily_usd, body.monthly_usd)
    await record_change(
        request,
        principal.key_id,
        "config.changed",
        tenant,
        {"setting": "budget", "daily_usd": body.daily_usd, "monthly_usd": body.monthly_usd},
    )
    return await service.status(tenant)
