"""Read-only SQL behind the dashboard's run aggregates (:mod:`.insights`).

Every window is a range over ``finished_at`` (``runs_finished_at``) or a status lookup
(``runs_status``), so a month of 100k runs is one index range scan, never a table scan of all
history. The tenant clause is added only when there is a tenant: a ``$1 IS NULL OR tenant = $1``
clause would let Postgres cache one generic plan for both shapes, which estimates the ranges
blindly. Functions take an open connection; nothing here changes a row.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg

ERRORED = "('failed', 'timed_out')"
"""What the error rate counts: runs that ended badly, not those a person cancelled."""

LATENCY = "extract(epoch FROM finished_at - started_at)"


def _scoped(sql: str, tenant: str | None, *args: Any) -> tuple[str, list[Any]]:
    """``sql`` with ``{scope}`` filled: ``AND tenant = $n`` after ``args``, or nothing."""
    if tenant is None:
        return sql.format(scope=""), list(args)
    return sql.format(scope=f" AND tenant = ${len(args) + 1}"), [*args, tenant]


async def state_counts(
    conn: asyncpg.Connection, tenant: str | None, day_start: datetime, now: datetime
) -> dict[str, int]:
    """Runs queued or running now, and runs that reached each end state since ``day_start``."""
    sql, args = _scoped(
        "SELECT status, count(*) AS n FROM runs"
        " WHERE status IN ('queued', 'running'){scope} GROUP BY status"
        " UNION ALL"
        " SELECT status, count(*) AS n FROM runs"
        " WHERE finished_at >= $1 AND finished_at < $2"
        " AND status NOT IN ('queued', 'running'){scope} GROUP BY status",
        tenant,
        day_start,
        now,
    )
    rows = await conn.fetch(sql, *args)
    return {r["status"]: int(r["n"]) for r in rows}


async def period_totals(
    conn: asyncpg.Connection,
    tenant: str | None,
    month_start: datetime,
    day_start: datetime,
    now: datetime,
) -> dict[str, dict[str, Any]]:
    """{"month": totals, "today": totals} from one scan of the month's finished runs.

    Each row: finished, succeeded, errored, p50/p95/p99 (seconds), spend, tokens by class.
    """

    def totals(prefix: str, cond: str) -> str:
        f = f" FILTER (WHERE {cond})"
        return (
            f"count(*){f} AS {prefix}finished,"
            f" count(*) FILTER (WHERE {cond} AND status = 'succeeded') AS {prefix}succeeded,"
            f" count(*) FILTER (WHERE {cond} AND status IN {ERRORED}) AS {prefix}errored,"
            f" percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY {LATENCY})"
            f" FILTER (WHERE {cond} AND started_at IS NOT NULL) AS {prefix}latency,"
            f" coalesce(sum(cost_usd){f}, 0) AS {prefix}spend,"
            f" coalesce(sum(input_tokens){f}, 0) AS {prefix}input_tokens,"
            f" coalesce(sum(output_tokens){f}, 0) AS {prefix}output_tokens,"
            f" coalesce(sum(cache_creation_tokens){f}, 0) AS {prefix}cache_write_tokens,"
            f" coalesce(sum(cache_read_tokens){f}, 0) AS {prefix}cache_read_tokens"
        )

    sql, args = _scoped(
        f"SELECT {totals('m_', 'true')}, {totals('d_', 'finished_at >= $3')} FROM runs"
        " WHERE finished_at >= $1 AND finished_at < $2{scope}",
        tenant,
        min(month_start, day_start),
        now,
        day_start,
    )
    row = await conn.fetchrow(sql, *args)
    assert row is not None  # an aggregate without GROUP BY always answers one row
    return {"month": _strip(row, "m_"), "today": _strip(row, "d_")}


def _strip(row: asyncpg.Record, prefix: str) -> dict[str, Any]:
    return {k.removeprefix(prefix): v for k, v in row.items() if k.startswith(prefix)}


async def series(
    conn: asyncpg.Connection,
    tenant: str | None,
    step: timedelta,
    start: datetime,
    now: datetime,
    *,
    with_p95: bool,
) -> list[asyncpg.Record]:
    """Every ``step`` from ``start`` to ``now``: bucket start, finished, errored, spend and
    (``with_p95``) the p95 latency in seconds, else NULL.

    One index range aggregate per bucket (a lateral join) rather than one ``GROUP BY`` over the
    window: Postgres cannot tell that a bucket expression has only 30 values, so it sorts the
    whole window (100k runs: ~100 ms) where thirty small ranges need no sort at all. The step is
    seconds, not a calendar interval, so a day is 24 h whatever the session's time zone.
    """
    p95 = (
        f"percentile_cont(0.95) WITHIN GROUP (ORDER BY {LATENCY})"
        " FILTER (WHERE started_at IS NOT NULL)"
        if with_p95
        else "NULL::float8"
    )
    sql, args = _scoped(
        "SELECT b.bucket, a.finished, a.errored, a.p95, a.spend"
        " FROM generate_series($1::timestamptz, $2::timestamptz, make_interval(secs => $3))"
        "  AS b(bucket)"
        " CROSS JOIN LATERAL ("
        f"  SELECT count(*) AS finished, count(*) FILTER (WHERE status IN {ERRORED}) AS errored,"
        f"  {p95} AS p95, coalesce(sum(cost_usd), 0) AS spend FROM runs"
        "  WHERE finished_at >= b.bucket"
        "  AND finished_at < least(b.bucket + make_interval(secs => $3), $2){scope}"
        " ) a WHERE b.bucket < $2 ORDER BY 1",
        tenant,
        start,
        now,
        step.total_seconds(),
    )
    return list(await conn.fetch(sql, *args))


async def queued(
    conn: asyncpg.Connection, tenant: str | None, now: datetime
) -> tuple[dict[str, int], float]:
    """Queued runs per agent type and the oldest one's age in seconds (the gauges' figures,
    within a tenant's reach)."""
    sql, args = _scoped(
        "SELECT agent_type, count(*) AS n,"
        " greatest(extract(epoch FROM $1 - min(created_at)), 0) AS age"
        " FROM runs WHERE status = 'queued'{scope} GROUP BY agent_type ORDER BY agent_type",
        tenant,
        now,
    )
    rows = await conn.fetch(sql, *args)
    oldest = max((float(r["age"] or 0) for r in rows), default=0.0)
    return {r["agent_type"]: int(r["n"]) for r in rows}, oldest


async def live_workers(conn: asyncpg.Connection, tenant: str | None, since: datetime) -> list[str]:
    """Workers holding a running run that heartbeated at or after ``since``."""
    sql, args = _scoped(
        "SELECT DISTINCT worker_id FROM runs WHERE status = 'running'"
        " AND worker_id IS NOT NULL AND heartbeat_at >= $1{scope} ORDER BY worker_id",
        tenant,
        since,
    )
    return [r["worker_id"] for r in await conn.fetch(sql, *args)]


async def active_tenants(
    conn: asyncpg.Connection, since: datetime, now: datetime, limit: int
) -> list[str]:
    """Tenants with runs finished in [since, now) or still in flight, by spend, then name."""
    rows = await conn.fetch(
        "SELECT tenant, sum(cost_usd) AS spend FROM ("
        " SELECT tenant, cost_usd FROM runs WHERE finished_at >= $1 AND finished_at < $2"
        " UNION ALL"
        " SELECT tenant, 0 FROM runs WHERE status IN ('queued', 'running')"
        ") t GROUP BY tenant ORDER BY spend DESC, tenant LIMIT $3",
        since,
        now,
        limit,
    )
    return [r["tenant"] for r in rows]
