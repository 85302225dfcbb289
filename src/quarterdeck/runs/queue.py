"""The job engine seam: pgqueuer enqueue and cancel, in the caller's transaction.

Runs are enqueued on the same connection and transaction that inserts the run row, so a run and
its job are committed together or not at all.
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


async def requeue_orphans(conn: asyncpg.Connection, stale_after: float) -> list[str]:
    """Give a new job to unfinished runs whose job is gone and whose worker is silent.

    Normally pgqueuer re-picks a dead worker's job itself. A job can still vanish, e.g. when a
    handler failed while Postgres was restarting and the job was logged as failed; without this
    the run would stay ``running`` forever. A transaction-level advisory lock keeps concurrent
    workers from repairing the same run twice.
    """
    if not await conn.fetchval("SELECT pg_try_advisory_xact_lock(85786626)"):
        return []
    rows = await conn.fetch(
        """
        SELECT r.id FROM runs r
         WHERE r.status IN ('queued', 'running')
           AND coalesce(r.heartbeat_at, r.created_at) < now() - make_interval(secs => $1)
           AND NOT EXISTS (SELECT 1 FROM pgqueuer q WHERE q.id = r.job_id)
         ORDER BY r.id LIMIT 500
        """,
        stale_after,
    )
    repaired = []
    for row in rows:
        job_id = await enqueue_run(conn, row["id"])
        await conn.execute(
            "UPDATE runs SET job_id = $2, heartbeat_at = now() WHERE id = $1", row["id"], job_id
        )
        await conn.execute(
            "INSERT INTO run_events (run_id, type, data) VALUES ($1, 'status', $2)",
            row["id"],
            {"status": "requeued", "reason": "its job was lost; requeued by orphan repair"},
        )
        repaired.append(row["id"])
    return repaired
