"""The run page: one run's state, its timeline, held tool calls and diff, live while it runs.

Reads go through :class:`RunService` with ``viewer.tenant``, exactly as ``GET /v1/runs/{id}``
does, so another tenant's run is *not found* here too (and so is a malformed id: a page has no
422 to show). While the run is not terminal the page listens to ``/live`` (Server-Sent Events)
and re-fetches its header and the new timeline rows when told ``changed``; the stream costs
no database query per page per interval: it waits on the process's one event hub
(``RunService.watch``), which polls once for every watched run. Buttons are in
:mod:`.run_actions`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse

from quarterdeck.approvals.models import Approval
from quarterdeck.approvals.service import ApprovalService
from quarterdeck.exceptions import InvalidState
from quarterdeck.runs.models import Run
from quarterdeck.runs.service import RunService
from quarterdeck.security.auth import Permission
from quarterdeck.ui import run_actions
from quarterdeck.ui.diffs import INLINE_LINES, highlight, line_count
from quarterdeck.ui.guard import RunsReader
from quarterdeck.ui.live import gone
from quarterdeck.ui.run_actions import PREFIX, Approvals, Runs, checked, resubmit_blocked
from quarterdeck.ui.run_view import Timeline
from quarterdeck.ui.web import SECURITY_HEADERS, Viewer, render

router = APIRouter()
router.include_router(run_actions.router)

EVENT_PAGE = 1000
MAX_EVENT_ID = 2**63 - 1
HEARTBEAT_S = 15.0
SAFETY_S = 30.0
"""A missed wake-up (another replica, a hub reconnect) costs at most this long."""
LIFETIME_S = 300.0
"""A stream ends after this; the browser reconnects (and the session is checked again)."""
COALESCE_S = 0.25
DISCONNECT_CHECK_S = 5.0


async def read_timeline(runs: RunService, run_id: str, tenant: str | None, after: int) -> Timeline:
    """Every event after ``after``, page by page, kept as the last rows the page shows."""
    timeline = Timeline(last_id=after)
    while True:
        batch = await runs.events(run_id, tenant, after=after, limit=EVENT_PAGE)
        timeline.add(batch)
        if len(batch) < EVENT_PAGE:
            return timeline
        after = batch[-1].id


def head_context(run: Run, viewer: Viewer) -> dict[str, Any]:
    """What the header (status, numbers, buttons) needs; the page and its fragment share it."""
    end = run.finished_at or (None if run.status.terminal else datetime.now(UTC))
    took = (end - run.started_at).total_seconds() if run.started_at and end else None
    writer = viewer.can(Permission.RUNS_WRITE)
    blocked = resubmit_blocked(run)
    return {
        "run": run,
        "took": took,
        "can_cancel": writer and not run.status.terminal,
        "can_resubmit": writer and blocked is None,
        "resubmit_blocked": blocked if writer else None,
    }


async def held_calls(
    approvals: ApprovalService, run: Run, viewer: Viewer
) -> list[tuple[Approval, str]]:
    """This run's pending approvals (listed with the API's tenant rule), with their input."""
    if run.status.terminal:
        return []  # a run's end cancels what it still waited for
    pending = await approvals.list(viewer.tenant, "pending", 100, run_id=run.id)
    return [(a, json.dumps(a.input, indent=2, ensure_ascii=False, default=str)) for a in pending]


async def diff_context(runs: RunService, run: Run, tenant: str | None) -> dict[str, Any]:
    """The diff's size, and the diff itself when short enough to show on the run page."""
    text = await runs.diff(run.id, tenant) if run.status.terminal else None
    if text is None:
        return {"run": run, "diff_lines": None, "inline_diff": None}
    lines = line_count(text)
    shown = await asyncio.to_thread(highlight, text) if 0 < lines < INLINE_LINES else None
    return {"run": run, "diff_lines": lines, "inline_diff": shown}


