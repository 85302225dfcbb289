"""The Rollouts pages: what is being rolled out now, how far, on what evidence; promote and abort.

A rollout changes the platform's own Deployment, so the pages need the platform-only
``rollouts:*`` permissions, as ``/v1/rollouts`` does, and call the same
:class:`RolloutService` and audit the same events as ``rollouts/api.py``; the actor is the
signed-in key (``key:<id>``). Aborting sends every user back to the old version and cannot be
taken back, so it is confirmed first (``ui/confirm.py``) and needs a reason, which the rollout
and the change log keep. Promoting is the normal way forward and is not confirmed.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response

from quarterdeck.exceptions import ValidationFailed
from quarterdeck.kit.ids import is_id
from quarterdeck.kit.wiring import provide
from quarterdeck.rollouts.models import Rollout
from quarterdeck.rollouts.service import RolloutService
from quarterdeck.security.auth import Permission
from quarterdeck.security.trail import Changes
from quarterdeck.ui.confirm import ask, confirmed
from quarterdeck.ui.guard import action, page
from quarterdeck.ui.web import Viewer, render

router = APIRouter()
Rollouts = Annotated[RolloutService, Depends(provide(RolloutService))]
RolloutsReader = Annotated[Viewer, Depends(page(Permission.ROLLOUTS_READ))]
RolloutsWriter = Annotated[Viewer, Depends(action(Permission.ROLLOUTS_WRITE))]

PAGE_SIZE = 50
MAX_REASON = 500


def actor_of(viewer: Viewer) -> str:
    """Who promoted or aborted, as the rollout's events and the change log name them."""
    return f"key:{viewer.principal.key_id}"


def _check_id(value: str, field: str = "rollout_id") -> str:
    if not is_id(value, "ro"):
        raise ValidationFailed(
            f"{field} is not a rollout id", errors=[{"field": field, "message": "malformed"}]
        )
    return value


def real_weight(rollout: Rollout) -> float | None:
    """What the weight really is when it differs from the one asked for (None: the same)."""
    real = rollout.effective_weight
    if real is None or abs(real - rollout.weight) < 1e-9:
        return None
    return real


def step_of(rollout: Rollout) -> str:
    return f"{min(rollout.step_index + 1, rollout.steps)}/{rollout.steps}"


@router.get("/ui/rollouts", summary="Rollouts")
async def rollouts_page(
    request: Request,
    viewer: RolloutsReader,
    rollouts: Rollouts,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    if cursor:
        _check_id(cursor, "cursor")
    live = await rollouts.list(limit=PAGE_SIZE, live_only=True)
    history = await rollouts.list(limit=PAGE_SIZE, cursor=cursor or None)
    context: dict[str, Any] = {
        "live": live.items,
        "page": history,
        "cursor": cursor or None,
        "real_weight": real_weight,
        "step_of": step_of,
    }
    return render(request, "rollouts.html", viewer, **context)


@router.get("/ui/rollouts/{rollout_id}", summary="Rollout")
async def rollout_page(
    request: Request, rollout_id: str, viewer: RolloutsReader, rollouts: Rollouts
) -> Response:
    detail = await rollouts.get(_check_id(rollout_id))
    context: dict[str, Any] = {
        "rollout": detail,
        "real_weight": real_weight,
        "step_of": step_of,
        "max_reason": MAX_REASON,
    }
    return render(request, "rollout.html", viewer, **context)


def _back(rollout_id: str) -> RedirectResponse:
    return RedirectResponse(f"/ui/rollouts/{rollout_id}", status_code=303)


@router.post("/ui/rollouts/{rollout_id}/promote", summary="Promote a rollout")
async def promote(
    request: Request,
    rollout_id: str,
    viewer: RolloutsWriter,
    rollouts: Rollouts,
    changes: Changes,
) -> Response:
    _check_id(rollout_id)
    form = await request.form()
    full = form.get("full") == "yes"
    done = await rollouts.promote(rollout_id, full=full, by=actor_of(viewer))
    await changes.record(
        viewer.principal.key_id,
        "rollout.promoted",
        "platform",
        {"rollout_id": done.id, "full": full},
    )
    return _back(rollout_id)


@router.post("/ui/rollouts/{rollout_id}/abort", summary="Abort a rollout")
async def abort(
    request: Request,
    rollout_id: str,
    viewer: RolloutsWriter,
    rollouts: Rollouts,
    changes: Changes,
) -> Response:
    current = await rollouts.get(_check_id(rollout_id))  # a 404 page before any confirmation
    form = await request.form()
    raw = form.get("reason")
    reason = raw.strip() if isinstance(raw, str) else ""
    if not reason or len(reason) > MAX_REASON:
        raise ValidationFailed(
            f"say why you abort, in at most {MAX_REASON} characters",
            errors=[{"field": "reason", "message": f"required, at most {MAX_REASON} characters"}],
        )
    if not await confirmed(request):
        return await ask(
            request,
            viewer,
            message=f"Abort the rollout of {current.image} to {current.target}? All traffic "
            "goes back to the stable version.",
            verb="abort it",
            back=f"/ui/rollouts/{rollout_id}",
        )
    done = await rollouts.abort(rollout_id, reason=reason, by=actor_of(viewer))
    await changes.record(
        viewer.principal.key_id,
        "rollout.aborted",
        "platform",
        {"rollout_id": done.id, "reason": reason},
    )
    return _back(rollout_id)
