"""SQL of the health monitor: stuck runs, and the health details kept on an incident.

Recovery of a stuck run reuses the queue's own pieces (a fresh pgqueuer job through
:func:`quarterdeck.runs.queue.enqueue_run`, the run's ``status`` event); the only new thing here is
*which* runs count as stuck, decided in one place so the check and the recovery agree.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from quarterdeck.runs import queue
from quarterdeck.runs import repository as runs_repo
from quarterdeck.runs.models import RunStatus

_REPAIR_LOCK = 85786627  # beside requeue_orphans' 85786626: one repairer at a time per database


async def lapsed_runs(
    conn: asyncpg.Connection, stale_after_s: float, limit: int = 100
) -> list[str]:
    """``running`` runs whose worker has not heartbeated for ``stale_after_s``."""
    rows = await conn.fetch(
        """
        SELECT id FROM runs
         WHERE status = 'running'
           AND coalesce(heartbeat_at, started_at, created_at) < now() - make_interval(secs => $1)
         ORDER BY id LIMIT $2
        """,
        stale_after_s,
        limit,
    )
    return [r["id"] for r in rows]


async def overdue_runs(
    conn: asyncpg.Connection, default_timeout_s: float, grace_s: float, limit: int = 100
) -> list[str]:
    """``running`` runs older than their own timeout (``params.timeout_s``) plus ``grace_s``."""
    rows = await conn.fetch(
        """
        SELECT id FROM runs
         WHERE status = 'running' AND started_at IS NOT NULL
           AND started_at < now() - make_interval(
                 secs => coalesce((params->>'timeout_s')::float8, $1) + $2)
         ORDER BY id LIMIT $3
        """,
        default_timeout_s,
        grace_s,
        limit,
    )
    return [r["id"] for r in rows]


async def requeue_lapsed(
    conn: asyncpg.Connection, stale_after_s: float, limit: int = 500
) -> list[str]:
    """Hand lapsed runs back to the queue under a fresh job. Call inside a transaction.

    pgqueuer re-picks a stale job by itself only while some worker is dequeuing; this does not
    depend on that. The old job row is deleted unless pgqueuer still sees its holder alive (a
    fresh job heartbeat), so the run is never owned by two jobs at once. The run stays resumable
    from its last checkpoint: ``start_attempt`` accepts ``queued`` runs and counts the attempt.
    """
    if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _REPAIR_LOCK):
        return []
    rows = await conn.fetch(
        """
        SELECT r.id, r.job_id FROM runs r
         WHERE r.status = 'running'
           AND coalesce(r.heartbeat_at, r.started_at, r.created_at)
               < now() - make_interval(secs => $1)
           AND NOT EXISTS (
               SELECT 1 FROM pgqueuer q
                WHERE q.id = r.job_id AND q.status = 'picked'
                  AND q.heartbeat >= now() - make_interval(secs => $1))
         ORDER BY r.id LIMIT $2
           FOR UPDATE OF r SKIP LOCKED
        """,
        stale_after_s,
        limit,
    )
    requeued: list[str] = []
    for row in rows:
        if row["job_id"] is not None:
            await conn.execute("DELETE FROM pgqueuer WHERE id = $1", row["job_id"])
        job_id = await queue.enqueue_run(conn, row["id"])
        await conn.execute(
            "UPDATE runs SET status = 'queued', worker_id = NULL, job_id = $2,"
            " heartbeat_at = now() WHERE id = $1 AND status = 'running'",
            row["id"],
            job_id,
        )
        await runs_repo.append_event(
            conn,
            row["id"],
            "status",
            {
                "status": "queued",
                "reason": f"no worker heartbeat for over {stale_after_s:g}s; "
                "requeued by the health monitor",
            },
        )
        requeued.append(row["id"])
    return requeued


async def time_out_overdue(
    conn: asyncpg.Connection, run_ids: list[str], default_timeout_s: float
) -> list[str]:
    """End overdue runs as ``timed_out`` and cancel their jobs. Call inside a transaction.

    Only for runs whose worker still heartbeats (lapsed ones are requeued and the executor times
    them out on resume); the cancelled job stops the worker, whose own ``finish`` then finds the
    run terminal and changes nothing.
    """
    ended: list[str] = []
    for run_id in run_ids:
        job_id = await conn.fetchval(
            "SELECT job_id FROM runs WHERE id = $1 AND status = 'running' FOR UPDATE", run_id
        )
        timeout = await conn.fetchval(
            "SELECT coalesce((params->>'timeout_s')::float8, $2) FROM runs WHERE id = $1",
            run_id,
            default_timeout_s,
        )
        await runs_repo.request_cancel(conn, run_id)
        done = await runs_repo.finish(
            conn,
            run_id,
            RunStatus.timed_out,
            error=f"run exceeded its wall-clock timeout of {float(timeout or 0):g}s "
            "and was ended by the health monitor",
            event={"error_type": "timeout", "by": "health_monitor"},
        )
        if done is None:
            continue
        if job_id is not None:
            await queue.cancel_jobs(conn, [int(job_id)])
        ended.append(run_id)
    return ended


async def merge_incident_details(
    conn: asyncpg.Connection,
    incident_id: str,
    details: dict[str, Any],
    *,
    only_unresolved: bool = False,
) -> bool:
    """Add health bookkeeping (detection, recovery times) to an incident's ``details``.

    False when nothing was updated (``only_unresolved`` and someone resolved it meanwhile).
    """
    sql = "UPDATE incidents SET details = details || $2::jsonb WHERE id = $1"
    if only_unresolved:
        sql += " AND status <> 'resolved'"
    updated = await conn.fetchval(sql + " RETURNING true", incident_id, details)
    return bool(updated)
