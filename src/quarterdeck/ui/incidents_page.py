"""The incidents pages: what is broken now, what was, how fast it healed; acknowledge and resolve.

Incidents describe the platform, not a tenant, so these pages need the platform-only
``incidents:*`` permissions, as the API does. Acknowledge and resolve call what
``incidents/api.py`` calls and audit the same events; the actor is the signed-in key
(``key:<id>``), which is who did it. Resolving pages the on-call's all-clear and cannot be taken
back, so it is confirmed first (``ui/confirm.py``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response

from quarterdeck.exceptions import ValidationFailed
from quarterdeck.incidents.models import IncidentFilter, IncidentStatus, ResolvedBy, Severity
from quarterdeck.incidents.service import IncidentService
from quarterdeck.kit.ids import is_id
from quarterdeck.kit.wiring import provide
from quarterdeck.security.trail import Changes
from quarterdeck.ui.confirm import ask, confirmed
from quarterdeck.ui.guard import IncidentsReader, IncidentsWriter
from quarterdeck.ui.web import Viewer, render

router = APIRouter()
Incidents = Annotated[IncidentService, Depends(provide(IncidentService))]

PAGE_SIZE = 50
MTTR_WINDOW_DAYS = 30
MAX_NOTE = 10_000
VIEWS: dict[str, list[IncidentStatus] | None] = {
    "open": [IncidentStatus.open, IncidentStatus.acknowledged],
    "resolved": [IncidentStatus.resolved],
    "all": None,
}


def actor_of(viewer: Viewer) -> str:
    """Who acknowledged or resolved, as the timeline and the audit record name them."""
    return f"key:{viewer.principal.key_id}"


def _severities(values: list[str]) -> list[Severity] | None:
    chosen = [v for v in values if v]
    try:
        return [Severity(v) for v in chosen] or None
    except ValueError as exc:
        raise ValidationFailed(
            f"unknown severity; choose from {', '.join(Severity)}",
            errors=[{"field": "severity", "message": str(exc)}],
        ) from exc


@router.get("/ui/incidents", summary="Incidents")
async def incidents_page(
    request: Request,
    viewer: IncidentsReader,
    incidents: Incidents,
    view: Annotated[str, Query(max_length=16)] = "open",
    severity: Annotated[list[str] | None, Query(max_length=16)] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    if view not in VIEWS:
        raise ValidationFailed(
            f"unknown view {view!r}; choose from {', '.join(VIEWS)}",
            errors=[{"field": "view", "message": f"choose from {', '.join(VIEWS)}"}],
        )
    if cursor and not is_id(cursor, "inc"):
        raise ValidationFailed(
            "cursor is malformed", errors=[{"field": "cursor", "message": "malformed"}]
        )
    severities = _severities(severity or [])
    page = await incidents.list(
        IncidentFilter(
            status=VIEWS[view], severity=severities, cursor=cursor or None, limit=PAGE_SIZE
        )
    )
    context: dict[str, Any] = {
        "view": view,
        "views": list(VIEWS),
        "severities": list(Severity),
        "chosen": {s.value for s in severities or []},
        "page": page,
        "cursor": cursor,
        "mttr_s": await incidents.mttr(MTTR_WINDOW_DAYS),
        "auto_share": await incidents.auto_recovery_share(MTTR_WINDOW_DAYS),
        "window_days": MTTR_WINDOW_DAYS,
    }
    return render(request, "incidents.html", viewer, **context)


@router.get("/ui/incidents/{incident_id}", summary="Incident")
async def incident_page(
    request: Request, incident_id: str, viewer: IncidentsReader, incidents: Incidents
) -> Response:
    detail = await incidents.get(incident_id)
    return render(request, "incident.html", viewer, incident=detail)


def _back(incident_id: str) -> RedirectResponse:
    return RedirectResponse(f"/ui/incidents/{incident_id}", status_code=303)


@router.post("/ui/incidents/{incident_id}/ack", summary="Acknowledge an incident")
async def acknowledge(
    incident_id: str, viewer: IncidentsWriter, incidents: Incidents, changes: Changes
) -> Response:
    actor = actor_of(viewer)
    await incidents.acknowledge(incident_id, actor)
    await changes.record(
        viewer.principal.key_id,
        "incident.acknowledged",
        "platform",
        {"incident_id": incident_id, "actor": actor},
    )
    return _back(incident_id)


@router.post("/ui/incidents/{incident_id}/resolve", summary="Resolve an incident")
async def resolve(
    request: Request,
    incident_id: str,
    viewer: IncidentsWriter,
    incidents: Incidents,
    changes: Changes,
) -> Response:
    current = await incidents.get(incident_id)  # a 404 page before any confirmation
    if not await confirmed(request):
        return await ask(
            request,
            viewer,
            message=f"Resolve incident {current.title!r}? Its on-call gets the all-clear.",
            verb="resolve it",
            back=f"/ui/incidents/{incident_id}",
        )
    form = await request.form()
    raw = form.get("note")
    note = raw.strip() if isinstance(raw, str) and raw.strip() else None
    if note is not None and len(note) > MAX_NOTE:
        raise ValidationFailed(
            f"the note is longer than {MAX_NOTE} characters",
            errors=[{"field": "note", "message": f"at most {MAX_NOTE} characters"}],
        )
    by = ResolvedBy.human.value
    await incidents.resolve(incident_id, by, note)
    await changes.record(
        viewer.principal.key_id,
        "incident.resolved",
        "platform",
        {"incident_id": incident_id, "by": by, "note": note},
    )
    return _back(incident_id)
