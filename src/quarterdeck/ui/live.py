"""``/ui/live/changes``: one Server-Sent Events stream telling open pages that runs changed.

A page's live regions re-fetch their own fragment on ``event: runs`` (htmx's SSE extension),
so the stream carries no data a viewer could not read anyway: only a counter. It fans out from
the process's one :class:`~quarterdeck.runs.events.RunEventHub` (``subscribe_all``), which
polls Postgres once per interval for every open page together: a hundred open dashboards cost
the database what one does.

The stream is bounded: at most one ``runs`` event per ``MIN_GAP_S`` (a burst of a thousand
runs is one refresh, not a thousand), a comment every ``HEARTBEAT_S`` so proxies keep it open
and a vanished client is noticed, and an end after ``LIFETIME_S``. The browser then reconnects
through the guard again, so a revoked key or an ended session stops getting updates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from quarterdeck.exceptions import Unavailable
from quarterdeck.health import probes
from quarterdeck.kit.wiring import provide, services
from quarterdeck.runs.events import RunEventHub
from quarterdeck.runs.service import RunService
from quarterdeck.ui.guard import SignedIn

router = APIRouter()
Runs = Annotated[RunService, Depends(provide(RunService))]

MIN_GAP_S = 2.0
HEARTBEAT_S = 15.0
LIFETIME_S = 300.0
TICK_S = 1.0
"""How often the stream checks that its client is still there while nothing happens."""


def gone(request: Request) -> bool:
    """Whether a stream should end now: its server is draining (SIGTERM; the browser reconnects
    to a replica that is not, rather than holding up this one's shutdown)."""
    ready = services(request.app).get(probes.Readiness)
    return ready is not None and ready.draining


async def changes(
    request: Request,
    hub: RunEventHub,
    tenant: str | None,
    *,
    min_gap: float = MIN_GAP_S,
    heartbeat: float = HEARTBEAT_S,
    lifetime: float = LIFETIME_S,
) -> AsyncIterator[str]:
    """The stream's lines: ``event: runs`` (numbered) after runs changed, heartbeats, the end."""
    start = time.monotonic()
    last_sent = last_beat = start - min_gap
    sent = 0
    yield "retry: 3000\n\n"
    with hub.subscribe_all(tenant) as changed:
        while (now := time.monotonic()) - start < lifetime:
            if await request.is_disconnected() or gone(request):
                return
            wait = min(TICK_S, max(0.0, start + lifetime - now))
            if changed.is_set():
                # Coalesce: a change within min_gap of the last event waits for the gap to pass.
                wait = min(wait, max(0.0, last_sent + min_gap - now))
                if now - last_sent >= min_gap:
                    changed.clear()
                    sent += 1
                    last_sent = last_beat = now
                    yield f"event: runs\ndata: {sent}\n\n"
                    continue
                await asyncio.sleep(wait)
            else:
                try:
                    await asyncio.wait_for(changed.wait(), wait)
                except TimeoutError:
                    pass
            if time.monotonic() - last_beat >= heartbeat:
                last_beat = time.monotonic()
                yield ": keep-alive\n\n"


@router.get("/ui/live/changes", summary="Live signal: runs changed (SSE)")
async def live_changes(request: Request, viewer: SignedIn, runs: Runs) -> StreamingResponse:
    if runs.hub is None:
        raise Unavailable("live updates are not available on this server")
    return StreamingResponse(
        changes(request, runs.hub, viewer.tenant),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
