"""The budgets page: tenant and key limits, what is spent and left, and (for ``budgets:write``)
setting them, with ``budgets/api.py``'s reach, validation, service calls and audit record.

A tenant's viewer reads its own tenant's budget and its keys' budgets (another tenant's, or
another tenant's key, is *not found*, as in the API); an all-tenant viewer reads every budget.
A tenant or key without a budget row has no limit and is not listed, so the page can look one
up by name (a GET, like ``GET /v1/tenants/{t}/budget``), which is also how a first limit is set.

Setting a limit below what is already spent in its period refuses that tenant's or key's calls
until the period resets, so the form asks first (``confirm.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from quarterdeck.budgets.api import set_key_budget_as, set_tenant_budget_as
from quarterdeck.budgets.models import (
    KEY_ID_PATTERN,
    TENANT_PATTERN,
    BudgetStatus,
    BudgetUpdate,
    KeyBudgetStatus,
)
from quarterdeck.budgets.service import BudgetService
from quarterdeck.exceptions import ValidationFailed
from quarterdeck.kit.wiring import provide
from quarterdeck.security.trail import Changes
from quarterdeck.ui.confirm import ask, confirmed
from quarterdeck.ui.guard import BudgetsReader, BudgetsWriter
from quarterdeck.ui.web import Viewer, render

router = APIRouter()
Budgets = Annotated[BudgetService, Depends(provide(BudgetService))]
Tenant = Annotated[str, Path(pattern=TENANT_PATTERN)]
KeyId = Annotated[str, Path(pattern=KEY_ID_PATTERN)]
LookupQuery = Annotated[str, Query(max_length=64)]
FIELDS = ("daily_usd", "monthly_usd")


@dataclass(frozen=True, slots=True)
class Line:
    """One row of a budgets table: whose budget, its status, how much of each limit is used."""

    kind: Literal["tenant", "key"]
    subject: str
    status: BudgetStatus | KeyBudgetStatus
    daily_burn: float | None
    monthly_burn: float | None

    @property
    def action(self) -> str:
        base = "/ui/budgets/keys/" if self.kind == "key" else "/ui/budgets/"
        return base + self.subject

    @classmethod
    def of(cls, status: BudgetStatus | KeyBudgetStatus) -> Line:
        if isinstance(status, KeyBudgetStatus):
            kind: Literal["tenant", "key"] = "key"
            subject = status.key_id
        else:
            kind, subject = "tenant", status.tenant
        return cls(
            kind,
            subject,
            status,
            _burn(status.daily_spent_usd, status.daily_limit_usd),
            _burn(status.monthly_spent_usd, status.monthly_limit_usd),
        )


def _burn(spent: Decimal, limit: Decimal | None) -> float | None:
    """The share of a limit spent (1.0: all of it); None without a limit."""
    if limit is None:
        return None
    if limit == 0:
        return 1.0
    return float(spent / limit)


def plain(value: Decimal | None) -> str:
    """A limit as a form field shows it: ``12.5``, not ``12.5000000000``; blank for none."""
    if value is None:
        return ""
    return format(value.normalize(), "f")


def _lookup(value: str, pattern: str, name: str) -> str | None:
    value = value.strip()
    if value and not re.fullmatch(pattern, value):
        raise ValidationFailed(
            f"{name} is malformed", errors=[{"field": name, "message": "malformed"}]
        )
    return value or None


async def _page(
    request: Request,
    viewer: Viewer,
    budgets: Budgets,
    *,
    tenant: str = "",
    key: str = "",
    error: str | None = None,
    status: int = 200,
) -> Response:
    """The page, with a looked-up tenant or key added to its table (NotFound out of reach)."""
    try:
        want_tenant = _lookup(tenant, TENANT_PATTERN, "tenant")
        want_key = _lookup(key, KEY_ID_PATTERN, "key")
    except ValidationFailed as exc:
        want_tenant = want_key = None
        error, status = exc.detail, 422
    own = viewer.tenant
    if own is None:
        tenants = await budgets.list_tenants()
        if want_tenant is not None and all(s.tenant != want_tenant for s in tenants):
            tenants.append(await budgets.status(want_tenant))
    else:
        viewer.principal.ensure_tenant(want_tenant or own, "tenant", want_tenant or own)
        tenants = [await budgets.status(own)]
    keys = await budgets.list_keys(own)
    if want_key is not None and all(s.key_id != want_key for s in keys):
        keys.append(await budgets.key_status(want_key, own))
    return render(
        request,
        "budgets.html",
        viewer,
        status=status,
        tenants=[Line.of(s) for s in tenants],
        keys=[Line.of(s) for s in keys],
        lookup_tenant=tenant,
        lookup_key=key,
        plain=plain,
        error=error,
    )


@router.get("/ui/budgets", summary="Budgets")
async def budgets_page(
    request: Request,
    viewer: BudgetsReader,
    budgets: Budgets,
    tenant: LookupQuery = "",
    key: LookupQuery = "",
) -> Response:
    return await _page(request, viewer, budgets, tenant=tenant, key=key)


async def _update(request: Request) -> BudgetUpdate:
    """``PUT``'s body from the form: a blank field is no limit (the API's null)."""
    form = await request.form()
    values: dict[str, str | None] = {}
    for name in FIELDS:
        raw = form.get(name)
        values[name] = (raw.strip() or None) if isinstance(raw, str) else None
    try:
        return BudgetUpdate.model_validate(values)
    except ValidationError as exc:
        problems = [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()
        ]
        detail = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        raise ValidationFailed(detail, errors=problems) from exc


def _lowered(
    current: BudgetStatus | KeyBudgetStatus, body: BudgetUpdate
) -> list[tuple[str, Decimal, Decimal]]:
    """The periods whose new limit is lower than before and below what is already spent."""
    out = []
    for period, new, old, spent in (
        ("daily", body.daily_usd, current.daily_limit_usd, current.daily_spent_usd),
        ("monthly", body.monthly_usd, current.monthly_limit_usd, current.monthly_spent_usd),
    ):
        if new is not None and new < spent and (old is None or new < old):
            out.append((period, new, spent))
    return out


def _warning(whose: str, lowered: list[tuple[str, Decimal, Decimal]]) -> str:
    parts = [
        f"the {period} limit ${new:,.2f} is below the ${spent:,.4f} already spent"
        for period, new, spent in lowered
    ]
    return (
        f"For {whose}, {' and '.join(parts)}: its calls will be refused until the period "
        "resets (UTC). Set this budget anyway?"
    )


async def _invalid(
    request: Request, viewer: Viewer, budgets: Budgets, exc: ValidationFailed
) -> Response:
    return await _page(
        request, viewer, budgets, error=f"Budget not saved: {exc.detail}", status=422
    )


@router.post("/ui/budgets/keys/{key_id}", summary="Set an API key's budget")
async def set_key_budget(
    request: Request,
    key_id: KeyId,
    viewer: BudgetsWriter,
    budgets: Budgets,
    changes: Changes,
) -> Response:
    """``PUT /v1/keys/{key_id}/budget`` from a form."""
    try:
        body = await _update(request)
    except ValidationFailed as exc:
        return await _invalid(request, viewer, budgets, exc)
    current = await budgets.key_status(key_id, viewer.tenant)
    lowered = _lowered(current, body)
    if lowered and not await confirmed(request):
        message = _warning(f"key {key_id}", lowered)
        return await ask(request, viewer, message=message, verb="set it", back="/ui/budgets")
    await set_key_budget_as(budgets, changes, viewer.principal, key_id, body)
    return RedirectResponse("/ui/budgets", status_code=303)


@router.post("/ui/budgets/{tenant}", summary="Set a tenant's budget")
async def set_tenant_budget(
    request: Request,
    tenant: Tenant,
    viewer: BudgetsWriter,
    budgets: Budgets,
    changes: Changes,
) -> Response:
    """``PUT /v1/tenants/{tenant}/budget`` from a form."""
    try:
        body = await _update(request)
    except ValidationFailed as exc:
        return await _invalid(request, viewer, budgets, exc)
    viewer.principal.ensure_tenant(tenant, "tenant", tenant)
    lowered = _lowered(await budgets.status(tenant), body)
    if lowered and not await confirmed(request):
        message = _warning(f"tenant {tenant}", lowered)
        return await ask(request, viewer, message=message, verb="set it", back="/ui/budgets")
    await set_tenant_budget_as(budgets, changes, viewer.principal, tenant, body)
    return RedirectResponse("/ui/budgets", status_code=303)
