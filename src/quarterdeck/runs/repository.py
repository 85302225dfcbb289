"""All SQL for runs, events and turn checkpoints.

Functions take an open connection so callers choose the transaction: the worker writes a turn's
checkpoint, its events and the run's totals in one transaction, which is what makes a completed
turn impossible to bill twice.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg

from quarterdeck.runs.models import Run, RunEvent, RunFilter, RunStatus

EVENTS_CHANNEL = "quarterdeck_run_events"


async def insert_run(conn: asyncpg.Connection, values: dict[str, Any]) -> Run | None:
    """Insert a run with its first event in one statement; None if the idempotency key exists."""
    row = await conn.fetchrow(
        """
        WITH r AS (
            INSERT INTO runs (id, tenant, agent_type, operation, prompt, model, max_attempts,
                              idempotency_key, request_hash, job_id, params, budget_usd)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $13)
            ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
            RETURNING *
        ), e AS (
            INSERT INTO run_events (run_id, type, data)
            SELECT id, 'status', '{"status": "queued"}'::jsonb FROM r
        )
        SELECT r.*, pg_notify($12, r.id) FROM r
        """,
        values["id"],
        values["tenant"],
        values["agent_type"],
        values["operation"],
        values["prompt"],
        values["model"],
        values["max_attempts"],
        values["idempotency_key"],
        values["request_hash"],
        values["job_id"],
        values["params"],
        EVENTS_CHANNEL,
        values.get("budget_usd"),
    )
    return Run.from_row(row) if row else None


async def find_by_idempotency_key(
    conn: asyncpg.Connection, tenant: str, key: str
) -> tuple[Run, str | None] | None:
    row = await conn.fetchrow(
        "SELECT * FROM runs WHERE tenant = $1 AND idempotency_key = $2", tenant, key
    )
    return (Run.from_row(row), row["request_hash"]) if row else None


async def get_run(conn: asyncpg.Connection, run_id: str, tenant: str | None = None) -> Run | None:
    if tenant is None:
        row = await conn.fetchrow("SELECT * FROM runs WHERE id = $1", run_id)
    else:
        row = await conn.fetchrow(
            "SELECT * FROM runs WHERE id = $1 AND tenant = $2", run_id, tenant
        )
    return Run.from_row(row) if row else None


async def list_runs(conn: asyncpg.Connection, tenant: str | None, f: RunFilter) -> list[Run]:
    clauses, args = ["true"], []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if tenant is not None:
        clauses.append(f"tenant = {arg(tenant)}")
    if f.status:
        clauses.append(f"status = ANY({arg([s.value for s in f.status])}::text[])")
    if f.agent_type:
        clauses.append(f"agent_type = {arg(f.agent_type)}")
    if f.created_after:
        clauses.append(f"created_at >= {arg(f.created_after)}")
    if f.created_before:
        clauses.append(f"created_at < {arg(f.created_before)}")
    if f.cursor:
        clauses.append(f"id < {arg(f.cursor)}")
    sql = f"SELECT * FROM runs WHERE {' AND '.join(clauses)} ORDER BY id DESC LIMIT {arg(f.limit)}"
    return [Run.from_row(r) for r in await conn.fetch(sql, *args)]


async def append_event(
    conn: asyncpg.Connection,
    run_id: str,
    type_: str,
    data: dict[str, Any],
    turn: int | None = None,
) -> int:
    event_id: int = await conn.fetchval(
        """
        WITH e AS (INSERT INTO run_events (run_id, type, turn, data)
                   VALUES ($1, $2, $3, $4) RETURNING id)
        SELECT e.id FROM e, pg_notify($5, $1)
        """,
        run_id,
        type_,
        turn,
        data,
        EVENTS_CHANNEL,
    )
    return event_id


async def append_events(
    conn: asyncpg.Connection, run_id: str, events: list[tuple[str, int | None, dict[str, Any]]]
) -> None:
    if not events:
        return
    await conn.executemany(
        "INSERT INTO run_events (run_id, type, turn, data) VALUES ($1, $2, $3, $4)",
        [(run_id, t, turn, d) for t, turn, d in events],
    )
    await conn.execute("SELECT pg_notify($1, $2)", EVENTS_CHANNEL, run_id)


async def list_events(
    conn: asyncpg.Connection, run_id: str, after_id: int = 0, limit: int = 1000
) -> list[RunEvent]:
    rows = await conn.fetch(
        "SELECT * FROM run_events WHERE run_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        run_id,
        after_id,
        limit,
    )
    return [RunEvent.model_validate(dict(r)) for r in rows]


async def start_attempt(
    conn: asyncpg.Connection, run_id: str, worker_id: str
) -> tuple[Run, bool] | None:
    """Claim a run for execution: bump attempts, mark running, record it. One statement.

    Returns (run, first_start), or None when the run is already terminal (a stale or duplicate
    job for a finished or cancelled run).
    """
    row = await conn.fetchrow(
        """
        WITH u AS (
            UPDATE runs
               SET status = 'running', attempts = attempts + 1, worker_id = $2,
                   started_at = coalesce(started_at, now()), heartbeat_at = now()
             WHERE id = $1 AND status IN ('queued', 'running')
            RETURNING *
        ), e AS (
            INSERT INTO run_events (run_id, type, data)
            SELECT id, 'status', jsonb_build_object('status', 'running', 'attempt', attempts,
                                                    'worker', $2::text, 'resumed', attempts > 1)
              FROM u
        )
        SELECT u.*, (u.attempts = 1) AS first_start, pg_notify($3, u.id) FROM u
        """,
        run_id,
        worker_id,
        EVENTS_CHANNEL,
    )
    if row is None:
        return None
    return Run.from_row(row), bool(row["first_start"])


async def last_checkpoint(conn: asyncpg.Connection, run_id: str) -> tuple[int, list[Any]] | None:
    row = await conn.fetchrow(
        "SELECT turn, messages FROM run_turns WHERE run_id = $1 ORDER BY turn DESC LIMIT 1", run_id
    )
    return (int(row["turn"]), list(row["messages"])) if row else None


async def tool_results(conn: asyncpg.Connection, run_id: str, turn: int) -> dict[str, Any] | None:
    """The recorded tool-result message of ``turn``, if its tools finished."""
    data = await conn.fetchval(
        "SELECT data FROM run_events WHERE run_id = $1 AND type = 'tool_results' AND turn = $2"
        " ORDER BY id DESC LIMIT 1",
        run_id,
        turn,
    )
    return dict(data["message"]) if data else None


async def save_turn(
    conn: asyncpg.Connection,
    run_id: str,
    turn: int,
    messages: list[Any],
    model: str,
    usage: dict[str, int],
    cost: Decimal | None,
    stop_reason: str,
    event: dict[str, Any],
) -> None:
    """Checkpoint one completed turn, add its usage to the run and record its event.

    One statement, so it is atomic without an explicit transaction: either the turn is fully
    recorded and billed, or not at all.
    """
    await conn.execute(
        """
        WITH t AS (
            INSERT INTO run_turns (run_id, turn, messages, model, input_tokens, output_tokens,
                                   cache_creation_tokens, cache_read_tokens, cost_usd,
                                   stop_reason)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
        ), u AS (
            UPDATE runs
               SET turns = $2,
                   input_tokens = input_tokens + $5, output_tokens = output_tokens + $6,
                   cache_creation_tokens = cache_creation_tokens + $7,
                   cache_read_tokens = cache_read_tokens + $8,
                   cost_usd = cost_usd + coalesce($9::numeric, 0),
                   cost_known = cost_known AND $9::numeric IS NOT NULL,
                   heartbeat_at = now()
             WHERE id = $1
        ), e AS (
            INSERT INTO run_events (run_id, type, turn, data) VALUES ($1, 'turn', $2, $11)
        )
        SELECT pg_notify($12, $1)
        """,
        run_id,
        turn,
        messages,
        model,
        usage["input_tokens"],
        usage["output_tokens"],
        usage["cache_creation_input_tokens"],
        usage["cache_read_input_tokens"],
        cost,
        stop_reason,
        event,
        EVENTS_CHANNEL,
    )


async def finish(
    conn: asyncpg.Connection,
    run_id: str,
    status: RunStatus,
    result: str | None = None,
    error: str | None = None,
    event: dict[str, Any] | None = None,
) -> Run | None:
    """Move a non-terminal run to a terminal status and record it; None if already terminal."""
    data = {"status": status.value, "error": error, **(event or {})}
    row = await conn.fetchrow(
        """
        WITH u AS (
            UPDATE runs SET status = $2, result = $3, error = $4, finished_at = now(),
                            started_at = coalesce(started_at, now())
             WHERE id = $1 AND status IN ('queued', 'running')
            RETURNING *
        ), e AS (
            INSERT INTO run_events (run_id, type, data) SELECT id, 'status', $5 FROM u
        )
        SELECT u.*, pg_notify($6, u.id) FROM u
        """,
        run_id,
        status.value,
        result,
        error,
        data,
        EVENTS_CHANNEL,
    )
    return Run.from_row(row) if row else None


async def request_cancel(conn: asyncpg.Connection, run_id: str) -> None:
    await conn.execute("UPDATE runs SET cancel_requested = true WHERE id = $1", run_id)


async def is_cancel_requested(conn: asyncpg.Connection, run_id: str) -> bool:
    return bool(await conn.fetchval("SELECT cancel_requested FROM runs WHERE id = $1", run_id))


async def release(conn: asyncpg.Connection, run_id: str, job_id: int) -> None:
    """Hand a running run back to the queue under a new job (drain, or a lost lease)."""
    await conn.execute(
        "UPDATE runs SET status = 'queued', worker_id = NULL, job_id = $2"
        " WHERE id = $1 AND status = 'running'",
        run_id,
        job_id,
    )


async def heartbeat(conn: asyncpg.Connection, run_ids: list[str]) -> None:
    await conn.execute("UPDATE runs SET heartbeat_at = now() WHERE id = ANY($1::text[])", run_ids)


async def state_counts(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT status, count(*) AS n FROM runs WHERE status IN ('queued', 'running')"
        " GROUP BY status"
    )
    return {r["status"]: int(r["n"]) for r in rows}


async def queue_stats(conn: asyncpg.Connection) -> tuple[dict[str, int], float]:
    rows = await conn.fetch(
        "SELECT agent_type, count(*) AS n, extract(epoch FROM now() - min(created_at)) AS age"
        " FROM runs WHERE status = 'queued' GROUP BY agent_type"
    )
    oldest = max((float(r["age"] or 0) for r in rows), default=0.0)
    return {r["agent_type"]: int(r["n"]) for r in rows}, oldest


async def save_archive(conn: asyncpg.Connection, run_id: str, archive: bytes) -> None:
    await conn.execute(
        "INSERT INTO run_archives (run_id, archive) VALUES ($1, $2)", run_id, archive
    )


async def load_archive(conn: asyncpg.Connection, run_id: str) -> bytes | None:
    data: bytes | None = await conn.fetchval(
        "SELECT archive FROM run_archives WHERE run_id = $1", run_id
    )
    return data


async def save_results(
    conn: asyncpg.Connection,
    run_id: str,
    diff: str | None,
    changed_files: list[str],
    quality_score: float | None,
    coverage_percent: float | None,
    quality: dict[str, Any],
) -> None:
    await conn.execute(
        """
        UPDATE runs SET diff = $2, changed_files = $3, quality_score = $4,
                        coverage_percent = $5, quality = $6
         WHERE id = $1
        """,
        run_id,
        diff,
        changed_files,
        quality_score,
        coverage_percent,
        quality,
    )


async def get_diff(conn: asyncpg.Connection, run_id: str, tenant: str | None) -> str | None:
    row = await conn.fetchrow(
        "SELECT diff FROM runs WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)", run_id, tenant
    )
    if row is None:
        raise LookupError(run_id)
    diff: str | None = row["diff"]
    return diff
