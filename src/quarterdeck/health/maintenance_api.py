"""``/v1/maintenance``: declare, list and delete maintenance windows (scheduled downtime).

Thin, like every router. Windows are the platform's (they excuse downtime in every tenant's
report), so the same platform-only permissions as incidents guard them: ``incidents:read`` to
list, ``incidents:write`` to change, which a key of one tenant never has. Each change is
audited on the ``platform`` chain before the response is sent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from quarterdeck.health.maintenance import (
    MaintenanceRequest,
    MaintenanceService,
    MaintenanceWindow,
)
from quarterdeck.kit.wiring import provide
from quarterdeck.security.auth import Permission, Principal, require
from quarterdeck.security.trail import Changes

__all__ = ["Maintenance", "router"]

router = APIRouter(tags=["maintenance"])
Maintenance = Annotated[MaintenanceService, Depends(provide(MaintenanceService))]
CanWrite = Annotated[Principal, Depends(require(Permission.INCIDENTS_WRITE))]


@router.post(
    "/v1/maintenance",
    response_model=MaintenanceWindow,
    status_code=201,
    summary="Declare a maintenance window (scheduled downtime, at most 7 days)",
)
async def create_window(
    body: MaintenanceRequest, principal: CanWrite, maintenance: Maintenance, changes: Changes
) -> MaintenanceWindow:
    window = await maintenance.create(body, principal.key_id)
    await changes.record(
        principal.key_id,
        "maintenance.scheduled",
        "platform",
        MaintenanceService.audit_details(window),
    )
    return window


@router.get(
    "/v1/maintenance",
    response_model=list[MaintenanceWindow],
    summary="Maintenance windows overlapping [from, to), earliest first",
    dependencies=[Depends(require(Permission.INCIDENTS_READ))],
)
async def list_windows(
    maintenance: Maintenance,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
) -> list[MaintenanceWindow]:
    return await maintenance.list_windows(start, end)


@router.delete(
    "/v1/maintenance/{window_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a maintenance window",
)
async def delete_window(
    window_id: Annotated[str, Path(max_length=64)],
    principal: CanWrite,
    maintenance: Maintenance,
    changes: Changes,
) -> Response:
    window = await maintenance.delete(window_id)
    await changes.record(
        principal.key_id,
        "maintenance.deleted",
        "platform",
        MaintenanceService.audit_details(window),
    )
    return Response(status_code=204)
