"""Read-only SQL of runs: lookups, listings, timelines, checkpoints and the runs to repair.

The repair selections lock what they return (an advisory lock, ``FOR UPDATE``) so that the
requeue that follows in the same transaction is the only one; they change nothing themselves.

The write half is :mod:`.repository` and :mod:`.attempt_repository`, the only modules that change
runs and their events. Functions take an open connection so the store chooses the transaction.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from quarterdeck.runs import transitions
from quarterdeck.runs.models import Run, RunEvent, RunFilter, RunStatus
from quarterdeck.store import locks
from quarterdeck.store.params import Params


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
    """One keyset page, newest first (``id < cursor``). ``tenant`` is the caller's reach (None:
    every tenant); ``f.tenant`` narrows within it, so a value outside the reach finds nothing.
    Each common filter has an ``(column, id DESC)`` index (migration 19), so a page is read
    in index order and stops after ``limit`` rows."""
    if f.q:
        return await _search_runs(conn, tenant, f)
    arg = Params()
    where = _where(tenant, f, arg)
    sql = f"SELECT * FROM runs WHERE {where} ORDER BY id DESC LIMIT {arg(f.limit)}"
    return [Run.from_row(r) for r in await conn.fetch(sql, *arg.values)]


SEARCH_WINDOW = 2000
"""Newest filtered runs a search checks one by one before it asks the prompt index."""


def _where(tenant: str | None, f: RunFilter, arg: Params) -> str:
    clauses = ["true"]
    if tenant is not None:
        clauses.append(f"tenant = {arg(tenant)}")
    if f.tenant is not None:
        clauses.append(f"tenant = {arg(f.tenant)}")
    if f.status:
        clauses.append(f"status = ANY({arg([s.value for s in f.status])}::text[])")
    if f.agent_type:
        clauses.append(f"agent_type = {arg(f.agent_type)}")
    if f.model:
        clauses.append(f"model = {arg(f.model)}")
    if f.created_after:
        clauses.append(f"created_at >= {arg(f.created_after)}")
    if f.created_before:
        clauses.append(f"created_at < {arg(f.created_before)}")
    if f.cursor:
        clauses.append(f"id < {arg(f.cursor)}")
    return " AND ".join(clauses)


def _matches(f: RunFilter, arg: Params) -> str:
    """``q`` as a predicate: words of the prompt (the ``runs_prompt_fts`` GIN index's
    expression, verbatim, so the index applies) or, for an id-shaped ``q``, the id range it is
    a prefix of (ids are ``run_`` and 26 Crockford characters, none above ``Z``)."""
    words = f"to_tsvector('simple', prompt) @@ plainto_tsquery('simple', {arg(f.q)})"
    prefix = f.id_prefix()
    if prefix is None:
        return f"({words})" if f.words() else "false"
    last = prefix + "Z" * (30 - len(prefix))
    return f"(({words}) OR (id >= {arg(prefix)} AND id <= {arg(last)}))"


async def _search_runs(conn: asyncpg.Connection, tenant: str | None, f: RunFilter) -> list[Run]:
    """A search page in at most three cheap statements, whatever the words' frequency.

    A word in many prompts is found among the newest runs: the first statement checks the
    newest ``SEARCH_WINDOW`` filtered runs (index order) and is done when ``limit`` matched. A
    rare word (or one in no prompt) is what the GIN index is for: the rest of the page comes
    from a materialised index lookup older than the window, whose cost follows the matches.
    Left to itself the planner walks the primary key for both (it cannot tell a rare word from
    a common one in a generic plan) and re-tokenises every prompt: 1.3 s on 200k runs.
    """
    arg = Params()
    window = (
        f"SELECT count(*) AS seen, min(id) AS floor,"
        f" coalesce(array_agg(id ORDER BY id DESC) FILTER (WHERE hit), '{{}}') AS hits"
        f" FROM (SELECT id, {_matches(f, arg)} AS hit FROM runs WHERE {_where(tenant, f, arg)}"
        f" ORDER BY id DESC LIMIT {arg(SEARCH_WINDOW)}) w"
    )
    head = await conn.fetchrow(window, *arg.values)
    assert head is not None  # an aggregate always answers one row
    ids: list[str] = list(head["hits"])[: f.limit]
    if len(ids) < f.limit and head["seen"] == SEARCH_WINDOW:
        arg = Params()
        rest = (
            f"WITH m AS MATERIALIZED (SELECT id FROM runs WHERE {_where(tenant, f, arg)}"
            f" AND id < {arg(head['floor'])} AND {_matches(f, arg)})"
            f" SELECT id FROM m ORDER BY id DESC LIMIT {arg(f.limit - len(ids))}"
        )
        ids += [r["id"] for r in await conn.fetch(rest, *arg.values)]
    if not ids:
        return []
    rows = await conn.fetch("SELECT * FROM runs WHERE id = ANY($1::text[]) ORDER BY id DESC", ids)
    return [Run.from_row(r) for r in rows]


async def latest_event_id(conn: asyncpg.Connection) -> int:
    """The newest event id of any run (0 for none): one backward step of the primary key, what
    the all-runs live signal polls."""
    value = await conn.fetchval("SELECT max(id) FROM run_events")
    return int(value or 0)


async def event_tenants_after(
    conn: asyncpg.Connection, after_id: int, limit: int
) -> list[tuple[int, str]]:
    """Events above ``after_id`` (oldest first, at most ``limit``) with their run's tenant: what
    the all-runs live signal reads to wake only the pages of the tenants whose runs moved."""
    rows = await conn.fetch(
        "SELECT e.id, r.tenant FROM run_events e JOIN runs r ON r.id = e.run_id"
        " WHERE e.id > $1 ORDER BY e.id LIMIT $2",
        after_id,
        limit,
    )
    return [(int(r["id"]), str(r["tenant"])) for r in rows]


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


async def is_cancel_requested(conn: asyncpg.Connection, run_id: str) -> bool:
    return bool(await conn.fetchval("SELECT cancel_requested FROM runs WHERE id = $1", run_id))


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


async def created_since(conn: asyncpg.Connection, window_s: float) -> int:
    """Runs submitted in the last ``window_s`` seconds (index ``runs_created_at``)."""
    n: int = await conn.fetchval(
        "SELECT count(*) FROM runs WHERE created_at >= now() - make_interval(secs => $1)",
        window_s,
    )
    return n


async def running_per_worker(conn: asyncpg.Connection, stale_after_s: float) -> dict[str, int]:
    """Running runs per worker host (``worker_id`` is ``host:pid:suffix``), fresh heartbeats."""
    rows = await conn.fetch(
        "SELECT split_part(worker_id, ':', 1) AS host, count(*) AS n FROM runs"
        " WHERE status = 'running' AND worker_id IS NOT NULL"
        " AND heartbeat_at >= now() - make_interval(secs => $1) GROUP BY 1",
        stale_after_s,
    )
    return {r["host"]: int(r["n"]) for r in rows}


async def load_archive(conn: asyncpg.Connection, run_id: str) -> bytes | None:
    data: bytes | None = await conn.fetchval(
        "SELECT archive FROM run_archives WHERE run_id = $1", run_id
    )
    return data


async def get_diff(conn: asyncpg.Connection, run_id: str, tenant: str | None) -> str | None:
    row = await conn.fetchrow(
        "SELECT diff FROM runs WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)", run_id, tenant
    )
    if row is None:
        raise LookupError(run_id)
    diff: str | None = row["diff"]
    return diff


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


_ORPHAN_LOCK = locks.RUN_ORPHANS  # one repairer of each kind at a time per database
_LAPSED_LOCK = locks.RUN_LAPSED


async def lock_orphans(conn: asyncpg.Connection, stale_after_s: float) -> list[str]:
    """Unfinished runs whose job is gone and whose worker is silent. Call in a transaction.

    Normally pgqueuer re-picks a dead worker's job itself. A job can still vanish, e.g. when a
    handler failed while Postgres was restarting and the job was logged as failed; without a
    repair the run would stay unfinished forever. A transaction-level advisory lock keeps
    concurrent workers from repairing the same run twice (empty when another holds it).
    """
    if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _ORPHAN_LOCK):
        return []
    rows = await conn.fetch(
        """
        SELECT r.id FROM runs r
         WHERE r.status = ANY($2::text[])
           AND coalesce(r.heartbeat_at, r.created_at) < now() - make_interval(secs => $1)
           AND NOT EXISTS (SELECT 1 FROM pgqueuer q WHERE q.id = r.job_id)
         ORDER BY r.id LIMIT 500
        """,
        stale_after_s,
        transitions.guard(RunStatus.queued),
    )
    return [r["id"] for r in rows]


async def lock_lapsed(
    conn: asyncpg.Connection, stale_after_s: float, limit: int = 500
) -> list[tuple[str, int | None]]:
    """(run id, job id) of ``running`` runs without a worker heartbeat, locked. In a transaction.

    A run whose job pgqueuer still sees alive (a fresh job heartbeat) is not lapsed: its holder
    is slow, not gone.
    """
    if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _LAPSED_LOCK):
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
    return [(r["id"], None if r["job_id"] is None else int(r["job_id"])) for r in rows]
