"""The one owner of run state: status, attempts, checkpoints, requeues and the run timeline.

Submission, the worker, the executor, the cancel path, the agent planner and the health
monitor's repairs all change runs through a :class:`RunStore` (the protocol and its records:
:mod:`.store_protocol`, re-exported here), never through SQL of their own. The rules of what may
change are one table (:mod:`quarterdeck.runs.transitions`), which this store's SQL guards and the
in-memory twin (:class:`~quarterdeck.runs.memory.InMemoryRunStore`) both follow, so the logic
above the store is tested without Postgres against the same rules.

:class:`PostgresRunStore` is a thin owner over the batched SQL of :mod:`.repository` and
:mod:`.attempt_repository`: the hot writes (claim, checkpoint, finish) are group-committed by
:class:`~.writes.RunWriter`, and every requeue, whoever asks for it, goes through one operation
(:meth:`RunStore.requeue`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from datetime import datetime
from typing import Any

import asyncpg

from quarterdeck.exceptions import NotFound
from quarterdeck.runs import attempt_repository as attempt_repo
from quarterdeck.runs import erasure, queue, transitions, workspace_store
from quarterdeck.runs import read_repository as reads
from quarterdeck.runs import repository as repo
from quarterdeck.runs.fencing import DISCARDED_CALL, fenced
from quarterdeck.runs.models import Run, RunEvent, RunFilter, RunStatus
from quarterdeck.runs.store_protocol import (
    CANCELLED_BEFORE_START,
    ORPHAN_REASON,
    Erased,
    Finish,
    KeyTaken,
    QueueStats,
    Requeue,
    RunStore,
    TurnRecord,
    check_requeue,
    lapsed_reason,
    still_running,
    timeout_error,
)
from quarterdeck.runs.workspace_state import WorkspaceDelta, WorkspaceState
from quarterdeck.runs.writes import RunWriter
from quarterdeck.store.pool import Database

__all__ = [
    "CANCELLED_BEFORE_START",
    "ORPHAN_REASON",
    "Erased",
    "Finish",
    "KeyTaken",
    "PostgresRunStore",
    "QueueStats",
    "Requeue",
    "RunStore",
    "TurnRecord",
    "check_requeue",
    "lapsed_reason",
    "still_running",
    "timeout_error",
]


class PostgresRunStore:
    """:class:`RunStore` over Postgres and pgqueuer; race-safe through guarded SQL."""

    def __init__(self, db: Database, *, writer: RunWriter | None = None) -> None:
        self.db = db
        self.writer = writer or RunWriter(db)

    # -- submission ---------------------------------------------------------------------------
    async def create(self, items: list[tuple[dict[str, Any], bytes | None]]) -> list[Run]:
        async with self.db.transaction() as conn:
            job_ids = await queue.enqueue_runs(conn, [row["id"] for row, _ in items])
            for (row, _), job in zip(items, job_ids, strict=True):
                row["job_id"] = job
            runs = await repo.insert_runs(conn, [row for row, _ in items])
            if len(runs) != len(items):
                raise KeyTaken  # rolls back: no job is left without its run
            for row, archive in items:
                if archive is not None:
                    await repo.save_archive(conn, row["id"], archive)
        by_id = {r.id: r for r in runs}
        return [by_id[row["id"]] for row, _ in items]

    async def create_batch(self, rows: list[dict[str, Any]]) -> None:
        async with self.db.transaction() as conn:
            job_ids = await queue.enqueue_runs(conn, [row["id"] for row in rows])
            for row, job in zip(rows, job_ids, strict=True):
                row["job_id"] = job
            if await repo.insert_runs_counted(conn, rows) != len(rows):
                raise KeyTaken

    async def find_by_idempotency_key(self, tenant: str, key: str) -> tuple[Run, str | None] | None:
        async with self.db.acquire() as conn:
            return await reads.find_by_idempotency_key(conn, tenant, key)

    async def find_by_idempotency_keys(
        self, tenant: str, keys: list[str]
    ) -> dict[str, tuple[str, str | None]]:
        async with self.db.acquire() as conn:
            return await reads.find_by_idempotency_keys(conn, tenant, keys)

    # -- reads --------------------------------------------------------------------------------
    async def get(self, run_id: str, tenant: str | None = None) -> Run | None:
        async with self.db.acquire() as conn:
            return await reads.get_run(conn, run_id, tenant)

    async def list_runs(self, tenant: str | None, f: RunFilter) -> list[Run]:
        async with self.db.acquire() as conn:
            return await reads.list_runs(conn, tenant, f)

    async def events(self, run_id: str, after: int = 0, limit: int = 1000) -> list[RunEvent]:
        async with self.db.acquire() as conn:
            return await reads.list_events(conn, run_id, after, limit)

    async def diff(self, run_id: str, tenant: str | None) -> str | None:
        async with self.db.acquire() as conn:
            return await reads.get_diff(conn, run_id, tenant)

    async def load_archive(self, run_id: str) -> bytes | None:
        async with self.db.acquire() as conn:
            return await reads.load_archive(conn, run_id)

    async def last_checkpoint(self, run_id: str) -> tuple[int, list[Any]] | None:
        async with self.db.acquire() as conn:
            return await reads.last_checkpoint(conn, run_id)

    async def tool_results(self, run_id: str, turn: int) -> dict[str, Any] | None:
        async with self.db.acquire() as conn:
            return await reads.tool_results(conn, run_id, turn)

    async def lapsed(self, stale_after_s: float, limit: int = 100) -> list[str]:
        async with self.db.acquire() as conn:
            return await reads.lapsed_runs(conn, stale_after_s, limit)

    async def overdue(
        self, default_timeout_s: float, grace_s: float, limit: int = 100
    ) -> list[str]:
        async with self.db.acquire() as conn:
            return await reads.overdue_runs(conn, default_timeout_s, grace_s, limit)

    async def stats(self) -> QueueStats:
        async with self.db.acquire() as conn:
            per_type, oldest = await reads.queue_stats(conn)
            states = await reads.state_counts(conn)
        return QueueStats(per_type, oldest, states)

    async def created_since(self, window_s: float) -> int:
        async with self.db.acquire() as conn:
            return await reads.created_since(conn, window_s)

    async def running_per_worker(self, *, stale_after_s: float = 30.0) -> dict[str, int]:
        async with self.db.acquire() as conn:
            return await reads.running_per_worker(conn, stale_after_s)

    # -- execution ----------------------------------------------------------------------------
    async def claim(self, run_id: str, worker_id: str) -> tuple[Run, bool] | None:
        return await self.writer.start(run_id, worker_id)

    async def save_turn(self, turn: TurnRecord, *, epoch: int) -> None:
        await self.writer.save_turn(replace(turn, epoch=epoch))

    async def append_events(
        self, run_id: str, events: list[tuple[str, int | None, dict[str, Any]]], *, epoch: int
    ) -> None:
        async with self.db.acquire() as conn:
            if not await repo.append_events(conn, run_id, events, epoch):
                raise fenced(run_id, epoch)

    async def check_attempt(self, run_id: str, *, epoch: int) -> None:
        async with self.db.acquire() as conn:
            if not await attempt_repo.attempt_held(conn, run_id, epoch):
                raise fenced(run_id, epoch)

    async def record_usage(self, run_id: str, usage: dict[str, Any], *, epoch: int) -> None:
        async with self.db.acquire() as conn:
            if not await attempt_repo.record_usage(conn, run_id, epoch, usage):
                raise fenced(run_id, epoch)

    async def discarded_call(self, run_id: str, data: dict[str, Any]) -> None:
        async with self.db.acquire() as conn:
            await repo.append_event(conn, run_id, DISCARDED_CALL, data, data.get("turn"))

    async def save_workspace_base(self, run_id: str, base: WorkspaceDelta, *, epoch: int) -> None:
        await workspace_store.save_base(self.db, run_id, base, epoch)

    async def save_tool_results(
        self,
        run_id: str,
        turn: int,
        events: list[tuple[str, int | None, dict[str, Any]]],
        workspace: WorkspaceDelta | None,
        *,
        epoch: int,
    ) -> None:
        if workspace is None:  # nothing to checkpoint (stand-in tools): one fenced statement
            await self.append_events(run_id, events, epoch=epoch)
            return
        await workspace_store.save_tool_results(self.db, run_id, turn, events, workspace, epoch)

    async def workspace_state(self, run_id: str) -> WorkspaceState | None:
        return await workspace_store.load_state(self.db, run_id)

    async def workspace_blobs(self, run_id: str, shas: list[str]) -> dict[str, bytes]:
        return await workspace_store.load_blobs(self.db, run_id, shas)

    async def heartbeat(self, run_ids: list[str], *, epochs: list[int]) -> list[str]:
        async with self.db.acquire() as conn:
            held = await attempt_repo.heartbeat(conn, run_ids, epochs)
        return [r for r in run_ids if r not in held]

    async def finish(self, item: Finish, *, epoch: int | None = None) -> Run | None:
        transitions.require_end(item.status)
        return await self.writer.finish(replace(item, epoch=epoch))

    async def save_results(
        self,
        run_id: str,
        diff: str | None,
        changed_files: list[str],
        quality_score: float | None,
        coverage_percent: float | None,
        quality: dict[str, Any],
        event: dict[str, Any],
    ) -> None:
        async with self.db.acquire() as conn:
            await repo.save_results(
                conn, run_id, diff, changed_files, quality_score, coverage_percent, quality, event
            )

    # -- repair and cancel --------------------------------------------------------------------
    async def requeue(
        self, items: list[Requeue], *, expect: frozenset[RunStatus] | None = None
    ) -> list[str]:
        async with self.db.transaction() as conn:
            return await self._requeue(conn, items, expect)

    async def _requeue(
        self,
        conn: asyncpg.Connection,
        items: list[Requeue],
        expect: frozenset[RunStatus] | None = None,
    ) -> list[str]:
        accepted = sorted(s.value for s in check_requeue(expect))
        if not items:
            return []
        dropped = [i.drop_job for i in items if i.drop_job is not None]
        if dropped:
            await repo.delete_jobs(conn, dropped)
        run_ids = [i.run_id for i in items]
        job_ids = await queue.enqueue_runs(conn, run_ids)
        moved = await repo.requeue(
            conn, run_ids, job_ids, [i.event() for i in items], accepted, [i.epoch for i in items]
        )
        stray = [job for run_id, job in zip(run_ids, job_ids, strict=True) if run_id not in moved]
        if stray:  # a run that moved meanwhile must not get a second job
            await repo.delete_jobs(conn, stray)
        return [r for r in run_ids if r in moved]

    async def requeue_orphans(self, stale_after_s: float) -> list[str]:
        async with self.db.transaction() as conn:
            orphans = await reads.lock_orphans(conn, stale_after_s)
            return await self._requeue(conn, [Requeue(r, ORPHAN_REASON) for r in orphans])

    async def requeue_lapsed(self, stale_after_s: float, limit: int = 500) -> list[str]:
        reason = lapsed_reason(stale_after_s)
        async with self.db.transaction() as conn:
            lapsed = await reads.lock_lapsed(conn, stale_after_s, limit)
            items = [Requeue(r, reason, drop_job=job) for r, job in lapsed]
            return await self._requeue(conn, items, frozenset({RunStatus.running}))

    async def cancel(self, run_id: str, tenant: str | None) -> Run | None:
        async with self.db.transaction() as conn:
            run = await reads.get_run(conn, run_id, tenant)
            if run is None:
                raise NotFound(f"run {run_id} not found")
            if run.status.terminal:
                raise transitions.IllegalTransition(f"run {run_id} is already {run.status.value}")
            job_id = await repo.lock_job(conn, run_id)
            finished: Run | None = None
            if run.status is RunStatus.queued:
                finished = await attempt_repo.finish(
                    conn, run_id, RunStatus.cancelled, error=CANCELLED_BEFORE_START
                )
            else:
                await repo.request_cancel(conn, run_id)
                await repo.append_event(conn, run_id, "cancel_requested", {})
            if job_id is not None:
                await queue.cancel_jobs(conn, [job_id])
        return finished

    async def time_out(self, run_ids: list[str], default_timeout_s: float) -> list[str]:
        ended: list[str] = []
        async with self.db.transaction() as conn:
            for run_id in run_ids:
                locked = await repo.lock_for_timeout(conn, run_id, default_timeout_s)
                if locked is None:
                    continue
                job_id, timeout = locked
                await repo.request_cancel(conn, run_id)
                done = await attempt_repo.finish(
                    conn,
                    run_id,
                    RunStatus.timed_out,
                    error=timeout_error(timeout),
                    event={"error_type": "timeout", "by": "health_monitor"},
                )
                if done is None:
                    continue
                if job_id is not None:
                    await queue.cancel_jobs(conn, [job_id])
                ended.append(run_id)
        return ended

    # -- erasure and retention ----------------------------------------------------------------
    async def erase_tenant(self, tenant: str) -> Erased:
        return await erasure.erase_tenant(self.db, tenant)

    async def purge_finished(
        self, before: datetime, tenant: str | None = None, *, exclude: Collection[str] = ()
    ) -> Erased:
        return await erasure.purge_finished(self.db, before, tenant, exclude)

    async def aclose(self) -> None:
        await self.writer.aclose()
