"""The monthly report's incident SQL: incidents opened in the period, how they were resolved,
and the critical ones open at any point of it (for availability).

Incidents are the platform's (they carry no tenant), so these functions take none. An incident
belongs to the period it was *opened* in; "resolved" means resolved before the period ended, so
a finished month's figures do not change when an incident from its last day is resolved later.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

__all__ = [
    "critical_spans",
    "incident_counts",
    "incident_histogram",
    "incident_resolution",
    "longest_incidents",
]


async def critical_spans(
    conn: asyncpg.Connection, start: datetime, end: datetime
) -> list[asyncpg.Record]:
    """Critical incidents open at some point of ``[start, end)``: id, opened_at, resolved_at.
    Few rows by nature (a critical incident is an outage), so the union is taken in Python."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT id, opened_at, resolved_at FROM incidents
         WHERE severity = 'critical' AND opened_at < $2
           AND (resolved_at IS NULL OR resolved_at > $1)
         ORDER BY opened_at, id
        """,
        start,
        end,
    )
    return rows


_OPENED = "opened_at >= $1 AND opened_at < $2"
_RESOLVED_IN = "resolved_at IS NOT NULL AND resolved_at < $2"
_MINUTES = "extract(epoch FROM resolved_at - opened_at) / 60.0"


async def incident_counts(
    conn: asyncpg.Connection, start: datetime, end: datetime
) -> list[asyncpg.Record]:
    """Incidents opened in the period, per (severity, source)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT severity, source, count(*) AS n FROM incidents WHERE {_OPENED} "
        "GROUP BY 1, 2 ORDER BY 1, 2",
        start,
        end,
    )
    return rows


async def incident_resolution(
    conn: asyncpg.Connection, start: datetime, end: datetime
) -> asyncpg.Record:
    """Of incidents opened in the period: resolved by its end (and how fast: p50/p90, max,
    mean minutes), still open then, auto-resolved, and those a person acknowledged or
    resolved (by the end of the period)."""
    row = await conn.fetchrow(
        f"""
        SELECT count(*) AS total,
               count(*) FILTER (WHERE {_RESOLVED_IN}) AS resolved,
               count(*) FILTER (WHERE NOT ({_RESOLVED_IN})) AS open_at_end,
               percentile_cont(ARRAY[0.5, 0.9]::float8[]) WITHIN GROUP (
                   ORDER BY CASE WHEN {_RESOLVED_IN} THEN {_MINUTES} END) AS q,
               max(CASE WHEN {_RESOLVED_IN} THEN {_MINUTES} END)::float8 AS max_minutes,
               avg(CASE WHEN {_RESOLVED_IN} THEN {_MINUTES} END)::float8 AS mean_minutes,
               count(*) FILTER (WHERE {_RESOLVED_IN} AND resolved_by = 'auto') AS auto,
               count(*) FILTER (WHERE (acknowledged_by IS NOT NULL AND acknowledged_at < $2)
                                   OR ({_RESOLVED_IN} AND resolved_by = 'human')) AS human
          FROM incidents WHERE {_OPENED}
        """,
        start,
        end,
    )
    assert row is not None
    return row


async def incident_histogram(
    conn: asyncpg.Connection, start: datetime, end: datetime, edges: Sequence[float]
) -> list[asyncpg.Record]:
    """Resolved incidents per bar of minutes to resolve: bar = 1-based index into ``edges``."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""
        SELECT width_bucket({_MINUTES}::float8, $3::float8[]) AS bar, count(*) AS n
          FROM incidents WHERE {_OPENED} AND {_RESOLVED_IN}
         GROUP BY 1 ORDER BY 1
        """,
        start,
        end,
        list(edges),
    )
    return rows


async def longest_incidents(
    conn: asyncpg.Connection, start: datetime, end: datetime, limit: int = 10
) -> list[asyncpg.Record]:
    """The longest incidents opened in the period (an unresolved one counts to the end)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""
        SELECT id, title, service, severity, source, opened_at, resolved_at, resolved_by,
               NOT ({_RESOLVED_IN}) AS ongoing,
               extract(epoch FROM (CASE WHEN {_RESOLVED_IN} THEN resolved_at ELSE $2 END)
                                  - opened_at)::float8 / 60.0 AS minutes
          FROM incidents WHERE {_OPENED}
         ORDER BY minutes DESC, id LIMIT $3
        """,
        start,
        end,
        limit,
    )
    return rows
