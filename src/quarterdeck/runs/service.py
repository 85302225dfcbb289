"""Run use-cases: submit, read, list, cancel, wait and follow events.

Endpoints and the CLI call these; they own error mapping and the audit trail, the run store owns
every state change (and its SQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from quarterdeck.config import Settings
from quarterdeck.exceptions import NotFound, Unavailable
from quarterdeck.runs.config_routes import ConfigRoutes
from quarterdeck.runs.events import RunEventHub
from quarterdeck.runs.models import Run, RunCreate, RunEvent, RunFilter, RunPage
from quarterdeck.runs.sources import ServerSourceForbidden, SourceRefused, check_workspace
from quarterdeck.runs.store_protocol import RunStore
from quarterdeck.runs.submission import DEFAULT_TENANT, AgentTypes, Submissions
from quarterdeck.runs.worker import record_outcome
from quarterdeck.security.trail import AuditTrail, RequestContext

RECENT_RUNS = 10_000
"""Runs kept in memory to answer reads while the database is down."""


class RunService:
    """Run use-cases: submit (delegated to :class:`Submissions`), read, list, cancel, wait,
    follow."""

    def __init__(
        self,
        settings: Settings,
        store: RunStore,
        hub: RunEventHub | None = None,
        catalog: AgentTypes | None = None,
        *,
        trail: AuditTrail | None = None,
        routes: ConfigRoutes | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.hub = hub
        self.trail = trail
        self.submissions = Submissions(settings, store, catalog, trail=trail, routes=routes)
        self._recent: OrderedDict[str, tuple[Run, float]] = OrderedDict()

    # -- submission (see Submissions) ---------------------------------------------------------
    def resolve_model(self, requested: str | None, agent_type: str | None = None) -> str:
        return self.submissions.resolve_model(requested, agent_type)

    async def submit(
        self,
        body: RunCreate,
        *,
        tenant: str = DEFAULT_TENANT,
        idempotency_key: str | None = None,
        context: RequestContext | None = None,
        admin: bool = False,
    ) -> tuple[Run, bool]:
        """Create and enqueue a run. Returns (run, created); created is False on a replay.
        ``admin``: the caller has the admin role (only admins may seed a workspace from the
        server's filesystem)."""
        self.check_source(body, admin=admin)
        return await self.submissions.submit(
            body, tenant=tenant, idempotency_key=idempotency_key, context=context
        )

    async def submit_batch(
        self,
        bodies: list[RunCreate],
        *,
        tenant: str = DEFAULT_TENANT,
        idempotency_key: str | None = None,
        context: RequestContext | None = None,
        admin: bool = False,
    ) -> tuple[list[str], bool]:
        """Create and enqueue many runs in one transaction: all of them or none."""
        for i, body in enumerate(bodies):
            try:
                self.check_source(body, admin=admin)
            except ServerSourceForbidden as exc:
                raise ServerSourceForbidden(f"runs.{i}: {exc.detail}") from None
            except SourceRefused as exc:
                raise SourceRefused(
                    f"runs.{i}: {exc.detail}", field=f"runs.{i}.workspace.value"
                ) from None
        return await self.submissions.submit_batch(
            bodies, tenant=tenant, idempotency_key=idempotency_key, context=context
        )

    def check_source(self, body: RunCreate, *, admin: bool) -> None:
        """403 or 422 now, rather than a failed run later, for a workspace source the caller
        may not use (see :mod:`quarterdeck.runs.sources`)."""
        if body.workspace is not None:
            check_workspace(
                body.workspace.type,
                body.workspace.value,
                admin=admin,
                roots=self.settings.workspace_roots,
                allowed_hosts=self.settings.git_allowed_hosts,
                deny=[self.settings.data_dir],
            )

    # -- reads and changes --------------------------------------------------------------------
    async def get(self, run_id: str, tenant: str | None = DEFAULT_TENANT) -> Run:
        run = await self.store.get(run_id, tenant)
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
        items = await self.store.list_runs(tenant, f)
        cursor = items[-1].id if len(items) == f.limit else None
        return RunPage(items=items, next_cursor=cursor)

    async def cancel(
        self,
        run_id: str,
        tenant: str | None = DEFAULT_TENANT,
        context: RequestContext | None = None,
    ) -> Run:
        """Cancel a queued run at once; ask the worker holding a running run to stop."""
        finished = await self.store.cancel(run_id, tenant)
        if finished is not None:
            record_outcome(finished)
        result = finished or await self.get(run_id, tenant)
        if self.trail is not None:
            self.trail.run_cancelled(result, context or RequestContext())
        return result

    async def diff(self, run_id: str, tenant: str | None = DEFAULT_TENANT) -> str | None:
        """The unified diff of the run's workspace; None until the run has produced one."""
        try:
            return await self.store.diff(run_id, tenant)
        except LookupError:
            raise NotFound(f"run {run_id} not found") from None

    async def events(
        self, run_id: str, tenant: str | None = DEFAULT_TENANT, after: int = 0, limit: int = 1000
    ) -> list[RunEvent]:
        await self.get(run_id, tenant)
        return await self.store.events(run_id, after, limit)

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
                batch = await self.store.events(run_id, after, 500)
                run = await self.store.get(run_id)
                for event in batch:
                    after = event.id
                    yield event
                if len(batch) == 500:
                    continue
                if run is None or run.status.terminal:
                    tail = await self.store.events(run_id, after, 500)
                    for event in tail:
                        yield event
                    return
                await self._wait_change(changed, 1.0)

    def watch(self, run_id: str) -> contextlib.AbstractContextManager[asyncio.Event | None]:
        """The process hub's wake-up for ``run_id``: set when the run gets a new event, cleared
        by the watcher. Live pages wait on it rather than each querying on a timer (the hub makes
        one query per interval for every watched run). None where this process has no hub."""
        return self._subscribe(run_id)  # type: ignore[no-any-return]

    def _subscribe(self, run_id: str) -> Any:
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
