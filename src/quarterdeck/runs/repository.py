"""SQL that changes runs besides an attempt's own writes: inserts, events, cancel, requeue,
results and deletion (an attempt's claim, turns, heartbeats and end: :mod:`.attempt_repository`;
reads: :mod:`.read_repository`).

Only :mod:`quarterdeck.runs.store` and its machinery call this module: the store is the one owner
of run state, and every status change here is guarded by ``status = ANY($n)`` with the sources
from :mod:`quarterdeck.runs.transitions`, which is what keeps a change race-safe between
processes. Functions take an open connection so the store chooses the transaction: a run and its
job are inserted together, a requeue drops the old job in the transaction that enqueues the new.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from quarterdeck.runs import transitions
from quarterdeck.runs.models import Run, RunStatus

_REQUEUE_FROM = transitions.guard(RunStatus.queued)

_RUN_COLUMNS = (
    "id",
    "tenant",
    "agent_type",
    "operation",
    "prompt",
    "model",
    "max_attempts",
    "idempotency_key",
    "request_hash",
    "job_id",
    "params",
    "budget_usd",
    "key_id",
    "config_version",
    "canary_id",
    "canary_arm",
)


_INSERT_RUNS = """
    WITH r AS (
        INSERT INTO runs (id, tenant, agent_type, operation, prompt, model, max_attempts,
                          idempotency_key, request_hash, job_id, params, budget_usd, key_id,
                          config_version, canary_id, canary_arm)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::text[], $7::int[], $8::text[], $9::text[], $10::bigint[],
                             $11::jsonb[], $12::numeric[], $13::text[], $14::text[], $15::text[],
                             $16::text[])
        ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING *
    ), e AS (
        INSERT INTO run_events (run_id, type, data)
        SELECT id, 'status', '{"status": "queued"}'::jsonb FROM r
    )
    SELECT {returning} FROM r
"""
_INSERT_RUNS_RETURNING = _INSERT_RUNS.replace("{returning}", "*")
_INSERT_RUNS_COUNTING = _INSERT_RUNS.replace("{returning}", "count(*)")


async def insert_runs(conn: asyncpg.Connection, rows: list[dict[str, Any]]) -> list[Run]:
    """Insert runs and their first events in one statement; returns the runs inserted.

    Rows whose idempotency key already exists are skipped, so a short list means a race lost.
    """
    columns = [[row.get(c) for row in rows] for c in _RUN_COLUMNS]
    inserted = await conn.fetch(_INSERT_RUNS_RETURNING, *columns)
    return [Run.from_row(r) for r in inserted]


async def insert_runs_counted(conn: asyncpg.Connection, rows: list[dict[str, Any]]) -> int:
    """:func:`insert_runs` for callers that only need how many went in (a batch of 1,000
    would otherwise read every row back and build a model per run)."""
    columns = [[row.get(c) for row in rows] for c in _RUN_COLUMNS]
    return int(await conn.fetchval(_INSERT_RUNS_COUNTING, *columns))


async def append_event(
    conn: asyncpg.Connection,
    run_id: str,
    type_: str,
    data: dict[str, Any],
    turn: int | None = None,
) -> int:
    event_id: int = await conn.fetchval(
        """
        INSERT INTO run_events (run_id, type, turn, data) VALUES ($1, $2, $3, $4) RETURNING id
        """,
        run_id,
        type_,
        turn,
        data,
    )
    return event_id


async def append_events(
    conn: asyncpg.Connection,
    run_id: str,
    events: list[tuple[str, int | None, dict[str, Any]]],
    epoch: int,
) -> bool:
    """Record an attempt's events, only while attempt ``epoch`` holds the run; False if fenced.

    ``FOR SHARE`` re-reads the row if a claim changed it meanwhile and keeps a new claim waiting
    until these events are committed, so they never land after the attempt lost the run.
    """
    if not events:
        return True
    inserted = await conn.fetchval(
        """
        WITH held AS (
            SELECT id FROM runs WHERE id = $1 AND status = 'running' AND attempts = $5 FOR SHARE
        ), i AS (
            INSERT INTO run_events (run_id, type, turn, data)
            SELECT held.id, e.type, e.turn, e.data
              FROM held, unnest($2::text[], $3::int[], $4::jsonb[]) WITH ORDINALITY
                   AS e(type, turn, data, n)
             ORDER BY e.n
            RETURNING 1
        )
        SELECT count(*) FROM i
        """,
        run_id,
        [t for t, _, _ in events],
        [turn for _, turn, _ in events],
        [d for _, _, d in events],
        epoch,
    )
    return bool(inserted)


async def save_archive(conn: asyncpg.Connection, run_id: str, archive: bytes) -> None:
    await conn.execute(
        "INSERT INTO run_archives (run_id, archive) VALUES ($1, $2)", run_id, archive
    )


async def request_cancel(conn: asyncpg.Connection, run_id: str) -> None:
    await conn.execute("UPDATE runs SET cancel_requested = true WHERE id = $1", run_id)


async def lock_job(conn: asyncpg.Connection, run_id: str) -> int | None:
    """The run's current job id, with the run row locked until the transaction ends."""
    job_id = await conn.fetchval("SELECT job_id FROM runs WHERE id = $1 FOR UPDATE", run_id)
    return None if job_id is None else int(job_id)


