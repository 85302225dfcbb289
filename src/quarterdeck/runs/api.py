"""HTTP endpoints for runs. Thin: parse, call :class:`RunService`, shape the response."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse

from quarterdeck.exceptions import InvalidState, ValidationFailed
from quarterdeck.kit.ids import is_id
from quarterdeck.kit.wiring import provide
from quarterdeck.runs.models import (
    AcceptedRun,
    Run,
    RunBatchAccepted,
    RunBatchCreate,
    RunCreate,
    RunEvent,
    RunFilter,
    RunPage,
    RunStatus,
)
from quarterdeck.runs.service import RunService
from quarterdeck.security.auth import Forbidden, Permission, Principal, Role, require
from quarterdeck.security.trail import RequestContext
from quarterdeck.tracing.propagation import submitted_with

router = APIRouter(prefix="/v1/runs", tags=["runs"])
CanRead = Annotated[Principal, Depends(require(Permission.RUNS_READ))]
CanWrite = Annotated[Principal, Depends(require(Permission.RUNS_WRITE))]
Runs = Annotated[RunService, Depends(provide(RunService))]


def context(request: Request, principal: Principal) -> RequestContext:
    """Who asked and from where, for the audit log."""
    return RequestContext.of(request, principal.key_id)


def _check_id(run_id: str) -> str:
    if not is_id(run_id, "run"):
        raise ValidationFailed(
            f"run id {run_id!r} is malformed", errors=[{"field": "run_id", "message": "malformed"}]
        )
    return run_id


MAX_EVENT_ID = 2**63 - 1
"""Event ids are Postgres ``bigint``: a larger cursor is refused (422), not sent to the query."""


def _event_id(value: str) -> int:
    """The ``Last-Event-ID`` an SSE client resumes after: a non-negative int64, else 422."""
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_EVENT_ID:
        raise ValidationFailed(
            f"Last-Event-ID must be an event id (an integer from 0 to {MAX_EVENT_ID})",
            errors=[{"field": "header.Last-Event-ID", "message": "not an event id"}],
        )
    return int(value)


def tenant_reach(principal: Principal, tenant: str | None) -> str | None:
    """The tenant a listing is narrowed to (None: as far as the caller reaches). A ``*`` caller
    may name any tenant; a tenant's key naming another tenant is refused (403), not ignored."""
    own = principal.tenant_filter()
    if own is not None and tenant is not None and tenant != own:
        raise Forbidden(
            f"a key of tenant {own!r} cannot read tenant {tenant!r}",
            permission=Permission.RUNS_READ.value,
        )
    return tenant


