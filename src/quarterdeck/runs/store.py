"""The one owner of run state: status, attempts, checkpoints, requeues and the run timeline.

Submission, the worker, the executor, the cancel path, the agent planner and the health
monitor's repairs all change runs through a :class:`RunStore`, never through SQL of their own.
The rules of what may change are one table (:mod:`quarterdeck.runs.transitions`), which this
store's SQL guards and the in-memory twin (:class:`~quarterdeck.runs.memory.InMemoryRunStore`)
both follow, so the logic above the store is tested without Postgres against the same rules.

:class:`PostgresRunStore` is a thin owner over the batched SQL of :mod:`.repository`: the hot
writes (claim, checkpoint, finish) are group-committed by :class:`~.writes.RunWriter`, and every
requeue, whoever asks for it, goes through one operation (:meth:`RunStore.requeue`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

import asyncpg

from quarterdeck.exceptions import NotFound
from quarterdeck.runs import erasure, queue, transitions, workspace_store
from quarterdeck.runs import read_repository as reads
from quarterdeck.runs import repository as repo
from quarterdeck.runs.erasure import Erased, still_running
from quarterdeck.runs.fencing import DISCARDED_CALL, fenced
from quarterdeck.runs.models import Run, RunEvent, RunFilter, RunStatus
from quarterdeck.runs.repository import Finish, TurnRecord
from quarterdeck.runs.workspace_state import WorkspaceDelta, WorkspaceState
from quarterdeck.runs.writes import RunWriter
from quarterdeck.store.pool import Database

__all__ = [
    "Erased",
    "Finish",
    "KeyTaken",
    "PostgresRunStore",
    "QueueStats",
    "Requeue",
    "RunStore",
    "TurnRecord",
    "still_running",
]

ORPHAN_REASON = "its job was lost; requeued by orphan repair"
CANCELLED_BEFORE_START = "cancelled before it started"


class KeyTaken(Exception):
    """Another request inserted the same idempotency key first; nothing was written."""


@dataclass(frozen=True)
class Requeue:
    """Hand one run back to the queue under a new job, saying why (its ``status`` event).

    ``drop_job``: a job to delete first, so the run is never owned by two jobs at once.
    ``epoch``: a worker handing back its own attempt (drain) -- fenced, so a worker that lost
    the run meanwhile cannot requeue it from under the attempt that holds it now.
    """

    run_id: str
    reason: str
    data: dict[str, Any] = field(default_factory=dict)
    drop_job: int | None = None
    epoch: int | None = None

    def event(self) -> dict[str, Any]:
        return {"status": RunStatus.queued.value, "reason": self.reason, **self.data}


@dataclass(frozen=True)
class QueueStats:
    """What the gauges mirror: queued runs per agent type, the oldest's age, runs per state."""

    queued: dict[str, int]
    oldest_s: float
    states: dict[str, int]


def timeout_error(timeout_s: float) -> str:
    return (
        f"run exceeded its wall-clock timeout of {timeout_s:g}s and was ended by the health monitor"
    )


def lapsed_reason(stale_after_s: float) -> str:
    return f"no worker heartbeat for over {stale_after_s:g}s; requeued by the health monitor"