async def lock_for_timeout(
    conn: asyncpg.Connection, run_id: str, default_timeout_s: float
) -> tuple[int | None, float] | None:
    """(job id if the run is running, its timeout), with the row locked; None if no such run."""
    row = await conn.fetchrow(
        "SELECT CASE WHEN status = 'running' THEN job_id END AS job_id,"
        " coalesce((params->>'timeout_s')::float8, $2) AS timeout"
        " FROM runs WHERE id = $1 FOR UPDATE",
        run_id,
        default_timeout_s,
    )
    if row is None:
        return None
    return (None if row["job_id"] is None else int(row["job_id"])), float(row["timeout"] or 0)


async def requeue(
    conn: asyncpg.Connection,
    run_ids: list[str],
    job_ids: list[int],
    events: list[dict[str, Any]],
    expect: list[str] | None = None,
    epochs: list[int | None] | None = None,
) -> set[str]:
    """Put runs back to ``queued`` under new jobs and record why; returns the runs moved.

    ``epochs``: per run, the attempt that must still hold it (a worker's own release), or None.

    ``expect`` narrows the statuses accepted (a subset of the table's requeue sources): a run
    found in any other status is left alone and missing from the result.
    """
    rows = await conn.fetch(
        """
        WITH v AS (
            SELECT * FROM unnest($1::text[], $2::bigint[], $3::jsonb[], $5::int[])
                AS v(id, job_id, data, epoch)
        ), u AS (
            UPDATE runs r SET status = 'queued', worker_id = NULL, job_id = v.job_id,
                              heartbeat_at = now()
              FROM v
             WHERE r.id = v.id AND r.status = ANY($4::text[])
               AND (v.epoch IS NULL OR r.attempts = v.epoch)
            RETURNING r.id
        ), e AS (
            INSERT INTO run_events (run_id, type, data)
            SELECT u.id, 'status', v.data FROM u JOIN v ON v.id = u.id
        )
        SELECT id FROM u
        """,
        run_ids,
        job_ids,
        events,
        expect if expect is not None else _REQUEUE_FROM,
        epochs if epochs is not None else [None] * len(run_ids),
    )
    return {r["id"] for r in rows}


async def delete_jobs(conn: asyncpg.Connection, job_ids: list[int]) -> None:
    """Drop pgqueuer jobs outright, so a requeued run is never owned by two jobs."""
    await conn.execute("DELETE FROM pgqueuer WHERE id = ANY($1::bigint[])", job_ids)


async def save_results(
    conn: asyncpg.Connection,
    run_id: str,
    diff: str | None,
    changed_files: list[str],
    quality_score: float | None,
    coverage_percent: float | None,
    quality: dict[str, Any],
    event: dict[str, Any],
) -> None:
    """Store what a run changed and how good it is, with its ``result`` event, in one statement."""
    await conn.execute(
        """
        WITH u AS (
            UPDATE runs SET diff = $2, changed_files = $3, quality_score = $4,
                            coverage_percent = $5, quality = $6
             WHERE id = $1
            RETURNING id
        )
        INSERT INTO run_events (run_id, type, data) SELECT id, 'result', $7 FROM u
        """,
        run_id,
        diff,
        changed_files,
        quality_score,
        coverage_percent,
        quality,
        event,
    )


# -- erasure and retention -------------------------------------------------------------------
_TERMINAL = sorted(s.value for s in RunStatus if s.terminal)


async def lock_tenant_runs(
    conn: asyncpg.Connection, tenant: str
) -> list[tuple[str, str, int | None]]:
    """(id, status, job id) of every run of ``tenant``, locked until the transaction ends."""
    rows = await conn.fetch(
        "SELECT id, status, job_id FROM runs WHERE tenant = $1 ORDER BY id FOR UPDATE", tenant
    )
    return [(r["id"], r["status"], None if r["job_id"] is None else int(r["job_id"])) for r in rows]


async def lock_finished_runs(
    conn: asyncpg.Connection,
    before: datetime,
    tenant: str | None,
    exclude: list[str],
    limit: int,
) -> list[tuple[str, str]]:
    """(id, tenant) of up to ``limit`` runs that ended before ``before`` (of ``tenant``, or of every
    tenant not in ``exclude``), locked; ``SKIP LOCKED`` so a purge never waits on a live run."""
    rows = await conn.fetch(
        """
        SELECT id, tenant FROM runs
         WHERE finished_at < $1 AND status = ANY($2::text[])
           AND ($3::text IS NULL OR tenant = $3) AND NOT (tenant = ANY($4::text[]))
         ORDER BY finished_at, id LIMIT $5 FOR UPDATE SKIP LOCKED
        """,
        before,
        _TERMINAL,
        tenant,
        exclude,
        limit,
    )
    return [(r["id"], r["tenant"]) for r in rows]


async def delete_runs(conn: asyncpg.Connection, run_ids: list[str]) -> dict[str, int]:
    """Delete runs and their child rows (events, turn checkpoints, archives); returns rows
    deleted per table. Children first, each counted; the run rows last (held tool calls,
    ``run_approvals``, go by the foreign key's cascade: the approvals domain owns that table)."""
    counts: dict[str, int] = {}
    for table in ("run_events", "run_turns", "run_archives"):
        status = await conn.execute(
            f"DELETE FROM {table} WHERE run_id = ANY($1::text[])",
            run_ids,
        )
        counts[table] = int(status.split()[-1])
    status = await conn.execute("DELETE FROM runs WHERE id = ANY($1::text[])", run_ids)
    counts["runs"] = int(status.split()[-1])
    return counts
