"""All SQL for runs, events and turn checkpoints.

Functions take an open connection so callers choose the transaction: the worker writes a turn's
checkpoint, its events and the run's totals in one transaction, which is what makes a completed
turn impossible to bill twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg

from quarterdeck.runs.models import Run, RunEvent, RunFilter, RunStatus

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
)


_INSERT_RUNS = """
    WITH r AS (
        INSERT INTO runs (id, tenant, agent_type, operation, prompt, model, max_attempts,
                          idempotency_key, request_hash, job_id, params, budget_usd)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::text[], $7::int[], $8::text[], $9::text[], $10::bigint[],
                             $11::jsonb[], $12::numeric[])
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
    columns = [[row[c] for row in rows] for c in _RUN_COLUMNS]
    inserted = await conn.fetch(_INSERT_RUNS_RETURNING, *columns)
    return [Run.from_row(r) for r in inserted]


async def insert_runs_counted(conn: asyncpg.Connection, rows: list[dict[str, Any]]) -> int:
    """:func:`insert_runs` for callers that only need how many went in (a batch of 1,000
    would otherwise read every row back and build a model per run)."""
    columns = [[row[c] for row in rows] for c in _RUN_COLUMNS]
    return int(await conn.fetchval(_INSERT_RUNS_COUNTING, *columns))


