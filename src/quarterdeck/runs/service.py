"""Run use-cases: submit, read, list, cancel, wait and follow events.

Endpoints and the CLI call these; they own transactions and error mapping, repositories own SQL.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from quarterdeck.config import Settings
from quarterdeck.exceptions import (
    InvalidState,
    NotFound,
    Unavailable,
)
from quarterdeck.runs import queue
from quarterdeck.runs import repository as repo
from quarterdeck.runs.events import RunEventHub
from quarterdeck.runs.models import Run, RunEvent, RunFilter, RunPage, RunStatus
from quarterdeck.runs.submission import DEFAULT_TENANT, Submissions
from quarterdeck.runs.worker import record_outcome
from quarterdeck.security.trail import RequestContext
from quarterdeck.store.pool import Database

RECENT_RUNS = 10_000
"""Runs kept in memory to answer reads while the database is down."""


class RunService(Submissions):
    """Run use-cases: submit (see :class:`Submissions`), read, list, cancel, wait, follow."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        hub: RunEventHub | None = None,
        catalog: Any | None = None,
    ) -> None:
        super().__init__(settings, db, catalog)
        self.hub = hub
        self._recent: OrderedDict[str, tuple[Run, float]] = OrderedDict()

    async def get(self, run_id: str, tenant: str | None = DEFAULT_TENANT) -> Run:
        async with self.db.acquire() as conn:
            run = await repo.get_run(conn, run_id, tenant)
        if run is None:
            raise NotFound(f"run {run_id} not found")
        self._remember(run)
        return run

    async def get_or_cached(
        self, run_id: str, tenant: str | None = DEFAULT_TENANT
    ) -> tuple[Run, float | None]:
        """(run, None) from Postgres; while the database is down, (last copy read, its age).

        Reads keep answering through a database outage with what this process last saw; the
        age lets the caller say so (``Cache-Status``, ``Age``). Writes still get 503.
        """
        try:
            return await self.get(run_id, tenant), None
        except Unavailable:
            cached = self._recent.get(run_id)
            if cached is None or (tenant is not None and cached[0].tenant != tenant):
                raise
            return cached[0], time.monotonic() - cached[1]

    def _remember(self, run: Run) -> None:
        self._recent[run.id] = (run, time.monotonic())
        self._recent.move_to_end(run.id)
        while len(self._recent) > RECENT_RUNS:
            self._recent.popitem(last=False)

    async def list_page(self, f: RunFilter, tenant: str | None = DEFAULT_TENANT) -> RunPage:
        async with self.db.acquire() as conn:
            items = await repo.list_runs(conn, tenant, f)
        cursor = items[-1].id if len(items) == f.limit else None
        return RunPage(items=items, next_cursor=cursor)

    async def cancel(
        self,
        run_id: str,
        tenant: str | None = DEFAULT_TENANT,
        context: RequestContext | None = None,
    ) -> Run:
        """Cancel a queued run at once; ask the worker holding a running run to stop."""
        async with self.db.transaction() as conn:
            run = await repo.get_run(conn, run_id, tenant)
            if run is None:
                raise NotFound(f"run {run_id} not found")
            if run.status.terminal:
                raise InvalidState(f"run {run_id} is already {run.status.value}")
            job_id = await conn.fetchval("SELECT job_id FROM runs WHERE id = $1 FOR UPDATE", run_id)
            finished: Run | None = None
            if run.status is RunStatus.queued:
                finished = await repo.finish(
                    conn, run_id, RunStatus.cancelled, error="cancelled before it started"
                )
            else:
                await repo.request_cancel(conn, run_id)
                await repo.append_event(conn, run_id, "cancel_requested", {})
            if job_id is not None:
                await queue.cancel_jobs(conn, [int(job_id)])
        if finished is not None:
            record_outcome(finished)
        result = finished or await self.get(run_id, tenant)
        if self.trail is not None:
            self.trail.run_cancelled(result, context or RequestContext())
        return result

    async def diff(self, run_id: str, tenant: str | None = DEFAULT_TENANT) -> str | None:
        """The unified diff of the run's workspace; None until the run has produced one."""
        async with self.db.acquire() as conn:
            try:
                return await repo.get_diff(conn, run_id, tenant)
            except LookupError:
                raise NotFound(f"run {run_id} not found") from None

    async def events(
        self, run_id: str, tenant: str | None = DEFAULT_TENANT, after: int = 0, limit: int = 1000
    ) -> list[RunEvent]:
        await self.get(run_id, tenant)
        async with self.db.acquire() as conn:
            return await repo.list_events(conn, run_id, after, limit)

    async def wait(self, run_id: str, timeout: float, tenant: str | None = DEFAULT_TENANT) -> Run:
        """Return the run once it is terminal, or as it stands when ``timeout`` runs out."""
        deadline = time.monotonic() + timeout
        with self._subscribe(run_id) as changed:
            while True:
                run = await self.get(run_id, tenant)
                remaining = deadline - time.monotonic()
                if run.status.terminal or remaining <= 0:
                    return run
                await self._wait_change(changed, min(remaining, 1.0))

    async def follow(
        self, run_id: str, after: int = 0, tenant: str | None = DEFAULT_TENANT
    ) -> AsyncIterator[RunEvent]:
        """Yield events after ``after`` as they are written; end once the run is terminal."""
        await self.get(run_id, tenant)
        with self._subscribe(run_id) as changed:
            while True:
                async with self.db.acquire() as conn:
                    batch = await repo.list_events(conn, run_id, after, 500)
                    run = await repo.get_run(conn, run_id)
                for event in batch:
                    after = event.id
                    yield event
                if len(batch) == 500:
                    continue
                if run is None or run.status.terminal:
                    async with self.db.acquire() as conn:
                        tail = await repo.list_events(conn, run_id, after, 500)
                    for event in tail:
                        yield event
                    return
                await self._wait_change(changed, 1.0)

    def _subscribe(self, run_id: str) -> Any:
        import contextlib

        if self.hub is None:
            return contextlib.nullcontext(None)
        return self.hub.subscribe(run_id)

    @staticmethod
    async def _wait_change(changed: asyncio.Event | None, timeout: float) -> None:
        if changed is None:
            await asyncio.sleep(min(timeout, 0.25))
            return
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except TimeoutError:
            pass
        changed.clear()
