"""``GET``/``PUT /v1/tenants/{tenant}/budget`` and ``/v1/keys/{key_id}/budget``: limits, spend
and what is left, for a tenant or for one API key's gateway traffic.

A tenant's keys may read their own tenant's budgets and their tenant's keys' budgets (another
tenant's is a 404, so key ids of other tenants cannot be probed); setting a budget is a platform
decision (``budgets:write``, keys of tenant ``*``: admin and operator).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from quarterdeck.budgets.models import (
    KEY_ID_PATTERN,
    TENANT_PATTERN,
    BudgetStatus,
    BudgetUpdate,
    KeyBudgetStatus,
)
from quarterdeck.budgets.service import BudgetService
from quarterdeck.kit.wiring import provide
from quarterdeck.security.auth import Permission, Principal, require
from quarterdeck.security.trail import ChangeRecorder, Changes

router = APIRouter(tags=["budgets"])
Tenant = Annotated[str, Path(pattern=TENANT_PATTERN)]
KeyId = Annotated[str, Path(pattern=KEY_ID_PATTERN)]
Budgets = Annotated[BudgetService, Depends(provide(BudgetService))]


@router.get(
    "/v1/tenants/{tenant}/budget",
    response_model=BudgetStatus,
    summary="A tenant's daily and monthly limits, spend so far and remaining USD (UTC periods)",
)
async def get_budget(
    tenant: Tenant,
    principal: Annotated[Principal, Depends(require(Permission.BUDGETS_READ))],
    budgets: Budgets,
) -> BudgetStatus:
    principal.ensure_tenant(tenant, "tenant", tenant)
    return await budgets.status(tenant)


@router.put(
    "/v1/tenants/{tenant}/budget",
    response_model=BudgetStatus,
    summary="Set a tenant's limits; null means no limit for that period",
)
async def put_budget(
    tenant: Tenant,
    body: BudgetUpdate,
    principal: Annotated[Principal, Depends(require(Permission.BUDGETS_WRITE))],
    budgets: Budgets,
    changes: Changes,
) -> BudgetStatus:
    await set_tenant_budget_as(budgets, changes, principal, tenant, body)
    return await budgets.status(tenant)


@router.get(
    "/v1/keys/{key_id}/budget",
    response_model=KeyBudgetStatus,
    summary="An API key's gateway limits, spend (calls and holds) and remaining USD (UTC periods)",
)
async def get_key_budget(
    key_id: KeyId,
    principal: Annotated[Principal, Depends(require(Permission.BUDGETS_READ))],
    budgets: Budgets,
) -> KeyBudgetStatus:
    return await budgets.key_status(key_id, principal.tenant_filter())


@router.put(
    "/v1/keys/{key_id}/budget",
    response_model=KeyBudgetStatus,
    summary="Set an API key's limits (its gateway calls and the runs it submits); null means no limit for that period",
)
async def put_key_budget(
    key_id: KeyId,
    body: BudgetUpdate,
    principal: Annotated[Principal, Depends(require(Permission.BUDGETS_WRITE))],
    budgets: Budgets,
    changes: Changes,
) -> KeyBudgetStatus:
    await set_key_budget_as(budgets, changes, principal, key_id, body)
    return await budgets.key_status(key_id, principal.tenant_filter())


async def set_tenant_budget_as(
    budgets: BudgetService,
    changes: ChangeRecorder,
    principal: Principal,
    tenant: str,
    body: BudgetUpdate,
) -> None:
    """Set a tenant's limits as ``principal`` (within its reach) and record the change: the
    API's and the dashboard's one way (``ui/budgets_page.py``)."""
    principal.ensure_tenant(tenant, "tenant", tenant)
    await budgets.set(tenant, body.daily_usd, body.monthly_usd)
    await changes.record(
        principal.key_id,
        "config.changed",
        tenant,
        {"setting": "budget", "daily_usd": body.daily_usd, "monthly_usd": body.monthly_usd},
    )


async def set_key_budget_as(
    budgets: BudgetService,
    changes: ChangeRecorder,
    principal: Principal,
    key_id: str,
    body: BudgetUpdate,
) -> None:
    """Set an API key's limits as ``principal`` and record the change (as above)."""
    tenant, _ = await budgets.set_key(key_id, body.daily_usd, body.monthly_usd)
    await changes.record(
        principal.key_id,
        "config.changed",
        tenant,
        {
            "setting": "key_budget",
            "key_id": key_id,
            "daily_usd": body.daily_usd,
            "monthly_usd": body.monthly_usd,
        },
    )
