"""The repair, cancel and erasure half of the in-memory run store.

What the health monitor reads (lapsed and overdue runs) and does (requeue, time out), the cancel
path, and tenant erasure and the retention purge: the same rules as
:class:`~quarterdeck.runs.store.PostgresRunStore`, over :class:`~.memory_tables.MemoryTables`.
A mixin of :class:`~quarterdeck.runs.memory.InMemoryRunStore`, apart so each module stays one
readable size.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING

from quarterdeck.exceptions import NotFound
from quarterdeck.runs import transitions
from quarterdeck.runs.memory_tables import MemoryRow, MemoryTables
from quarterdeck.runs.models import Run, RunStatus
from quarterdeck.runs.store_protocol import (
    CANCELLED_BEFORE_START,
    ORPHAN_REASON,
    Erased,
    Finish,
    Requeue,
    check_requeue,
    lapsed_reason,
    still_running,
    timeout_error,
)


class MemoryRepairs(MemoryTables):
    """:class:`~quarterdeck.runs.store.RunStore`'s repair, cancel and erasure operations."""

    if TYPE_CHECKING:  # the store's own reads and end, which cancel and time out go through

        async def get(self, run_id: str, tenant: str | None = None) -> Run | None: ...

        async def finish(self, item: Finish, *, epoch: int | None = None) -> Run | None: ...

    # -- what the health monitor reads ---------------------------------------------------------
    def _stale(self, row: MemoryRow, stale_after_s: float) -> bool:
        return row.heartbeat is None or row.heartbeat < self.clock() - stale_after_s

    async def lapsed(self, stale_after_s: float, limit: int = 100) -> list[str]:
        return sorted(
            r.run.id
            for r in self.rows.values()
            if r.run.status is RunStatus.running and self._stale(r, stale_after_s)
        )[:limit]

    async def overdue(
        self, default_timeout_s: float, grace_s: float, limit: int = 100
    ) -> list[str]:
        now = self.clock()
        return sorted(
            r.run.id
            for r in self.rows.values()
            if r.run.status is RunStatus.running
            and r.run.started_at is not None
            and r.run.started_at.timestamp()
            < now - float(r.run.params.get("timeout_s") or default_timeout_s) - grace_s
        )[:limit]

    # -- repair and cancel --------------------------------------------------------------------
    async def requeue(
        self, items: list[Requeue], *, expect: frozenset[RunStatus] | None = None
    ) -> list[str]:
        accepted = check_requeue(expect)
        moved = []
        for item in items:
            if item.drop_job is not None:
                self.jobs.pop(item.drop_job, None)
            row = self.rows.get(item.run_id)
            if row is None or row.run.status not in accepted:
                continue
            if item.epoch is not None and row.run.attempts != item.epoch:
                continue  # fenced: another attempt holds the run now
            self._move(row, RunStatus.queued)
            row.job_id, row.worker_id, row.heartbeat = (
                self._enqueue(item.run_id),
                None,
                self.clock(),
            )
            self._event(item.run_id, "status", item.event())
            moved.append(item.run_id)
        return moved

    async def requeue_orphans(self, stale_after_s: float) -> list[str]:
        orphans = sorted(
            r.run.id
            for r in self.rows.values()
            if r.run.status in transitions.REQUEUEABLE
            and (r.heartbeat or r.run.created_at.timestamp()) < self.clock() - stale_after_s
            and r.job_id not in self.jobs
        )[:500]
        return await self.requeue([Requeue(r, ORPHAN_REASON) for r in orphans])

    async def requeue_lapsed(self, stale_after_s: float, limit: int = 500) -> list[str]:
        reason = lapsed_reason(stale_after_s)
        lapsed = await self.lapsed(stale_after_s, limit)
        items = [Requeue(r, reason, drop_job=self.rows[r].job_id) for r in lapsed]
        return await self.requeue(items, expect=frozenset({RunStatus.running}))

    async def cancel(self, run_id: str, tenant: str | None) -> Run | None:
        run = await self.get(run_id, tenant)
        if run is None:
            raise NotFound(f"run {run_id} not found")
        if run.status.terminal:
            raise transitions.IllegalTransition(f"run {run_id} is already {run.status.value}")
        row = self.rows[run_id]
        finished = None
        if run.status is RunStatus.queued:
            finished = await self.finish(
                Finish(run_id, RunStatus.cancelled, error=CANCELLED_BEFORE_START)
            )
        else:
            row.cancel_requested = True
            self._event(run_id, "cancel_requested", {})
        self._cancel_job(row.job_id)
        return finished

    def _cancel_job(self, job_id: int | None) -> None:
        if job_id is not None:
            self.jobs.pop(job_id, None)
            self.cancelled_jobs.append(job_id)

    async def time_out(self, run_ids: list[str], default_timeout_s: float) -> list[str]:
        ended = []
        for run_id in run_ids:
            row = self.rows.get(run_id)
            if row is None:
                continue
            running, row.cancel_requested = row.run.status is RunStatus.running, True
            error = timeout_error(float(row.run.params.get("timeout_s") or default_timeout_s))
            event = {"error_type": "timeout", "by": "health_monitor"}
            if await self.finish(Finish(run_id, RunStatus.timed_out, error=error, event=event)):
                self._cancel_job(row.job_id if running else None)
                ended.append(run_id)
        return ended

    # -- erasure and retention ----------------------------------------------------------------
    async def erase_tenant(self, tenant: str) -> Erased:
        ids = sorted(r.run.id for r in self.rows.values() if r.run.tenant == tenant)
        running = [i for i in ids if self.rows[i].run.status is RunStatus.running]
        if running:
            raise still_running(tenant, running)
        self.jobs = {j: r for j, r in self.jobs.items() if r not in set(ids)}
        return self._delete(ids)

    async def purge_finished(
        self, before: datetime, tenant: str | None = None, *, exclude: Collection[str] = ()
    ) -> Erased:
        rows = sorted(
            (r.run for r in self.rows.values()),
            key=lambda run: (run.finished_at or before, run.id),
        )
        return self._delete(
            [
                run.id
                for run in rows
                if run.status.terminal
                and run.finished_at is not None
                and run.finished_at < before
                and (run.tenant == tenant if tenant is not None else run.tenant not in exclude)
            ]
        )

    def _delete(self, ids: list[str]) -> Erased:
        """Drop runs with what the Postgres tables keep beside them, counted the same way."""
        if not ids:
            return Erased()
        gone = set(ids)
        events = sum(1 for e in self.timeline if e.run_id in gone)
        turns = sum(len(self.rows[i].checkpoints) for i in ids)
        archives = sum(1 for i in ids if self.rows[i].archive is not None)
        by_tenant: dict[str, int] = {}
        for run_id in ids:
            owner = self.rows[run_id].run.tenant
            by_tenant[owner] = by_tenant.get(owner, 0) + 1
        self.timeline = [e for e in self.timeline if e.run_id not in gone]
        for run_id in ids:
            del self.rows[run_id]
        counts = {"run_events": events, "run_turns": turns, "run_archives": archives}
        counts.update(self.workspaces.delete(ids, set(by_tenant)))
        return Erased(tuple(ids), {**counts, "runs": len(ids)}, by_tenant)
