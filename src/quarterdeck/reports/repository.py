"""The monthly report's SQL: every figure aggregated in Postgres, never by loading rows.

Functions take an open connection, the period ``[start, end)`` and ``tenant`` (None: every
tenant) and return a few grouped rows. Runs belong to the period they were *submitted* in
(``created_at``), gateway calls to the period they were made in; the scaler's decisions and
rollouts are the platform's and take no tenant. Costs are in :mod:`.cost_repository`,
incidents in :mod:`.incident_repository`; stored reports are at the end of this module.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import asyncpg

__all__ = [
    "delivery",
    "gateway_groups",
    "gateway_per_day",
    "gateway_totals",
    "latency",
    "latency_weekly",
    "list_stored",
    "operations",
    "run_groups",
    "runs_by_status",
    "runs_per_day",
    "store_report",
    "stored_report",
    "tenants_with_activity",
]

ENDED_NOT_CANCELLED = "('succeeded', 'failed', 'timed_out', 'max_turns', 'budget_exceeded')"
"""Statuses of runs that ended on their own: the success rate's denominator."""

_RUNS = "created_at >= $1 AND created_at < $2 AND ($3::text IS NULL OR tenant = $3)"
_CALLS = "created_at >= $1 AND created_at < $2 AND ($3::text IS NULL OR tenant = $3)"


async def runs_by_status(
    conn: asyncpg.Connection, start: datetime, end: datetime, tenant: str | None
) -> list[asyncpg.Record]:
    """Per status: runs, those that succeeded on the first attempt or after retries, and runs
    retried at all."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""
        SELECT status, count(*) AS n,
               count(*) FILTER (WHERE status = 'succeeded' AND attempts <= 1) AS first_ok,
               count(*) FILTER (WHERE status = 'succeeded' AND attempts > 1) AS retried_ok,
               count(*) FILTER (WHERE attempts > 1) AS retried
          FROM runs WHERE {_RUNS}
         GROUP BY status ORDER BY n DESC, status
        """,
        start,
        end,
        tenant,
    )
    return rows


async def runs_per_day(
    conn: asyncpg.Connection, start: datetime, end: datetime, tenant: str | None
) -> list[asyncpg.Record]:
    """Days with runs (the caller fills the empty ones) and how their runs ended."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""
        SELECT (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS total,
               count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
               count(*) FILTER (WHERE status IN ('failed', 'max_turns', 'budget_exceeded'))
                   AS failed,
               count(*) FILTER (WHERE status = 'timed_out') AS timed_out,
               count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
               count(*) FILTER (WHERE status IN ('queued', 'running')) AS unfinished
          FROM runs WHERE {_RUNS}
         GROUP BY 1 ORDER BY 1
        """,
        start,
        end,
        tenant,
    )
    return rows


async def run_groups(
    conn: asyncpg.Connection,
    start: datetime,
    end: datetime,
    tenant: str | None,
    by: Literal["agent_type", "model"],
) -> list[asyncpg.Record]:
    """Runs per agent type or per model: totals, successes, the rate's denominator, cost."""
    column = {"agent_type": "agent_type", "model": "model"}[by]  # never caller text in SQL
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""
        SELECT {column} AS key, count(*) AS total,
               count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
               count(*) FILTER (WHERE status IN {ENDED_NOT_CANCELLED}) AS terminal,
               coalesce(sum(cost_usd), 0)::float8 AS cost
          FROM runs WHERE {_RUNS}
         GROUP BY 1 ORDER BY total DESC, key
        """,
        start,
        end,
        tenant,
    )
    return rows


async def gateway_totals(
    conn: asyncpg.Connection, start: datetime, end: datetime, tenant: str | None
) -> asyncpg.Record:
    row = await conn.fetchrow(
        f"""
        SELECT count(*) AS calls, count(*) FILTER (WHERE status BETWEEN 200 AND 299) AS ok,
               count(*) FILTER (WHERE client_disconnected) AS disconnected
          FROM gateway_calls WHERE {_CALLS}
        """,
        start,
        end,
        tenant,
    )
    assert row is not None  # an aggregate always returns a row
    return row


async def gateway_per_day(
    conn: asyncpg.Connection, start: datetime, end: datetime, tenant: str | None
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""
        SELECT (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS calls,
               count(*) FILTER (WHERE status BETWEEN 200 AND 299) AS ok,
               coalesce(sum(cost_usd), 0)::float8 AS cost
          FROM gateway_calls WHERE {_CALLS}
         GROUP BY 1 ORDER BY 1
        """,
        start,
        end,
        tenant,
    )
    return rows


