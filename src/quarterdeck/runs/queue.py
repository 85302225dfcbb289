"""The job engine seam: pgqueuer enqueue and cancel, in the caller's transaction.

Only the run store calls it. Runs are enqueued on the same connection and transaction that
inserts (or requeues) the run row, so a run and its job are committed together or not at all.
"""

from __future__ import annotations

import asyncpg
from pgqueuer.db import AsyncpgDriver
from pgqueuer.queries import Queries

ENTRYPOINT = "quarterdeck.run"


async def enqueue_run(conn: asyncpg.Connection, run_id: str, priority: int = 0) -> int:
    ids = await Queries(AsyncpgDriver(conn)).enqueue(ENTRYPOINT, run_id.encode(), priority)
    return int(ids[0])


async def enqueue_runs(conn: asyncpg.Connection, run_ids: list[str]) -> list[int]:
    """One pgqueuer enqueue statement for a whole batch of runs."""
    ids = await Queries(AsyncpgDriver(conn)).enqueue(
        [ENTRYPOINT] * len(run_ids), [r.encode() for r in run_ids], [0] * len(run_ids)
    )
    return [int(i) for i in ids]


async def cancel_jobs(conn: asyncpg.Connection, job_ids: list[int]) -> None:
    """Mark jobs cancelled; pgqueuer NOTIFYs the worker holding them to cancel their scope."""
    from pgqueuer.models import JobId

    await Queries(AsyncpgDriver(conn)).mark_job_as_cancelled([JobId(j) for j in job_ids])
