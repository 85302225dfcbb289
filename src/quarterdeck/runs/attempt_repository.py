"""The SQL of what one attempt writes: its claim, its turn checkpoints, heartbeats and its end.

Split from :mod:`.repository` (inserts, events, cancel, requeue, results, deletion); only the run
store and its group commit (:mod:`.writes`) call it. Each write is one statement batched over
runs, so concurrent attempts share it. A running attempt's writes are fenced (:mod:`.fencing`): a
turn, a heartbeat or an end with an epoch takes effect only while the run is ``running`` at that
attempt, decided by the statement itself (the claim is what starts a new epoch). A turn's
checkpoint, its event and the run's totals are written in one statement, which is what makes a
completed turn impossible to bill twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg

from quarterdeck.runs import transitions
from quarterdeck.runs.models import Run, RunStatus

_CLAIM_FROM = transitions.guard(RunStatus.running)
_END_FROM = sorted(s.value for s in transitions.ENDABLE)
_TERMINAL = sorted(s.value for s in RunStatus if s.terminal)


async def start_attempts(
    conn: asyncpg.Connection, run_ids: list[str], worker_id: str
) -> dict[str, tuple[Run, bool]]:
    """Claim runs for execution: bump attempts, mark running, record it. One statement.

    Returns {run id: (run, first_start)}; a run missing from it could not be claimed (already
    terminal: a stale or duplicate job for a finished or cancelled run). A run claimed while
    still ``running`` takes it from an attempt that went silent (its job was picked up again):
    the status event names that attempt as ``superseded``, which fencing then keeps from
    recording anything more.
    """
    rows = await conn.fetch(
        """
        WITH o AS (
            SELECT id, status AS was, worker_id AS was_worker FROM runs
             WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE
        ), u AS (
            UPDATE runs r
               SET status = 'running', attempts = r.attempts + 1, worker_id = $2,
                   started_at = coalesce(r.started_at, now()), heartbeat_at = now()
              FROM o
             WHERE r.id = o.id AND r.status = ANY($3::text[])
            RETURNING r.*, o.was, o.was_worker
        ), e AS (
            INSERT INTO run_events (run_id, type, data)
            SELECT id, 'status', jsonb_build_object('status', 'running', 'attempt', attempts,
                                                    'worker', $2::text, 'resumed', attempts > 1)
                   || CASE WHEN was = 'running' THEN jsonb_build_object('superseded',
                          jsonb_build_object('attempt', attempts - 1, 'worker', was_worker))
                      ELSE '{}'::jsonb END
              FROM u
        )
        SELECT u.*, (u.attempts = 1) AS first_start FROM u
        """,
        sorted(run_ids),
        worker_id,
        _CLAIM_FROM,
    )
    return {r["id"]: (Run.from_row(r), bool(r["first_start"])) for r in rows}


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
    hold_id: str | None = None
    """The budget hold reserved for this turn's call: deleted in the statement that records the
    metered cost (or releases it when the attempt is fenced)."""
    epoch: int = 0
    """The attempt recording it (``runs.attempts`` at claim); set by the store's ``save_turn``."""