async def gateway_groups(
    conn: asyncpg.Connection,
    start: datetime,
    end: datetime,
    tenant: str | None,
    by: Literal["model", "tenant"],
) -> list[asyncpg.Record]:
    column = {"model": "model", "tenant": "tenant"}[by]
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""
        SELECT {column} AS key, count(*) AS calls,
               count(*) FILTER (WHERE status BETWEEN 200 AND 299) AS ok,
               coalesce(sum(input_tokens), 0)::bigint AS input_tokens,
               coalesce(sum(output_tokens), 0)::bigint AS output_tokens,
               coalesce(sum(cost_usd), 0)::float8 AS cost
          FROM gateway_calls WHERE {_CALLS}
         GROUP BY 1 ORDER BY calls DESC, key
        """,
        start,
        end,
        tenant,
    )
    return rows


_RUN_DURATION = (
    f"CASE WHEN status IN {ENDED_NOT_CANCELLED} "
    "THEN extract(epoch FROM finished_at - started_at) END"
)
_QUEUE_WAIT = "CASE WHEN status <> 'cancelled' THEN extract(epoch FROM started_at - created_at) END"
_Q3 = "ARRAY[0.5, 0.95, 0.99]::float8[]"


async def latency(
    conn: asyncpg.Connection, start: datetime, end: datetime, tenant: str | None
) -> tuple[asyncpg.Record, asyncpg.Record]:
    """(runs, calls): sample counts and p50/p95/p99 arrays of run duration and queue wait
    (seconds), gateway call duration and time to first byte (ms). Cancelled runs are left out:
    a run cancelled before it started gets a start and an end of the same instant."""
    runs = await conn.fetchrow(
        f"""
        SELECT count({_RUN_DURATION}) AS n_run,
               percentile_cont({_Q3}) WITHIN GROUP (ORDER BY {_RUN_DURATION}) AS run_q,
               count({_QUEUE_WAIT}) AS n_wait,
               percentile_cont({_Q3}) WITHIN GROUP (ORDER BY {_QUEUE_WAIT}) AS wait_q
          FROM runs WHERE {_RUNS}
        """,
        start,
        end,
        tenant,
    )
    calls = await conn.fetchrow(
        f"""
        SELECT count(duration_ms) AS n_dur,
               percentile_cont({_Q3}) WITHIN GROUP (ORDER BY duration_ms) AS dur_q,
               count(ttfb_ms) AS n_ttfb,
               percentile_cont({_Q3}) WITHIN GROUP (ORDER BY ttfb_ms) AS ttfb_q
          FROM gateway_calls WHERE {_CALLS}
        """,
        start,
        end,
        tenant,
    )
    assert runs is not None and calls is not None
    return runs, calls


async def latency_weekly(
    conn: asyncpg.Connection, start: datetime, end: datetime, tenant: str | None
) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    """Per ISO week (Monday, UTC): run duration and gateway call duration percentiles."""
    week = "date_trunc('week', created_at AT TIME ZONE 'UTC')::date"
    runs: list[asyncpg.Record] = await conn.fetch(
        f"""
        SELECT {week} AS week, count({_RUN_DURATION}) AS n,
               percentile_cont({_Q3}) WITHIN GROUP (ORDER BY {_RUN_DURATION}) AS q
          FROM runs WHERE {_RUNS} GROUP BY 1 ORDER BY 1
        """,
        start,
        end,
        tenant,
    )
    calls: list[asyncpg.Record] = await conn.fetch(
        f"""
        SELECT {week} AS week, count(*) AS n,
               percentile_cont({_Q3}) WITHIN GROUP (ORDER BY duration_ms) AS q
          FROM gateway_calls WHERE {_CALLS} GROUP BY 1 ORDER BY 1
        """,
        start,
        end,
        tenant,
    )
    return runs, calls


async def delivery(
    conn: asyncpg.Connection, start: datetime, end: datetime, tenant: str | None
) -> asyncpg.Record:
    """Ended runs, those with a diff, and p10/p50/p90/min/max of quality score and coverage."""
    q = "ARRAY[0.1, 0.5, 0.9]::float8[]"
    ended = "status NOT IN ('queued', 'running')"
    diff = "changed_files IS NOT NULL AND changed_files <> '[]'::jsonb"
    row = await conn.fetchrow(
        f"""
        SELECT count(*) FILTER (WHERE {ended}) AS finished,
               count(*) FILTER (WHERE {ended} AND {diff}) AS with_diff,
               count(*) FILTER (WHERE status = 'succeeded' AND {diff}) AS succeeded_with_diff,
               count(quality_score) AS n_quality,
               percentile_cont({q}) WITHIN GROUP (ORDER BY quality_score) AS quality_q,
               min(quality_score) AS quality_min, max(quality_score) AS quality_max,
               count(coverage_percent) AS n_coverage,
               percentile_cont({q}) WITHIN GROUP (ORDER BY coverage_percent) AS coverage_q,
               min(coverage_percent) AS coverage_min, max(coverage_percent) AS coverage_max
          FROM runs WHERE {_RUNS}
        """,
        start,
        end,
        tenant,
    )
    assert row is not None
    return row


async def operations(
    conn: asyncpg.Connection, start: datetime, end: datetime
) -> tuple[list[asyncpg.Record], asyncpg.Record]:
    """(scaler decisions per direction with applied and error counts, rollouts started in the
    period by the phase they are in now)."""
    scaler: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT direction, count(*) AS n, count(applied) AS applied, count(error) AS errors
          FROM scaling_decisions WHERE at >= $1 AND at < $2
         GROUP BY 1 ORDER BY 1
        """,
        start,
        end,
    )
    rollouts = await conn.fetchrow(
        """
        SELECT count(*) AS started,
               count(*) FILTER (WHERE phase = 'completed') AS completed,
               count(*) FILTER (WHERE phase = 'rolled_back') AS rolled_back,
               count(*) FILTER (WHERE phase = 'aborted') AS aborted,
               count(*) FILTER (WHERE phase NOT IN ('completed', 'rolled_back', 'aborted'))
                   AS in_progress
          FROM rollouts WHERE created_at >= $1 AND created_at < $2
        """,
        start,
        end,
    )
    assert rollouts is not None
    return scaler, rollouts


