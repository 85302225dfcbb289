"""The monthly report's availability SQL beyond incidents: maintenance windows and the health
monitor's probe history.

Why the probe sums are one SQL statement: a month is ~260,000 ticks (one per 10 s), so the
figures are aggregated where the rows are and only a handful of numbers come back. Each tick
covers ``[at, at + interval_s)``, and ticks overlap when a slow check delays one tick's ``at``
more than the next one's. So in time order each tick owns ``[at, next tick's at)``, cut where
no tick started so far still covers (the running maximum of their ends): the pieces are
disjoint, their sum is exactly the union of the ticks' intervals, and each piece has the state
of the newest observation. The maintenance windows (a multirange of a few ranges) are cut out
of the pieces that touch one, for the figures measured outside them.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

__all__ = ["maintenance_windows", "probe_totals"]

LOOKBACK = "1 day"
"""How far before the period a tick may start and still cover part of it (interval_s is at
most a day, a CHECK of the table)."""


async def maintenance_windows(
    conn: asyncpg.Connection, start: datetime, end: datetime
) -> list[asyncpg.Record]:
    """Windows overlapping ``[start, end)``, earliest first."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT id, starts_at, ends_at, reason, created_by, created_at
          FROM maintenance_windows WHERE starts_at < $2 AND ends_at > $1
         ORDER BY starts_at, id
        """,
        start,
        end,
    )
    return rows


_PROBES = f"""
WITH sched AS (
    SELECT coalesce(range_agg(tstzrange(starts_at, ends_at)), '{{}}'::tstzmultirange) AS m
      FROM maintenance_windows WHERE starts_at < $2 AND ends_at > $1
), ticks AS (
    SELECT at, at + make_interval(secs => interval_s::float8) AS until, healthy, failing
      FROM health_probes
     WHERE at >= $1::timestamptz - interval '{LOOKBACK}' AND at < $2
), seg AS (
    SELECT greatest(at, $1::timestamptz) AS lo,
           least(lead(at) OVER byat, max(until) OVER byat, $2::timestamptz) AS hi,
           healthy, failing
      FROM ticks
    WINDOW byat AS (ORDER BY at ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
), cut AS MATERIALIZED (
    SELECT extract(epoch FROM hi - lo)::float8 AS covered_s,
           CASE WHEN tstzrange(lo, hi) && sched.m THEN (
                    SELECT coalesce(sum(extract(epoch FROM upper(r) - lower(r))), 0)::float8
                      FROM unnest(tstzmultirange(tstzrange(lo, hi)) - sched.m) AS r)
                ELSE extract(epoch FROM hi - lo)::float8 END AS open_s,
           healthy, failing
      FROM seg CROSS JOIN sched
     WHERE hi > lo
), checks AS (
    SELECT name, sum(open_s) AS s FROM cut CROSS JOIN unnest(failing) AS name GROUP BY name
)
SELECT t.ticks, t.covered_s, t.open_s, t.open_healthy_s, t.open_unhealthy_s,
       coalesce(c.names, '{{}}') AS check_names, coalesce(c.seconds, '{{}}') AS check_seconds
  FROM (SELECT count(*) AS ticks,
               coalesce(sum(covered_s), 0)::float8 AS covered_s,
               coalesce(sum(open_s), 0)::float8 AS open_s,
               coalesce(sum(open_s) FILTER (WHERE healthy), 0)::float8 AS open_healthy_s,
               coalesce(sum(open_s) FILTER (WHERE NOT healthy), 0)::float8 AS open_unhealthy_s
          FROM cut) AS t
 CROSS JOIN (SELECT array_agg(name ORDER BY s DESC, name) AS names,
                    array_agg(s::float8 ORDER BY s DESC, name) AS seconds
               FROM checks) AS c
"""


async def probe_totals(conn: asyncpg.Connection, start: datetime, end: datetime) -> asyncpg.Record:
    """Over ``[start, end)``: ``ticks`` (ticks covering part of it), ``covered_s`` (their
    union), ``open_s`` (of that, outside maintenance windows), ``open_healthy_s`` and
    ``open_unhealthy_s`` (outside windows, no critical check failing / one failing), and
    ``check_names`` with ``check_seconds``: per failing check, the covered time outside
    windows of the ticks it failed on, longest first."""
    row = await conn.fetchrow(_PROBES, start, end)
    assert row is not None
    return row
