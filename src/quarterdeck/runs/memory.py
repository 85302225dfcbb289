"""The in-memory twin of the run store: same interface, same transition rules, plain dicts.

Modelled on procrastinate's ``InMemoryConnector``: the worker, executor, submission and cancel
logic run against it in unit tests without Postgres, and a parity test runs one scenario against
both stores. It keeps a tiny job queue of its own (``jobs``, ``next_job``) standing in for
pgqueuer, so requeues and cancels can be observed. Every status change goes through
:func:`quarterdeck.runs.transitions.check`, so a rule the SQL guards would refuse is refused here
too; not for production (no durability, one process).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from quarterdeck.exceptions import NotFound
from quarterdeck.runs import transitions
from quarterdeck.runs.fencing import DISCARDED_CALL, fenced, holds
from quarterdeck.runs.models import Run, RunEvent, RunFilter, RunStatus
from quarterdeck.runs.store import (
    CANCELLED_BEFORE_START,
    ORPHAN_REASON,
    Erased,
    Finish,
    KeyTaken,
    QueueStats,
    Requeue,
    TurnRecord,
    check_requeue,
    lapsed_reason,
    still_running,
    timeout_error,
)
from quarterdeck.runs.workspace_memory import InMemoryWorkspaces
from quarterdeck.runs.workspace_state import WorkspaceDelta, WorkspaceState

_INSERTED = (
    *("id", "tenant", "agent_type", "operation", "prompt", "model", "max_attempts"),
    *("idempotency_key", "params", "budget_usd", "key_id"),
)
_COUNTERS = ("attempts", "input_tokens", "output_tokens", "cache_creation_tokens", "turns")
_FRESH: dict[str, Any] = {
    **dict.fromkeys((*_COUNTERS, "cache_read_tokens"), 0),
    **dict.fromkeys(("started_at", "finished_at", "result", "error")),
}
"""What the ``runs`` table's defaults give a new row."""


@dataclass
class _Row:
    """A run and what the ``runs`` table keeps beside the :class:`Run` model."""

    run: Run
    job_id: int | None = None
    worker_id: str | None = None
    heartbeat: float | None = None
    cancel_requested: bool = False
    request_hash: str | None = None
    diff: str | None = None
    archive: bytes | None = None
    cost: Decimal = Decimal(0)
    cost_known: bool = True
    checkpoints: dict[int, list[Any]] = field(default_factory=dict)