@router.get(PREFIX + "/{run_id}", summary="Run detail")
async def run_page(
    request: Request, run_id: str, viewer: RunsReader, runs: Runs, approvals: Approvals
) -> Response:
    run = await runs.get(checked(run_id), viewer.tenant)
    timeline = await read_timeline(runs, run.id, viewer.tenant, 0)
    context = {**head_context(run, viewer), **await diff_context(runs, run, viewer.tenant)}
    return render(
        request,
        "run.html",
        viewer,
        **context,
        tl=timeline,
        live=not run.status.terminal,
        held=await held_calls(approvals, run, viewer),
        audit_link=viewer.can(Permission.AUDIT_READ),
    )


@router.get(PREFIX + "/{run_id}/fragments/head", summary="Run header (live fragment)")
async def head_fragment(request: Request, run_id: str, viewer: RunsReader, runs: Runs) -> Response:
    run = await runs.get(checked(run_id), viewer.tenant)
    return render(request, "fragments/run_head.html", viewer, **head_context(run, viewer))


@router.get(PREFIX + "/{run_id}/fragments/held", summary="Held tool calls (live fragment)")
async def held_fragment(
    request: Request, run_id: str, viewer: RunsReader, runs: Runs, approvals: Approvals
) -> Response:
    run = await runs.get(checked(run_id), viewer.tenant)
    held = await held_calls(approvals, run, viewer)
    return render(request, "fragments/run_held.html", viewer, run=run, held=held)


@router.get(PREFIX + "/{run_id}/fragments/timeline", summary="New timeline rows (live fragment)")
async def timeline_fragment(
    request: Request,
    run_id: str,
    viewer: RunsReader,
    runs: Runs,
    after: Annotated[int, Query(ge=0, le=MAX_EVENT_ID)] = 0,
) -> Response:
    run = await runs.get(checked(run_id), viewer.tenant)
    timeline = await read_timeline(runs, run.id, viewer.tenant, after)
    return render(
        request,
        "fragments/run_timeline.html",
        viewer,
        run=run,
        tl=timeline,
        audit_link=viewer.can(Permission.AUDIT_READ),
    )


@router.get(PREFIX + "/{run_id}/fragments/diff", summary="Diff section (live fragment)")
async def diff_fragment(request: Request, run_id: str, viewer: RunsReader, runs: Runs) -> Response:
    run = await runs.get(checked(run_id), viewer.tenant)
    context = await diff_context(runs, run, viewer.tenant)
    return render(request, "fragments/run_diff.html", viewer, **context)


@router.get(PREFIX + "/{run_id}/diff", summary="The run's diff, highlighted")
async def diff_page(request: Request, run_id: str, viewer: RunsReader, runs: Runs) -> Response:
    run = await runs.get(checked(run_id), viewer.tenant)
    text = await runs.diff(run.id, viewer.tenant)
    if text is None:
        return render(request, "run_diff.html", viewer, run=run, hl=None, message=no_diff(run))
    shown = await asyncio.to_thread(highlight, text)
    return render(request, "run_diff.html", viewer, run=run, hl=shown, message=None)


@router.get(PREFIX + "/{run_id}/diff.txt", summary="The run's diff as a file")
async def diff_text(run_id: str, viewer: RunsReader, runs: Runs) -> Response:
    run = await runs.get(checked(run_id), viewer.tenant)
    text = await runs.diff(run.id, viewer.tenant)
    if text is None:
        raise InvalidState(no_diff(run))
    return Response(
        text.encode("utf-8"),
        media_type="text/plain; charset=utf-8",
        headers={
            **SECURITY_HEADERS,
            "Content-Disposition": f'attachment; filename="{run.id}.diff"',
        },
    )


def no_diff(run: Run) -> str:
    """The API's words for a run without a diff (``GET /v1/runs/{id}/diff``'s 409)."""
    return (
        f"run {run.id} has no diff yet (status {run.status.value}); diffs are produced when "
        "a run that has a workspace finishes"
    )


