"""What a run store is: the :class:`RunStore` protocol, its records, and the rules both stores
share (the requeues the transition table allows, the reasons and errors they record).

Apart from :class:`~quarterdeck.runs.store.PostgresRunStore` (whose module re-exports all of
this) so the code above the store -- worker, executor, service, planner, health monitor, tenants
-- and the in-memory twin depend on the contract rather than on the Postgres implementation.
Everything that changes a run goes through a :class:`RunStore`, never through SQL of its own.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from quarterdeck.runs import transitions
from quarterdeck.runs.attempt_repository import Finish, TurnRecord
from quarterdeck.runs.erasure import Erased, still_running
from quarterdeck.runs.models import Run, RunEvent, RunFilter, RunStatus
from quarterdeck.runs.workspace_state import WorkspaceDelta, WorkspaceState

__all__ = [
    "CANCELLED_BEFORE_START",
    "ORPHAN_REASON",
    "Erased",
    "Finish",
    "KeyTaken",
    "QueueStats",
    "Requeue",
    "RunStore",
    "TurnRecord",
    "check_requeue",
    "lapsed_reason",
    "still_running",
    "timeout_error",
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

    async def created_since(self, window_s: float) -> int:
        """Runs submitted in the last ``window_s`` seconds, whatever became of them since: the
        scaler's arrival rate (erased or purged runs are not counted)."""

    async def running_per_worker(self, *, stale_after_s: float = 30.0) -> dict[str, int]:
        """Running runs per worker host (``worker_id`` up to its first ``:``, a pod's name),
        counting only runs heartbeated within ``stale_after_s``: the scaler marks busy pods."""

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

    async def record_usage(self, run_id: str, usage: dict[str, Any], *, epoch: int) -> None:
        """Set the run's totals to ones metered outside its turns (``Finish.usage``: a
        claude-code run's, by the gateway) while attempt ``epoch`` holds it; ``Fenced`` if not.
        For a run that stops without a finish of its own (cancelled, released)."""

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
