"""HTTP endpoints for the scaler's status and its stored decisions.

Thin: parse, call :class:`ScalingService`, return its records. Why these exist at all: an
autoscaler is judged after the fact ("why did it not scale out at 14:02?"), so every decision
is data a person or a script can read back from any replica, not a log line on the leader.

The scaler acts on the platform's worker pool, which belongs to no tenant, so both routes need
the platform-only ``scaling:read`` (a key of tenant ``*``). The cursor is a decimal decision id;
its pattern is declared on the parameter, so the OpenAPI document states it and a malformed one
is a 422 naming the field before the service is asked.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from quarterdeck.kit.wiring import provide
from quarterdeck.scaling.models import DecisionPage, Direction, ScalerStatus
from quarterdeck.scaling.service import ScalingService
from quarterdeck.security.auth import Permission, require

router = APIRouter(tags=["scaling"])
Scaling = Annotated[ScalingService, Depends(provide(ScalingService))]

CURSOR_PATTERN = r"^[0-9]{1,18}$"
"""A decision id as ``next_cursor`` gives it: at most 18 digits, so it always fits a bigint."""
MAX_LIMIT = 500


@router.get(
    "/v1/scaling/status",
    response_model=ScalerStatus,
    summary="The scaler's mode, policy and target, and its newest decision",
    description="Read from Postgres, so any replica answers the same; `leader` says whether "
    "the replica that answered holds the scaler's leadership. `stale` is true when a scaler is "
    "configured but no decision was stored for three intervals.",
    dependencies=[Depends(require(Permission.SCALING_READ))],
)
async def scaling_status(scaling: Scaling) -> ScalerStatus:
    return await scaling.status()


@router.get(
    "/v1/scaling/decisions",
    response_model=DecisionPage,
    summary="The scaler's decisions, newest first",
    description="Each decision carries the policy's inputs and intermediates (`factors`), the "
    "reason a person reads, and what was written to the target (`applied`, `error`).",
    dependencies=[Depends(require(Permission.SCALING_READ))],
)
async def scaling_decisions(
    scaling: Scaling,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    cursor: Annotated[
        str | None,
        Query(
            pattern=CURSOR_PATTERN,
            description="A `next_cursor` as returned: older decisions than that page's last.",
        ),
    ] = None,
    direction: Annotated[Direction | None, Query(description="Only up, down or hold.")] = None,
) -> DecisionPage:
    return await scaling.decisions(limit=limit, cursor=cursor, direction=direction)