class RunStore(Protocol):
    """Everything that reads or changes a run. Both stores keep the same transition rules."""

    # -- submission ---------------------------------------------------------------------------
    async def create(self, items: list[tuple[dict[str, Any], bytes | None]]) -> list[Run]:
        """Insert runs (row, uploaded archive) with their jobs, all or none; runs in order.

        Each row gets its ``job_id`` filled in. Raises :class:`KeyTaken` if any key exists.
        """

    async def create_batch(self, rows: list[dict[str, Any]]) -> None:
        """:meth:`create` for a batch that needs no runs back (a 1,000-run batch would
        otherwise read every row back and build a model per run)."""

    async def find_by_idempotency_key(
        self, tenant: str, key: str
    ) -> tuple[Run, str | None] | None: ...

    async def find_by_idempotency_keys(
        self, tenant: str, keys: list[str]
    ) -> dict[str, tuple[str, str | None]]: ...

    # -- reads --------------------------------------------------------------------------------
    async def get(self, run_id: str, tenant: str | None = None) -> Run | None: ...

    async def list_runs(self, tenant: str | None, f: RunFilter) -> list[Run]: ...

    async def events(self, run_id: str, after: int = 0, limit: int = 1000) -> list[RunEvent]: ...

    async def diff(self, run_id: str, tenant: str | None) -> str | None:
        """The run's diff; raises LookupError when the run does not exist."""

    async def load_archive(self, run_id: str) -> bytes | None: ...

    async def last_checkpoint(self, run_id: str) -> tuple[int, list[Any]] | None:
        """(turn, conversation so far) of the newest completed turn: where a resume starts."""

    async def tool_results(self, run_id: str, turn: int) -> dict[str, Any] | None: ...

    async def lapsed(self, stale_after_s: float, limit: int = 100) -> list[str]: ...

    async def overdue(
        self, default_timeout_s: float, grace_s: float, limit: int = 100
    ) -> list[str]: ...

    async def stats(self) -> QueueStats: ...

    # -- execution ----------------------------------------------------------------------------
    async def claim(self, run_id: str, worker_id: str) -> tuple[Run, bool] | None:
        """queued/running -> running, attempts + 1: (run, first start), or None if terminal."""

    # Writes of an attempt are fenced (:mod:`.fencing`): ``epoch`` is the attempt's
    # ``Run.attempts`` from :meth:`claim`, and a write is refused with ``Fenced`` unless the run
    # is still ``running`` at that attempt.
    async def save_turn(self, turn: TurnRecord, *, epoch: int) -> None:
        """Checkpoint a completed turn, add its usage and cost, record its event and settle its
        budget hold (``turn.hold_id``): atomically. ``Fenced`` (hold released) if lost."""

    async def append_events(
        self, run_id: str, events: list[tuple[str, int | None, dict[str, Any]]], *, epoch: int
    ) -> None:
        """Record an attempt's events (tool calls); ``Fenced`` if the attempt lost the run."""

    async def check_attempt(self, run_id: str, *, epoch: int) -> None:
        """Raise ``Fenced`` unless attempt ``epoch`` still holds the run (before a model call)."""

    async def discarded_call(self, run_id: str, data: dict[str, Any]) -> None:
        """The one unfenced write of an attempt: a ``discarded_call`` event for a call that
        completed after the attempt lost the run (paid, never recorded as a turn)."""

    # Workspace checkpoints (:mod:`.workspace_store`): the base before the first tools run,
    # then each turn's delta with that turn's tool events, in one fenced transaction.
    async def save_workspace_base(
        self, run_id: str, base: WorkspaceDelta, *, epoch: int
    ) -> None: ...

    async def save_tool_results(
        self,
        run_id: str,
        turn: int,
        events: list[tuple[str, int | None, dict[str, Any]]],
        workspace: WorkspaceDelta | None,
        *,
        epoch: int,
    ) -> None:
        """Record a turn's tool events and its workspace delta atomically; ``Fenced`` if lost."""

    async def workspace_state(self, run_id: str) -> WorkspaceState | None: ...

    async def workspace_blobs(self, run_id: str, shas: list[str]) -> dict[str, bytes]:
        """Compressed contents by sha256, of the run's tenant only."""

    async def heartbeat(self, run_ids: list[str], *, epochs: list[int]) -> list[str]:
        """Mark runs alive for their attempts (``epochs``, in order); returns those lost."""

    async def finish(self, item: Finish, *, epoch: int | None = None) -> Run | None:
        """-> a terminal status, recorded; None if the run already ended (a lost race).

        With ``epoch`` (a worker ending its own attempt) ``Fenced`` if the run is still going
        under another attempt; without it (cancel, time out) no attempt is checked.
        """

    async def save_results(
        self,
        run_id: str,
        diff: str | None,
        changed_files: list[str],
        quality_score: float | None,
        coverage_percent: float | None,
        quality: dict[str, Any],
        event: dict[str, Any],
    ) -> None: ...

    # -- repair and cancel --------------------------------------------------------------------
    async def requeue(
        self, items: list[Requeue], *, expect: frozenset[RunStatus] | None = None
    ) -> list[str]:
        """-> queued under a new job, with a ``status`` event: the one requeue operation.

        ``expect`` narrows the statuses accepted (default: every requeue source of the table);
        returns the runs moved, in order.
        """

    async def requeue_orphans(self, stale_after_s: float) -> list[str]:
        """Requeue unfinished runs whose job vanished and whose worker is silent."""

    async def requeue_lapsed(self, stale_after_s: float, limit: int = 500) -> list[str]:
        """Requeue running runs without a heartbeat, dropping their old jobs."""

    async def cancel(self, run_id: str, tenant: str | None) -> Run | None:
        """Cancel a queued run at once (returned), or ask a running one's worker to stop (None).

        Raises NotFound, or IllegalTransition when the run already ended.
        """

    async def time_out(self, run_ids: list[str], default_timeout_s: float) -> list[str]:
        """End running runs as ``timed_out`` and cancel their jobs; returns those ended."""

    # -- erasure and retention ----------------------------------------------------------------
    async def erase_tenant(self, tenant: str) -> Erased:
        """Delete every run of ``tenant`` with all its rows, and the jobs of its queued runs.

        Raises InvalidState while any of its runs is ``running``: its worker would go on writing
        turns for a run that no longer exists. Cancel them first and wait until they end.
        """

    async def purge_finished(
        self, before: datetime, tenant: str | None = None, *, exclude: Collection[str] = ()
    ) -> Erased:
        """Delete runs that ended before ``before``, with all their rows: of ``tenant``, or of
        every tenant not in ``exclude`` (those with a retention of their own)."""

    async def aclose(self) -> None:
        """Wait for writes in flight, so shutdown never drops an accepted checkpoint."""


def check_requeue(expect: frozenset[RunStatus] | None) -> frozenset[RunStatus]:
    """The statuses a requeue accepts: ``expect`` if the table allows all of them."""
    if expect is None:
        return transitions.REQUEUEABLE
    for status in expect:
        transitions.check(status, RunStatus.queued)
    return expect


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
            if not await repo.attempt_held(conn, run_id, epoch):
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
            held = await repo.heartbeat(conn, run_ids, epochs)
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
                finished = await repo.finish(
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
                done = await repo.finish(
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