async def save_turns(conn: asyncpg.Connection, turns: list[TurnRecord]) -> set[tuple[str, int]]:
    """Checkpoint completed turns, add their usage to their runs, record their events and settle
    their budget holds; returns (run, epoch) of each turn recorded.

    One statement, so each turn is atomic without an explicit transaction: either it is fully
    recorded and billed, or not at all. A batch holds at most one turn per run. Fenced: a turn is
    recorded only while its attempt holds the run (``running`` at attempt ``epoch``); the
    ``UPDATE`` decides, and re-checks a row a concurrent claim changed, so the turn row, the
    event and the totals follow one decision. The others are left out (the caller raises
    ``Fenced`` for them) while their neighbours commit; every hold in the batch is deleted.
    """
    rows = await conn.fetch(
        """
        WITH v AS (
            SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::bigint[],
                                 $6::bigint[], $7::bigint[], $8::bigint[], $9::numeric[],
                                 $10::text[], $11::jsonb[], $12::int[])
                AS v(run_id, turn, messages, model, input_tokens, output_tokens,
                     cache_creation_tokens, cache_read_tokens, cost_usd, stop_reason, event,
                     epoch)
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
              FROM v WHERE r.id = v.run_id AND r.status = 'running' AND r.attempts = v.epoch
            RETURNING r.id, v.epoch
        ), t AS (
            INSERT INTO run_turns (run_id, turn, messages, model, input_tokens, output_tokens,
                                   cache_creation_tokens, cache_read_tokens, cost_usd,
                                   stop_reason)
            SELECT run_id, turn, messages::jsonb, model, input_tokens, output_tokens,
                   cache_creation_tokens, cache_read_tokens, cost_usd, stop_reason
              FROM v JOIN u ON u.id = v.run_id AND u.epoch = v.epoch
        ), h AS (
            DELETE FROM budget_holds WHERE id = ANY($13::text[])
        ), e AS (
            INSERT INTO run_events (run_id, type, turn, data)
            SELECT run_id, 'turn', turn, event
              FROM v JOIN u ON u.id = v.run_id AND u.epoch = v.epoch
        )
        SELECT id, epoch FROM u
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
        [t.epoch for t in turns],
        [t.hold_id for t in turns],
    )
    return {(r["id"], r["epoch"]) for r in rows}


@dataclass(frozen=True)
class Finish:
    run_id: str
    status: RunStatus
    result: str | None = None
    error: str | None = None
    event: dict[str, Any] | None = None
    epoch: int | None = None
    """The attempt ending the run (its worker's own finish), or None for an end decided by no
    attempt (a cancel before start, the health monitor's timeout)."""
    usage: dict[str, Any] | None = None
    """Totals metered elsewhere (a claude-code run's calls, by the gateway): ``turns``,
    ``input_tokens``, ``output_tokens``, ``cache_creation_tokens``, ``cache_read_tokens``,
    ``cost_usd``; each given one replaces the run's. None: the turns' own totals stand."""


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
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[],
                                 $7::int[], $8::jsonb[])
                AS v(id, status, result, error, data, epoch, usage)
        ), u AS (
            UPDATE runs r SET status = v.status, result = v.result, error = v.error,
                              finished_at = now(), started_at = coalesce(r.started_at, now()),
                              turns = coalesce((v.usage->>'turns')::int, r.turns),
                              input_tokens = coalesce((v.usage->>'input_tokens')::bigint,
                                                      r.input_tokens),
                              output_tokens = coalesce((v.usage->>'output_tokens')::bigint,
                                                       r.output_tokens),
                              cache_creation_tokens = coalesce(
                                  (v.usage->>'cache_creation_tokens')::bigint,
                                  r.cache_creation_tokens),
                              cache_read_tokens = coalesce((v.usage->>'cache_read_tokens')::bigint,
                                                           r.cache_read_tokens),
                              cost_usd = coalesce((v.usage->>'cost_usd')::numeric, r.cost_usd)
              FROM v
             WHERE r.id = v.id AND r.status = ANY($6::text[])
               AND (v.epoch IS NULL OR (r.status = 'running' AND r.attempts = v.epoch))
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
        _END_FROM,
        [i.epoch for i in items],
        [i.usage for i in items],
    )
    return {r["id"]: Run.from_row(r) for r in rows}


async def unfinished(conn: asyncpg.Connection, run_ids: list[str]) -> set[str]:
    """Which of these runs have not ended: a fenced finish that found one of them lost it to
    another attempt; one that ended meanwhile simply lost a race."""
    rows = await conn.fetch(
        "SELECT id FROM runs WHERE id = ANY($1::text[]) AND NOT (status = ANY($2::text[]))",
        run_ids,
        _TERMINAL,
    )
    return {r["id"] for r in rows}


async def heartbeat(conn: asyncpg.Connection, run_ids: list[str], epochs: list[int]) -> set[str]:
    """Mark runs alive for the attempts that still hold them; returns the runs marked."""
    rows = await conn.fetch(
        """
        UPDATE runs r SET heartbeat_at = now()
          FROM unnest($1::text[], $2::int[]) AS v(id, epoch)
         WHERE r.id = v.id AND r.status = 'running' AND r.attempts = v.epoch
        RETURNING r.id
        """,
        run_ids,
        epochs,
    )
    return {r["id"] for r in rows}


async def record_usage(
    conn: asyncpg.Connection, run_id: str, epoch: int, usage: dict[str, Any]
) -> bool:
    """Set the run's totals to ``usage`` (see ``Finish.usage``) while attempt ``epoch`` holds
    it; False when it does not."""
    done = await conn.fetchval(
        """
        UPDATE runs SET turns = coalesce(($3::jsonb->>'turns')::int, turns),
                        input_tokens = coalesce(($3::jsonb->>'input_tokens')::bigint, input_tokens),
                        output_tokens = coalesce(($3::jsonb->>'output_tokens')::bigint,
                                                 output_tokens),
                        cache_creation_tokens = coalesce(
                            ($3::jsonb->>'cache_creation_tokens')::bigint, cache_creation_tokens),
                        cache_read_tokens = coalesce(($3::jsonb->>'cache_read_tokens')::bigint,
                                                     cache_read_tokens),
                        cost_usd = coalesce(($3::jsonb->>'cost_usd')::numeric, cost_usd)
         WHERE id = $1 AND status = 'running' AND attempts = $2
        RETURNING true
        """,
        run_id,
        epoch,
        usage,
    )
    return bool(done)


async def attempt_held(conn: asyncpg.Connection, run_id: str, epoch: int) -> bool:
    """Does attempt ``epoch`` still hold the run? The executor's fence check before a model
    call: one primary-key read."""
    held = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM runs WHERE id = $1 AND status = 'running' AND attempts = $2)",
        run_id,
        epoch,
    )
    return bool(held)