class InMemoryRunStore:
    """:class:`~quarterdeck.runs.store.RunStore` in plain dicts; ``clock`` is seconds (time)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.rows: dict[str, _Row] = {}
        self.timeline: list[RunEvent] = []
        self.jobs: dict[int, str] = {}  # pending job id -> run id, oldest first
        self.cancelled_jobs: list[int] = []
        self._ids = itertools.count(1)
        self._job_ids = itertools.count(1)
        self.workspaces = InMemoryWorkspaces()
        self.settled_holds: list[str] = []  # budget holds save_turn deleted (settled or fenced)

    # -- helpers tests use --------------------------------------------------------------------
    def next_job(self) -> tuple[int, str] | None:
        """Dequeue the oldest job, as pgqueuer would: (job id, run id)."""
        for job_id in self.jobs:
            return job_id, self.jobs.pop(job_id)
        return None

    def lose_job(self, run_id: str) -> None:
        """Simulate a job that vanished (the case orphan repair exists for)."""
        self.jobs = {j: r for j, r in self.jobs.items() if r != run_id}

    # -- internals ----------------------------------------------------------------------------
    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def _event(
        self, run_id: str, type_: str, data: dict[str, Any], turn: int | None = None
    ) -> None:
        self.timeline.append(
            RunEvent(
                id=next(self._ids), run_id=run_id, ts=self._now(), type=type_, turn=turn, data=data
            )
        )

    def _enqueue(self, run_id: str) -> int:
        job_id = next(self._job_ids)
        self.jobs[job_id] = run_id
        return job_id

    def _move(self, row: _Row, target: RunStatus, **changes: Any) -> None:
        transitions.check(row.run.status, target)
        row.run = row.run.model_copy(update={"status": target, **changes})

    # -- submission ---------------------------------------------------------------------------
    async def create(self, items: list[tuple[dict[str, Any], bytes | None]]) -> list[Run]:
        taken = {(r.run.tenant, r.run.idempotency_key) for r in self.rows.values()}
        keys = [(row["tenant"], row["idempotency_key"]) for row, _ in items]
        keyed = [k for k in keys if k[1] is not None]
        if any(k in taken for k in keyed) or len(set(keyed)) != len(keyed):
            raise KeyTaken
        runs = []
        for row, archive in items:
            row["job_id"] = self._enqueue(row["id"])
            runs.append(self._insert(row, archive))
        return runs

    async def create_batch(self, rows: list[dict[str, Any]]) -> None:
        await self.create([(row, None) for row in rows])

    def _insert(self, row: dict[str, Any], archive: bytes | None) -> Run:
        run = Run(
            **{k: row[k] for k in _INSERTED},
            **_FRESH,
            status=RunStatus.queued,
            created_at=self._now(),
            cost_usd=0.0,
        )
        self.rows[run.id] = _Row(
            run, job_id=row["job_id"], request_hash=row["request_hash"], archive=archive
        )
        self._event(run.id, "status", {"status": "queued"})
        return run

    async def find_by_idempotency_key(self, tenant: str, key: str) -> tuple[Run, str | None] | None:
        for row in self.rows.values():
            if row.run.tenant == tenant and row.run.idempotency_key == key:
                return row.run, row.request_hash
        return None

    async def find_by_idempotency_keys(
        self, tenant: str, keys: list[str]
    ) -> dict[str, tuple[str, str | None]]:
        wanted = set(keys)
        return {
            r.run.idempotency_key: (r.run.id, r.request_hash)
            for r in self.rows.values()
            if r.run.tenant == tenant and r.run.idempotency_key in wanted
        }

    # -- reads --------------------------------------------------------------------------------
    async def get(self, run_id: str, tenant: str | None = None) -> Run | None:
        row = self.rows.get(run_id)
        if row is None or (tenant is not None and row.run.tenant != tenant):
            return None
        return row.run

    async def list_runs(self, tenant: str | None, f: RunFilter) -> list[Run]:
        runs = [
            r.run
            for r in self.rows.values()
            if (tenant is None or r.run.tenant == tenant)
            and (not f.status or r.run.status in f.status)
            and (not f.agent_type or r.run.agent_type == f.agent_type)
            and (not f.created_after or r.run.created_at >= f.created_after)
            and (not f.created_before or r.run.created_at < f.created_before)
            and (not f.cursor or r.run.id < f.cursor)
        ]
        return sorted(runs, key=lambda r: r.id, reverse=True)[: f.limit]

    async def events(self, run_id: str, after: int = 0, limit: int = 1000) -> list[RunEvent]:
        return [e for e in self.timeline if e.run_id == run_id and e.id > after][:limit]

    async def diff(self, run_id: str, tenant: str | None) -> str | None:
        if await self.get(run_id, tenant) is None:
            raise LookupError(run_id)
        return self.rows[run_id].diff

    async def load_archive(self, run_id: str) -> bytes | None:
        row = self.rows.get(run_id)
        return row.archive if row else None

    async def last_checkpoint(self, run_id: str) -> tuple[int, list[Any]] | None:
        row = self.rows.get(run_id)
        if row is None or not row.checkpoints:
            return None
        turn = max(row.checkpoints)
        return turn, list(row.checkpoints[turn])

    async def tool_results(self, run_id: str, turn: int) -> dict[str, Any] | None:
        for e in reversed(self.timeline):
            if e.run_id == run_id and e.type == "tool_results" and e.turn == turn:
                return dict(e.data["message"])
        return None

    def _stale(self, row: _Row, stale_after_s: float) -> bool:
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

    async def stats(self) -> QueueStats:
        queued: dict[str, int] = {}
        states: dict[str, int] = {}
        oldest = 0.0
        for r in self.rows.values():
            if r.run.status.terminal:
                continue
            states[r.run.status.value] = states.get(r.run.status.value, 0) + 1
            if r.run.status is RunStatus.queued:
                queued[r.run.agent_type] = queued.get(r.run.agent_type, 0) + 1
                oldest = max(oldest, self.clock() - r.run.created_at.timestamp())
        return QueueStats(queued, oldest, states)

    # -- execution ----------------------------------------------------------------------------
    async def claim(self, run_id: str, worker_id: str) -> tuple[Run, bool] | None:
        row = self.rows.get(run_id)
        if row is None or row.run.status not in transitions.CLAIMABLE:
            return None
        attempts, was = row.run.attempts + 1, (row.run.status, row.worker_id)
        self._move(
            row,
            RunStatus.running,
            attempts=attempts,
            started_at=row.run.started_at or self._now(),
        )
        row.worker_id, row.heartbeat = worker_id, self.clock()
        data: dict[str, Any] = {"status": "running", "attempt": attempts, "worker": worker_id}
        data["resumed"] = attempts > 1
        if was[0] is RunStatus.running:  # taken from an attempt that went silent
            data["superseded"] = {"attempt": attempts - 1, "worker": was[1]}
        self._event(run_id, "status", data)
        return row.run, attempts == 1

    def _fence(self, run_id: str, epoch: int) -> _Row:
        """The run's row if attempt ``epoch`` holds it; else ``Fenced`` (the Postgres guard)."""
        row = self.rows.get(run_id)
        if row is None or not holds(row.run.status, row.run.attempts, epoch):
            raise fenced(run_id, epoch)
        return row

    async def save_turn(self, turn: TurnRecord, *, epoch: int) -> None:
        if turn.hold_id is not None:
            self.settled_holds.append(turn.hold_id)  # deleted recorded or not, as in Postgres
        row = self._fence(turn.run_id, epoch)
        if turn.turn in row.checkpoints:
            raise ValueError(f"turn {turn.turn} of {turn.run_id} is already checkpointed")
        row.checkpoints[turn.turn] = list(turn.messages)
        row.cost += turn.cost or 0
        row.cost_known = row.cost_known and turn.cost is not None
        u, r = turn.usage, row.run
        row.run = r.model_copy(
            update={
                "turns": turn.turn,
                "input_tokens": r.input_tokens + u["input_tokens"],
                "output_tokens": r.output_tokens + u["output_tokens"],
                "cache_creation_tokens": r.cache_creation_tokens + u["cache_creation_input_tokens"],
                "cache_read_tokens": r.cache_read_tokens + u["cache_read_input_tokens"],
                "cost_usd": float(row.cost) if row.cost_known else None,
            }
        )
        row.heartbeat = self.clock()
        self._event(turn.run_id, "turn", turn.event, turn.turn)

    async def append_events(
        self, run_id: str, events: list[tuple[str, int | None, dict[str, Any]]], *, epoch: int
    ) -> None:
        if events:
            self._fence(run_id, epoch)
        for type_, turn, data in events:
            self._event(run_id, type_, data, turn)

    async def check_attempt(self, run_id: str, *, epoch: int) -> None:
        self._fence(run_id, epoch)

    async def discarded_call(self, run_id: str, data: dict[str, Any]) -> None:
        if run_id in self.rows:
            self._event(run_id, DISCARDED_CALL, data, data.get("turn"))

    # -- workspace checkpoints (the rules: runs/workspace_store.py) ------------------------------
    def _held(self, run_id: str, epoch: int) -> str:
        row = self.rows.get(run_id)
        status, attempts = (row.run.status, row.run.attempts) if row else (RunStatus.failed, -1)
        self.workspaces.check(run_id, status, attempts, epoch)
        assert row is not None
        return row.run.tenant

    async def save_workspace_base(self, run_id: str, base: WorkspaceDelta, *, epoch: int) -> None:
        self.workspaces.save(run_id, self._held(run_id, epoch), 0, base)

    async def save_tool_results(
        self,
        run_id: str,
        turn: int,
        events: list[tuple[str, int | None, dict[str, Any]]],
        workspace: WorkspaceDelta | None,
        *,
        epoch: int,
    ) -> None:
        self.workspaces.save(run_id, self._held(run_id, epoch), turn, workspace)
        for type_, at, data in events:
            self._event(run_id, type_, data, at)

    async def workspace_state(self, run_id: str) -> WorkspaceState | None:
        return self.workspaces.state(run_id)

    async def workspace_blobs(self, run_id: str, shas: list[str]) -> dict[str, bytes]:
        row = self.rows.get(run_id)
        return self.workspaces.load(row.run.tenant, shas) if row else {}

    async def heartbeat(self, run_ids: list[str], *, epochs: list[int]) -> list[str]:
        lost = []
        for run_id, epoch in zip(run_ids, epochs, strict=True):
            row = self.rows.get(run_id)
            if row is not None and holds(row.run.status, row.run.attempts, epoch):
                row.heartbeat = self.clock()
            else:
                lost.append(run_id)
        return lost

    async def finish(self, item: Finish, *, epoch: int | None = None) -> Run | None:
        transitions.require_end(item.status)
        row = self.rows.get(item.run_id)
        if row is None or row.run.status not in transitions.ENDABLE:
            return None
        if epoch is not None:
            self._fence(item.run_id, epoch)
        now = self._now()
        self._move(
            row,
            item.status,
            result=item.result,
            error=item.error,
            finished_at=now,
            started_at=row.run.started_at or now,
        )
        data = {"status": item.status.value, "error": item.error, **(item.event or {})}
        self._event(item.run_id, "status", data)
        return row.run

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
        row = self.rows.get(run_id)
        if row is None:
            return
        row.diff = diff
        row.run = row.run.model_copy(
            update={
                "changed_files": changed_files,
                "quality_score": quality_score,
                "coverage_percent": coverage_percent,
                "quality": quality,
            }
        )
        self._event(run_id, "result", event)

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

    async def aclose(self) -> None:
        return None
