"""``GET /v1/gateway/calls`` and ``GET /v1/gateway/usage``: what gateway traffic did and cost.

Ordinary Quarterdeck API routes (problem+json errors, unlike the Anthropic-shaped ``/v1/messages``
routes), guarded by ``gateway:read`` and scoped to the caller's tenant: a tenant's key sees only
its own tenant's calls whatever it asks for; a ``*`` key sees every tenant and may narrow to one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, cast, get_args

from fastapi import APIRouter, Depends, Query

from quarterdeck.exceptions import ValidationFailed
from quarterdeck.gateway.models import CallFilter, CallPage, UsageGroup, UsageReport
from quarterdeck.gateway.reads import GatewayCalls
from quarterdeck.kit.clock import utcnow
from quarterdeck.kit.wiring import provide
from quarterdeck.security.auth import Permission, Principal, require

router = APIRouter(prefix="/v1/gateway", tags=["gateway"])
CanRead = Annotated[Principal, Depends(require(Permission.GATEWAY_READ))]
Calls = Annotated[
    GatewayCalls, Depends(provide(GatewayCalls, unavailable="the gateway is not running"))
]
GROUPS: tuple[str, ...] = get_args(UsageGroup)


def reach(principal: Principal, tenant: str | None) -> str | None:
    """The tenant a read is limited to (None: all). A ``*`` caller may narrow to ``tenant``; a
    tenant's key reads its own tenant, and asking for another one is refused, not ignored."""
    return principal.reach(tenant, Permission.GATEWAY_READ)


def parse_groups(values: list[str] | None) -> list[UsageGroup]:
    """``group_by`` given repeated (``?group_by=model&group_by=day``) or as a comma list."""
    groups: list[UsageGroup] = []
    bad: list[str] = []
    for value in values or []:
        for name in value.split(","):
            name = name.strip()
            if not name:
                continue
            if name in GROUPS:
                groups.append(cast(UsageGroup, name))  # checked against the Literal's values
            else:
                bad.append(name)
    if bad:
        raise ValidationFailed(
            f"cannot group by {', '.join(map(repr, bad))}; choose from {', '.join(GROUPS)}",
            errors=[{"field": "group_by", "message": f"unknown group {b!r}"} for b in bad],
        )
    return groups


@router.get(
    "/calls",
    response_model=CallPage,
    summary="Recorded gateway calls, newest first",
    description="Each `POST /v1/messages` relayed through the gateway: who, which model, status, "
    "tokens by class, cost (USD; `cost_estimated` when the model had no known price or the "
    "stream ended early). Pass `next_cursor` back as `cursor` for the next page. A tenant's key "
    "sees its own tenant only.",
)
async def list_calls(
    principal: CanRead, calls: Calls, f: Annotated[CallFilter, Query()]
) -> CallPage:
    return await calls.list(f, reach(principal, f.tenant))


@router.get(
    "/usage",
    response_model=UsageReport,
    summary="Gateway usage and cost totals, grouped",
    description="Totals over `[since, until)` (default: the current UTC month), grouped by any "
    "of `tenant`, `key`, `model`, `session`, `day` (repeat `group_by` or give a comma list). "
    "Times without a zone are UTC.",
)
async def usage(
    principal: CanRead,
    calls: Calls,
    since: datetime | None = None,
    until: datetime | None = None,
    group_by: Annotated[list[str] | None, Query(max_length=200)] = None,
    tenant: Annotated[str | None, Query(max_length=64)] = None,
) -> UsageReport:
    return await calls.usage(
        since=since,
        until=until,
        group_by=parse_groups(group_by),
        tenant=reach(principal, tenant),
        now=utcnow(),
    )
