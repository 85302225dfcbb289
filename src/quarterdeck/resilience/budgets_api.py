"""``GET``/``PUT /v1/tenants/{tenant}/budget``: a tenant's limits, spend and what is left."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from quarterdeck.resilience.budgets import (
    TENANT_PATTERN,
    BudgetService,
    BudgetStatus,
    BudgetUpdate,
)

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
async def get_budget(request: Request, tenant: Tenant) -> BudgetStatus:
    return await _service(request).status(tenant)


@router.put(
    "/v1/tenants/{tenant}/budget",
    response_model=BudgetStatus,
    summary="Set a tenant's limits; null means no limit for that period",
)
async def put_budget(request: Request, tenant: Tenant, body: BudgetUpdate) -> BudgetStatus:
    service = _service(request)
    await service.set(tenant, body.daily_usd, body.monthly_usd)
    return await service.status(tenant)