async def find_by_idempotency_keys(
    conn: asyncpg.Connection, tenant: str, keys: list[str]
) -> dict[str, tuple[str, str | None]]:
    """{idempotency key: (run id, request hash)} for the keys that exist."""
    rows = await conn.fetch(
        "SELECT idempotency_key, id, request_hash FROM runs"
        " WHERE tenant = $1 AND idempotency_key = ANY($2::text[])",
        tenant,
        keys,
    )
    return {r["idempotency_key"]: (r["id"], r["request_hash"]) for r in rows}


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
        INSERT INTO run_events (run_id, type, turn, data) VALUES ($1, $2, $3, $4) RETURNING id
        """,
        run_id,
        type_,
        turn,
        data,
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


async def start_attempts(
    conn: asyncpg.Connection, run_ids: list[str], worker_id: str
) -> dict[str, tuple[Run, bool]]:
    """Claim runs for execution: bump attempts, mark running, record it. One statement.

    Returns {run id: (run, first_start)}; a run missing from it is already terminal (a stale or
    duplicate job for a finished or cancelled run).
    """
    rows = await conn.fetch(
        """
        WITH u AS (
            UPDATE runs
               SET status = 'running', attempts = attempts + 1, worker_id = $2,
                   started_at = coalesce(started_at, now()), heartbeat_at = now()
             WHERE id = ANY($1::text[]) AND status IN ('queued', 'running')
            RETURNING *
        ), e AS (
            INSERT INTO run_events (run_id, type, data)
            SELECT id, 'status', jsonb_build_object('status', 'running', 'attempt', attempts,
                                                    'worker', $2::text, 'resumed', attempts > 1)
              FROM u
        )
        SELECT u.*, (u.attempts = 1) AS first_start FROM u
        """,
        sorted(run_ids),
        worker_id,
    )
    return {r["id"]: (Run.from_row(r), bool(r["first_start"])) for r in rows}


async def latest_event_ids(conn: asyncpg.Connection, run_ids: list[str]) -> dict[str, int]:
    """The newest event id of each run (one index probe per run): what live followers poll."""
    rows = await conn.fetch(
        "SELECT r.id, (SELECT max(e.id) FROM run_events e WHERE e.run_id = r.id) AS last"
        " FROM unnest($1::text[]) AS r(id)",
        run_ids,
    )
    return {r["id"]: int(r["last"]) for r in rows if r["last"] is not None}


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


@dataclass(frozen=True)
class TurnRecord:
    """One completed turn to checkpoint: conversation so far, usage, cost and its event."""

    run_id: str
    turn: int
    messages: list[Any]
    model: str
    usage: dict[str, int]
    cost: Decimal | None
    stop_reason: str
    event: dict[str, Any]


async def save_turns(conn: asyncpg.Connection, turns: list[TurnRecord]) -> None:
    """Checkpoint completed turns, add their usage to their runs and record their events.

    One statement, so each turn is atomic without an explicit transaction: either it is fully
    recorded and billed, or not at all. A batch holds at most one turn per run.
    """
    await conn.execute(
        """
        WITH v AS (
            SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::bigint[],
                                 $6::bigint[], $7::bigint[], $8::bigint[], $9::numeric[],
                                 $10::text[], $11::jsonb[])
                AS v(run_id, turn, messages, model, input_tokens, output_tokens,
                     cache_creation_tokens, cache_read_tokens, cost_usd, stop_reason, event)
        ), t AS (
            INSERT INTO run_turns (run_id, turn, messages, model, input_tokens, output_tokens,
                                   cache_creation_tokens, cache_read_tokens, cost_usd,
                                   stop_reason)
            SELECT run_id, turn, messages::jsonb, model, input_tokens, output_tokens,
                   cache_creation_tokens, cache_read_tokens, cost_usd, stop_reason FROM v
        ), u AS (
            UPDATE runs r
               SET turns = v.turn,
                   input_tokens = r.input_tokens + v.input_tokens,
                   output_tokens = r.output_tokens + v.output_tokens,
                   cache_creation_tokens = r.cache_creation_tokens + v.cache_creation_tokens,
                   cache_read_tokens = r.cache_read_tokens + v.cache_read_tokens,
                   cost_usd = r.cost_usd + coalesce(v.cost_usd, 0),
                   cost_known = r.cost_known AND v.cost_usd IS NOT NULL,
                   heartbeat_at = now()
              FROM v WHERE r.id = v.run_id
        )
        INSERT INTO run_events (run_id, type, turn, data) SELECT run_id, 'turn', turn, event FROM v
        """,
        [t.run_id for t in turns],
        [t.turn for t in turns],
        # JSON text, not jsonb values: the driver would read a list as an array dimension.
        [json.dumps(t.messages) for t in turns],
        [t.model for t in turns],
        [t.usage["input_tokens"] for t in turns],
        [t.usage["output_tokens"] for t in turns],
        [t.usage["cache_creation_input_tokens"] for t in turns],
        [t.usage["cache_read_input_tokens"] for t in turns],
        [t.cost for t in turns],
        [t.stop_reason for t in turns],
        [t.event for t in turns],
    )


@dataclass(frozen=True)
class Finish:
    run_id: str
    status: RunStatus
    result: str | None = None
    error: str | None = None
    event: dict[str, Any] | None = None


async def finish(
    conn: asyncpg.Connection,
    run_id: str,
    status: RunStatus,
    result: str | None = None,
    error: str | None = None,
    event: dict[str, Any] | None = None,
) -> Run | None:
    """Move a non-terminal run to a terminal status and record it; None if already terminal."""
    done = await finish_many(conn, [Finish(run_id, status, result, error, event)])
    return done.get(run_id)


async def finish_many(conn: asyncpg.Connection, items: list[Finish]) -> dict[str, Run]:
    """Move non-terminal runs to terminal statuses and record it, in one statement.

    Returns the runs that were moved; one already terminal is left alone and missing.
    """
    rows = await conn.fetch(
        """
        WITH v AS (
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[])
                AS v(id, status, result, error, data)
        ), u AS (
            UPDATE runs r SET status = v.status, result = v.result, error = v.error,
                              finished_at = now(), started_at = coalesce(r.started_at, now())
              FROM v
             WHERE r.id = v.id AND r.status IN ('queued', 'running')
            RETURNING r.*
        ), e AS (
            INSERT INTO run_events (run_id, type, data)
            SELECT u.id, 'status', v.data FROM u JOIN v ON v.id = u.id
        )
        SELECT u.* FROM u
        """,
        [i.run_id for i in items],
        [i.status.value for i in items],
        [i.result for i in items],
        [i.error for i in items],
        [{"status": i.status.value, "error": i.error, **(i.event or {})} for i in items],
    )
    return {r["id"]: Run.from_row(r) for r in rows}


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