async def tenants_with_activity(
    conn: asyncpg.Connection, start: datetime, end: datetime
) -> list[str]:
    """Tenants that submitted a run or made a gateway call in the period."""
    rows = await conn.fetch(
        """
        SELECT DISTINCT tenant FROM runs WHERE created_at >= $1 AND created_at < $2
        UNION
        SELECT DISTINCT tenant FROM gateway_calls WHERE created_at >= $1 AND created_at < $2
        ORDER BY 1
        """,
        start,
        end,
    )
    return [str(r["tenant"]) for r in rows]


# -- stored reports ------------------------------------------------------------------------------


async def store_report(
    conn: asyncpg.Connection,
    month: str,
    tenant: str | None,
    generated_at: datetime,
    inputs: dict[str, Any],
    report: dict[str, Any],
) -> None:
    """Insert or replace the stored report of ``month`` for ``tenant`` (None: all)."""
    await conn.execute(
        """
        INSERT INTO monthly_reports (month, tenant, generated_at, inputs, report)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (month, tenant) DO UPDATE
           SET generated_at = EXCLUDED.generated_at, inputs = EXCLUDED.inputs,
               report = EXCLUDED.report
        """,
        month,
        tenant or "",
        generated_at,
        inputs,
        report,
    )


async def stored_report(
    conn: asyncpg.Connection, month: str, tenant: str | None
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT month, tenant, generated_at, inputs, report FROM monthly_reports "
        "WHERE month = $1 AND tenant = $2",
        month,
        tenant or "",
    )
    return row


async def list_stored(
    conn: asyncpg.Connection, tenant: str | None, month: str | None = None, limit: int = 500
) -> list[asyncpg.Record]:
    """Stored reports newest month first; ``tenant`` None lists every one, else that tenant's
    own only (its key must not learn which other tenants have reports)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT month, tenant, generated_at, inputs FROM monthly_reports
         WHERE ($1::text IS NULL OR tenant = $1) AND ($2::text IS NULL OR month = $2)
         ORDER BY month DESC, tenant LIMIT $3
        """,
        tenant,
        month,
        limit,
    )
    return rows
