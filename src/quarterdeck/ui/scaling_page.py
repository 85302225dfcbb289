"""The Scaling page: what the scaler is set to do, what it decided, and why.

The scaler acts on the platform's worker pool, so the page needs the platform-only
``scaling:read``, as ``GET /v1/scaling/*`` does, and reads through the same
:class:`ScalingService`. The chart of desired and current replicas is drawn here, as SVG
coordinates, because the page's CSP allows no inline script or style: the server draws it, and
it reads the same without JavaScript.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, cast, get_args

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from quarterdeck.exceptions import ValidationFailed
from quarterdeck.kit.wiring import provide
from quarterdeck.scaling.models import DecisionRecord, Direction
from quarterdeck.scaling.service import ScalingService
from quarterdeck.security.auth import Permission
from quarterdeck.ui.guard import page
from quarterdeck.ui.web import Viewer, render

router = APIRouter()
Scaling = Annotated[ScalingService, Depends(provide(ScalingService))]
ScalingReader = Annotated[Viewer, Depends(page(Permission.SCALING_READ))]

PAGE_SIZE = 50
CHART_POINTS = 60
DIRECTIONS: tuple[str, ...] = get_args(Direction)


@dataclass(frozen=True, slots=True)
class Chart:
    """Two step lines (desired, current) over the newest decisions, oldest on the left."""

    width: int
    height: int
    top: int  # the replica count at the top edge
    desired: str  # SVG polyline points
    current: str
    count: int
    summary: str  # what the chart shows, for a screen reader and the page's text


def chart(decisions: list[DecisionRecord], *, width: int = 480, height: int = 80) -> Chart | None:
    """The chart of ``decisions`` (any order; drawn by time), or None with fewer than two.

    Step lines, not slopes: a replica count holds until the next decision changes it, and a
    slope would draw counts that never existed.
    """
    ordered = sorted(decisions, key=lambda d: (d.at, d.id))
    n = len(ordered)
    if n < 2:
        return None
    top = max(1, *(max(d.desired, d.current) for d in ordered))
    pad = 2.0
    step = (width - 2 * pad) / (n - 1)

    def y(value: int) -> float:
        return height - pad - value / top * (height - 2 * pad)

    def line(values: list[int]) -> str:
        points = [(pad, y(values[0]))]
        for i in range(1, n):
            x = pad + i * step
            points.append((x, y(values[i - 1])))
            points.append((x, y(values[i])))
        return " ".join(f"{px:.1f},{py:.1f}" for px, py in points)

    desired = [d.desired for d in ordered]
    current = [d.current for d in ordered]
    summary = (
        f"{n} decisions: desired {min(desired)} to {max(desired)} replicas, current "
        f"{min(current)} to {max(current)}; newest desired {desired[-1]}, current {current[-1]}"
    )
    return Chart(width, height, top, line(desired), line(current), n, summary)


def _direction(value: str | None) -> Direction | None:
    if not value:
        return None
    if value not in DIRECTIONS:
        raise ValidationFailed(
            f"unknown direction {value!r}; choose from {', '.join(DIRECTIONS)}",
            errors=[{"field": "direction", "message": f"choose from {', '.join(DIRECTIONS)}"}],
        )
    return cast(Direction, value)  # one of its values, checked above


@router.get("/ui/scaling", summary="Scaling")
async def scaling_page(
    request: Request,
    viewer: ScalingReader,
    scaling: Scaling,
    direction: Annotated[str | None, Query(max_length=8)] = None,
    cursor: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    chosen = _direction(direction)
    decisions = await scaling.decisions(limit=PAGE_SIZE, cursor=cursor or None, direction=chosen)
    recent = await scaling.decisions(limit=CHART_POINTS)
    context: dict[str, Any] = {
        "scaler": await scaling.status(),
        "page": decisions,
        "chart": chart(recent.items),
        "direction": chosen,
        "directions": DIRECTIONS,
        "cursor": cursor or None,
    }
    return render(request, "scaling.html", viewer, **context)
