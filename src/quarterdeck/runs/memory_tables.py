"""The in-memory run store's tables: rows, timeline, job queue, and the moves that change them.

The state :class:`~quarterdeck.runs.memory.InMemoryRunStore` and its repair half
(:mod:`.memory_repair`) share, with the primitives both use: every status change goes through
:func:`quarterdeck.runs.transitions.check` (:meth:`MemoryTables._move`), so a rule the SQL guards
would refuse is refused here too.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from quarterdeck.runs import transitions
from quarterdeck.runs.models import Run, RunEvent, RunStatus
from quarterdeck.runs.workspace_memory import InMemoryWorkspaces


@dataclass
class MemoryRow:
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


class MemoryTables:
    """What the ``runs``, ``run_events`` and pgqueuer tables hold, in plain dicts; ``clock`` is
    seconds (time)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.rows: dict[str, MemoryRow] = {}
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

    def _move(self, row: MemoryRow, target: RunStatus, **changes: Any) -> None:
        transitions.check(row.run.status, target)
        row.run = row.run.model_copy(update={"status": target, **changes})
