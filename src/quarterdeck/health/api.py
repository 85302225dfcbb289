"""``GET /v1/health/checks``: the monitor's last result per check, leadership and breakers.

Not a probe (``/health`` and ``/ready`` are): it runs nothing, so calling it is free. Results are
the last ones this process computed; only the leader runs checks, so a non-leader answers with
``leader: false`` and whatever it saw when it last led.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from quarterdeck.health.monitor import HealthMonitor
from quarterdeck.kit.wiring import provide
from quarterdeck.security.auth import Permission, require

router = APIRouter(tags=["health"])
Monitor = Annotated[
    HealthMonitor,
    Depends(
        provide(HealthMonitor, unavailable="the health monitor is not running in this process")
    ),
]


@router.get(
    "/v1/health/checks",
    summary="Last health check results, leader and breaker states",
    dependencies=[Depends(require(Permission.HEALTH_READ))],
)
async def health_checks(monitor: Monitor) -> dict[str, Any]:
    return await monitor.snapshot()