@router.post("", status_code=202, response_model=Run, summary="Submit a run")
async def submit_run(
    body: RunCreate,
    request: Request,
    response: Response,
    principal: CanWrite,
    runs: Runs,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Run:
    with submitted_with(request.headers):  # a client's traceparent: the run continues it
        run, created = await runs.submit(
            body,
            tenant=principal.tenant_for_new(),
            idempotency_key=idempotency_key,
            context=context(request, principal),
            admin=principal.role is Role.admin,
        )
    response.headers["Location"] = f"/v1/runs/{run.id}"
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return run


@router.post(
    "/batch",
    status_code=202,
    response_model=RunBatchAccepted,
    summary="Submit up to 1,000 runs at once",
    description="All runs are accepted in one transaction, or none is. With `Idempotency-Key`, "
    "a retried batch returns the same run ids (`Idempotent-Replayed: true`).",
)
async def submit_batch(
    body: RunBatchCreate,
    request: Request,
    response: Response,
    principal: CanWrite,
    runs: Runs,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> RunBatchAccepted:
    with submitted_with(request.headers):
        ids, created = await runs.submit_batch(
            body.runs,
            tenant=principal.tenant_for_new(),
            idempotency_key=idempotency_key,
            context=context(request, principal),
            admin=principal.role is Role.admin,
        )
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return RunBatchAccepted(
        count=len(ids), runs=[AcceptedRun(id=i, location=f"/v1/runs/{i}") for i in ids]
    )


@router.get("", response_model=RunPage, summary="List runs, newest first")
async def list_runs(
    principal: CanRead,
    runs: Runs,
    status: Annotated[list[RunStatus] | None, Query()] = None,
    agent_type: Annotated[str | None, Query(max_length=64)] = None,
    model: Annotated[str | None, Query(max_length=128)] = None,
    tenant: Annotated[
        str | None, Query(max_length=64, description="Only this tenant's runs (`*` keys).")
    ] = None,
    q: Annotated[
        str | None,
        Query(max_length=200, description="A run id or id prefix, or words of the prompt."),
    ] = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> RunPage:
    if cursor is not None and not is_id(cursor, "run"):
        raise ValidationFailed(
            "cursor is malformed", errors=[{"field": "cursor", "message": "malformed"}]
        )
    f = RunFilter(
        status=status,
        agent_type=agent_type,
        model=model or None,
        tenant=tenant_reach(principal, tenant or None),
        q=(q or "").strip() or None,
        created_after=created_after,
        created_before=created_before,
        cursor=cursor,
        limit=limit,
    )
    return await runs.list_page(f, principal.tenant_filter())


@router.get(
    "/{run_id}",
    response_model=Run,
    summary="Get one run",
    description="While the database is down, answers with this server's last copy of the run, "
    "marked `Cache-Status: quarterdeck; hit; detail=database-unavailable` with an `Age`.",
)
async def get_run(run_id: str, response: Response, principal: CanRead, runs: Runs) -> Run:
    run, age = await runs.get_or_cached(_check_id(run_id), principal.tenant_filter())
    if age is not None:
        response.headers["Cache-Status"] = "quarterdeck; hit; detail=database-unavailable"
        response.headers["Age"] = str(int(age))
    return run


@router.get(
    "/{run_id}/diff",
    summary="The unified diff of the run's workspace",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/x-diff": {}}}},
)
async def run_diff(run_id: str, principal: CanRead, runs: Runs) -> PlainTextResponse:
    diff = await runs.diff(_check_id(run_id), principal.tenant_filter())
    if diff is None:
        run = await runs.get(run_id, principal.tenant_filter())
        raise InvalidState(
            f"run {run_id} has no diff yet (status {run.status.value}); diffs are produced when "
            "a run that has a workspace finishes"
        )
    return PlainTextResponse(diff, media_type="text/x-diff")


@router.post("/{run_id}/cancel", response_model=Run, summary="Cancel a queued or running run")
async def cancel_run(run_id: str, request: Request, principal: CanWrite, runs: Runs) -> Run:
    return await runs.cancel(
        _check_id(run_id), principal.tenant_filter(), context(request, principal)
    )


@router.get(
    "/{run_id}/wait",
    response_model=Run,
    summary="Wait until the run is terminal or the timeout passes",
)
async def wait_run(
    run_id: str,
    principal: CanRead,
    runs: Runs,
    timeout: Annotated[float, Query(ge=0, le=300)] = 30.0,
) -> Run:
    return await runs.wait(_check_id(run_id), timeout, principal.tenant_filter())


@router.get(
    "/{run_id}/events",
    response_model=list[RunEvent],
    summary="The run's event timeline, as JSON or as a live SSE stream",
    description="Send `Accept: text/event-stream` (or `?stream=true`) for Server-Sent Events; "
    "the stream resumes after `Last-Event-ID` and ends when the run is terminal.",
)
async def run_events(
    run_id: str,
    request: Request,
    principal: CanRead,
    runs: Runs,
    after: Annotated[int, Query(ge=0, le=MAX_EVENT_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    stream: bool = False,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    _check_id(run_id)
    wants_sse = stream or "text/event-stream" in request.headers.get("accept", "")
    if not wants_sse:
        events = await runs.events(run_id, principal.tenant_filter(), after=after, limit=limit)
        return Response(
            content=json.dumps([e.model_dump(mode="json") for e in events]),
            media_type="application/json",
        )
    start = _event_id(last_event_id) if last_event_id else after
    await runs.get(run_id, principal.tenant_filter())  # 404 before the stream starts

    async def sse() -> AsyncIterator[str]:
        yield "retry: 1000\n\n"
        async for event in runs.follow(run_id, after=start, tenant=principal.tenant_filter()):
            payload = json.dumps(event.model_dump(mode="json"))
            yield f"id: {event.id}\nevent: {event.type}\ndata: {payload}\n\n"
        yield "event: end\ndata: {}\n\n"

    return StreamingResponse(
        sse(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