@router.get(PREFIX + "/{run_id}/live", summary="Run changes (Server-Sent Events)")
async def live(
    request: Request,
    run_id: str,
    viewer: RunsReader,
    runs: Runs,
    after: Annotated[int, Query(ge=0, le=MAX_EVENT_ID)] = 0,
) -> Response:
    run = await runs.get(checked(run_id), viewer.tenant)  # 404 before the stream starts
    return StreamingResponse(
        changes(request, runs, run.id, viewer.tenant, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


CHANGED = "event: changed\ndata: {}\n\n"
DONE = "event: done\ndata: {}\n\n"


async def changes(
    request: Request, runs: RunService, run_id: str, tenant: str | None, after: int
) -> AsyncIterator[str]:
    """``changed`` when the run has events after ``after`` (at most one per
    :data:`COALESCE_S`), ``done`` once it is terminal, a comment every :data:`HEARTBEAT_S`;
    ends after :data:`LIFETIME_S` or as soon as the client has gone.

    A wake-up is only a hint (the hub wakes every new watcher once, and after a reconnect all of
    them): what was sent is decided by the events read after it, one read per wake-up."""
    clock = asyncio.get_running_loop().time
    yield "retry: 2000\n\n"
    with runs.watch(run_id) as woken:
        run = await runs.get(run_id, tenant)
        moved, after, _ = await newer(runs, run_id, tenant, after)
        if moved:
            yield CHANGED  # moved since the page was drawn
        if run.status.terminal:
            yield DONE
            return
        start = beat = checked_at = clock()
        status = run.status
        while not (await request.is_disconnected() or gone(request)):
            now = clock()
            if now - start >= LIFETIME_S:
                return
            wake_at = min(beat + HEARTBEAT_S, checked_at + SAFETY_S, start + LIFETIME_S)
            woke = await wait(woken, min(wake_at - now, DISCONNECT_CHECK_S))
            now = clock()
            if woke:
                moved, after, status_moved = await newer(runs, run_id, tenant, after)
                if moved:
                    yield CHANGED
                    beat = now
                if status_moved:
                    checked_at, status = now, (await runs.get(run_id, tenant)).status
                    if status.terminal:
                        yield DONE
                        return
                if moved:
                    await asyncio.sleep(COALESCE_S)  # later wakes fold into the next one
            elif now - checked_at >= SAFETY_S:
                # No wake-up for a while: one read of the run, in case one was missed.
                checked_at, was = now, status
                status = (await runs.get(run_id, tenant)).status
                if status != was:
                    _, after, _ = await newer(runs, run_id, tenant, after)
                    yield CHANGED
                    beat = now
                if status.terminal:
                    yield DONE
                    return
            elif now - beat >= HEARTBEAT_S:
                yield ": heartbeat\n\n"
                beat = now


async def newer(
    runs: RunService, run_id: str, tenant: str | None, after: int
) -> tuple[bool, int, bool]:
    """Whether the run has events after ``after``, the newest event id, and whether one of
    them is a status change (the run's end is written with one: only then is the run read)."""
    moved = status = False
    while batch := await runs.events(run_id, tenant, after=after, limit=EVENT_PAGE):
        moved, after = True, batch[-1].id
        status = status or any(e.type == "status" for e in batch)
        if len(batch) < EVENT_PAGE:
            break
    return moved, after, status


async def wait(woken: asyncio.Event | None, timeout: float) -> bool:
    """Whether the hub woke us within ``timeout`` (without a hub: never; the safety re-read
    every :data:`SAFETY_S` still ends the stream)."""
    if woken is None:
        await asyncio.sleep(max(timeout, 0.0))
        return False
    try:
        await asyncio.wait_for(woken.wait(), max(timeout, 0.0))
    except TimeoutError:
        return False
    woken.clear()
    return True
