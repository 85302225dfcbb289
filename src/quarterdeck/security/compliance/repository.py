"""All SQL behind the compliance report: read-only aggregates over one period."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg


async def _rows(conn: asyncpg.Connection, sql: str, *args: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(sql, *args)]


async def keys(conn: asyncpg.Connection, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Per role: keys active at the end, created and revoked in the period, and the active ones
    nobody used in the 90 days before its end (last use as of now, so for a past period it can
    only undercount the unused)."""
    return await _rows(
        conn,
        """
        SELECT role,
               count(*) FILTER (WHERE created_at < $2 AND (revoked_at IS NULL OR revoked_at >= $2)
                                AND (expires_at IS NULL OR expires_at >= $2)) AS active,
               count(*) FILTER (WHERE created_at >= $1 AND created_at < $2) AS created,
               count(*) FILTER (WHERE revoked_at >= $1 AND revoked_at < $2) AS revoked,
               count(*) FILTER (WHERE expires_at IS NOT NULL AND created_at < $2) AS expiring,
               count(*) FILTER (WHERE created_at < $2 AND (revoked_at IS NULL OR revoked_at >= $2)
                                AND (expires_at IS NULL OR expires_at >= $2)
                                AND coalesce(last_used_at, created_at) < $2 - interval '90 days')
                 AS unused_90d,
               count(DISTINCT tenant) AS tenants
          FROM api_keys GROUP BY role ORDER BY role
        """,
        start,
        end,
    )


async def audit_events_by_type(
    conn: asyncpg.Connection, start: datetime, end: datetime
) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT event_type, count(*) AS n FROM audit_events WHERE ts >= $1 AND ts < $2"
        " GROUP BY event_type ORDER BY event_type",
        start,
        end,
    )
    return {r["event_type"]: int(r["n"]) for r in rows}


async def anomalies(
    conn: asyncpg.Connection, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    return await _rows(
        conn,
        "SELECT severity, count(*) AS n FROM audit_events WHERE severity IS NOT NULL"
        " AND ts >= $1 AND ts < $2 GROUP BY severity ORDER BY severity",
        start,
        end,
    )


async def policy_decisions(
    conn: asyncpg.Connection, start: datetime, end: datetime
) -> dict[str, int]:
    rows = await conn.fetch(
        """
        SELECT coalesce(data->'policy'->>'action', 'allow') AS action, count(*) AS n
          FROM run_events WHERE type = 'tool_call' AND ts >= $1 AND ts < $2
         GROUP BY 1 ORDER BY 1
        """,
        start,
        end,
    )
    return {r["action"]: int(r["n"]) for r in rows}


async def approvals(conn: asyncpg.Connection, start: datetime, end: datetime) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT status, count(*) AS n FROM run_approvals WHERE requested_at >= $1"
        " AND requested_at < $2 GROUP BY status ORDER BY status",
        start,
        end,
    )
    return {r["status"]: int(r["n"]) for r in rows}


async def security_incidents(
    conn: asyncpg.Connection, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    return await _rows(
        conn,
        """
        SELECT severity, status, resolved_by, count(*) AS n,
               avg(extract(epoch FROM resolved_at - opened_at)) AS mean_resolve_s
          FROM incidents WHERE source = 'security' AND opened_at >= $1 AND opened_at < $2
         GROUP BY severity, status, resolved_by ORDER BY severity, status
        """,
        start,
        end,
    )


async def checkpoints(conn: asyncpg.Connection, start: datetime, end: datetime) -> dict[str, Any]:
    row = await conn.fetchrow(
        "SELECT count(*) AS n, max(created_at) AS last, count(DISTINCT tenant) AS tenants"
        " FROM audit_checkpoints WHERE created_at >= $1 AND created_at < $2",
        start,
        end,
    )
    return dict(row) if row else {}


async def retention(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return await _rows(
        conn, "SELECT tenant, retention_seconds FROM audit_retention ORDER BY tenant"
    )


async def purges(conn: asyncpg.Connection, start: datetime, end: datetime) -> list[dict[str, Any]]:
    return await _rows(
        conn,
        "SELECT tenant, seq, purged, created_at FROM audit_anchors"
        " WHERE created_at >= $1 AND created_at < $2 ORDER BY created_at",
        start,
        end,
    )


async def processing(
    conn: asyncpg.Connection, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """GDPR Art. 30: what was processed for whom: runs per tenant, agent type and model."""
    return await _rows(
        conn,
        """
        SELECT tenant, agent_type, model, count(*) AS runs,
               sum(input_tokens + output_tokens) AS tokens
          FROM runs WHERE created_at >= $1 AND created_at < $2
         GROUP BY tenant, agent_type, model ORDER BY tenant, agent_type, model
        """,
        start,
        end,
    )


async def shredded(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return await _rows(
        conn,
        "SELECT tenant, min(shredded_at) AS shredded_at, count(*) AS keys FROM audit_data_keys"
        " WHERE shredded_at IS NOT NULL GROUP BY tenant ORDER BY tenant",
    )


async def erasure_requests(
    conn: asyncpg.Connection, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """Per tenant: when erasure was last requested in the period and when it last completed
    (``tenant.erasure_requested`` is recorded before anything is deleted, ``tenant.erased``
    after, so a request without a later completion failed or is still going)."""
    return await _rows(
        conn,
        """
        SELECT tenant,
               max(ts) FILTER (WHERE event_type = 'tenant.erasure_requested') AS requested_at,
               max(ts) FILTER (WHERE event_type = 'tenant.erased') AS erased_at,
               count(*) FILTER (WHERE event_type = 'tenant.erasure_requested') AS requests
          FROM audit_events
         WHERE event_type IN ('tenant.erasure_requested', 'tenant.erased')
           AND ts >= $1 AND ts < $2
         GROUP BY tenant ORDER BY tenant
        """,
        start,
        end,
    )


async def run_retention(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return await _rows(conn, "SELECT tenant, retention_seconds FROM run_retention ORDER BY tenant")


async def maintenance_runs(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """When each scheduled purge and verification last ran, and whether it succeeded."""
    return await _rows(
        conn, "SELECT task, last_run_at, ok, summary FROM maintenance_runs ORDER BY task"
    )


async def runs_past_retention(conn: asyncpg.Connection, at: datetime, default_s: float) -> int:
    """Finished runs still stored although older than their tenant's retention at ``at``:
    what a working purge leaves at zero (give or take one purge interval)."""
    value = await conn.fetchval(
        """
        SELECT count(*) FROM runs r LEFT JOIN run_retention t ON t.tenant = r.tenant
         WHERE r.finished_at IS NOT NULL
           AND r.finished_at < $1::timestamptz
               - make_interval(secs => coalesce(t.retention_seconds, $2::float8))
        """,
        at,
        default_s,
    )
    return int(value or 0)
