"""HTTP endpoints for incidents and the Alertmanager webhook receiver.

Thin: parse, call :class:`IncidentService`, shape the response. Incidents describe the
platform, not a tenant, so every route needs a platform-only permission (a key of tenant ``*``).
The Alertmanager body is validated here by hand (not as a typed parameter) so a bad delivery
gets the same 422 problem+json naming the field as every other endpoint, with field paths
relative to the payload.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import ValidationError

from quarterdeck.exceptions import ValidationFailed
from quarterdeck.incidents.models import (
    AckRequest,
    AlertmanagerResult,
    AlertmanagerWebhook,
    Incident,
    IncidentDetail,
    IncidentFilter,
    IncidentPage,
    IncidentStatus,
    ResolveRequest,
    Severity,
)
from quarterdeck.incidents.service import IncidentService
from quarterdeck.kit.ids import is_id
from quarterdeck.kit.wiring import provide
from quarterdeck.security.auth import Permission, Principal, require
from quarterdeck.security.trail import Changes

router = APIRouter(tags=["incidents"])
MAX_ALERT_BODY = 5 * 1024 * 1024
Incidents = Annotated[IncidentService, Depends(provide(IncidentService))]


@router.get(
    "/v1/incidents",
    response_model=IncidentPage,
    summary="List incidents, newest first",
    dependencies=[Depends(require(Permission.INCIDENTS_READ))],
)
async def list_incidents(
    incidents: Incidents,
    status: Annotated[list[IncidentStatus] | None, Query()] = None,
    severity: Annotated[list[Severity] | None, Query()] = None,
    service: Annotated[str | None, Query(max_length=200)] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> IncidentPage:
    if cursor is not None and not is_id(cursor, "inc"):
        raise ValidationFailed(
            "cursor is malformed", errors=[{"field": "cursor", "message": "malformed"}]
        )
    f = IncidentFilter(
        status=status, severity=severity, service=service, cursor=cursor, limit=limit
    )
    return await incidents.list(f)


@router.get(
    "/v1/incidents/{incident_id}",
    response_model=IncidentDetail,
    summary="One incident with its timeline and notifications",
    dependencies=[Depends(require(Permission.INCIDENTS_READ))],
)
async def get_incident(incident_id: str, incidents: Incidents) -> IncidentDetail:
    return await incidents.get(incident_id)


CanWrite = Annotated[Principal, Depends(require(Permission.INCIDENTS_WRITE))]


@router.post("/v1/incidents/{incident_id}/ack", response_model=Incident, summary="Acknowledge")
async def ack_incident(
    incident_id: str,
    principal: CanWrite,
    incidents: Incidents,
    changes: Changes,
    body: AckRequest | None = None,
) -> Incident:
    actor = (body or AckRequest()).actor
    done = await incidents.acknowledge(incident_id, actor)
    await changes.record(
        principal.key_id,
        "incident.acknowledged",
        "platform",
        {"incident_id": incident_id, "actor": actor},
    )
    return done


@router.post("/v1/incidents/{incident_id}/resolve", response_model=Incident, summary="Resolve")
async def resolve_incident(
    incident_id: str,
    principal: CanWrite,
    incidents: Incidents,
    changes: Changes,
    body: ResolveRequest | None = None,
) -> Incident:
    b = body or ResolveRequest()
    done = await incidents.resolve(incident_id, b.by, b.note)
    await changes.record(
        principal.key_id,
        "incident.resolved",
        "platform",
        {"incident_id": incident_id, "by": b.by, "note": b.note},
    )
    return done


@router.post(
    "/v1/alerts/alertmanager",
    response_model=AlertmanagerResult,
    summary="Alertmanager webhook receiver (payload version 4)",
    description="Each alert opens or updates the incident keyed by its fingerprint; a resolved "
    "alert resolves it. Repeat deliveries are idempotent. Alertmanager authenticates with an "
    "operator key for all tenants (`http_config.authorization.credentials`).",
    dependencies=[Depends(require(Permission.ALERTS_WRITE))],
)
async def alertmanager_webhook(request: Request, incidents: Incidents) -> AlertmanagerResult:
    raw = await request.body()
    if len(raw) > MAX_ALERT_BODY:
        raise ValidationFailed(
            "payload too large", errors=[{"field": "body", "message": "payload too large"}]
        )
    try:
        data: Any = json.loads(raw)
    except ValueError:
        raise ValidationFailed(
            "body is not valid JSON", errors=[{"field": "body", "message": "invalid JSON"}]
        ) from None
    try:
        payload = AlertmanagerWebhook.model_validate(data)
    except ValidationError as exc:
        errors = [
            {
                "field": ".".join(str(p) for p in e["loc"]) or "body",
                "message": e["msg"],
            }
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise ValidationFailed(f"invalid Alertmanager payload: {detail}", errors=errors) from None
    return await incidents.ingest_alertmanager(payload)
