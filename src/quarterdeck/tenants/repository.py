"""SQL of the tables this folder owns: per-tenant run retention and the maintenance record.

The rows an erasure deletes belong to other domains and are deleted by their repositories
(runs through the run store); only the tenant's retention override is deleted here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg


async def retention(conn: asyncpg.Connection, tenant: str) -> float | None:
    value = await conn.fetchval(
        "SELECT retention_seconds FROM run_retention WHERE tenant = $1", tenant
    )
    return None if value is None else float(value)


async def retentions(conn: asyncpg.Connection) -> dict[str, float]:
    rows = await conn.fetch("SELECT tenant, retention_seconds FROM run_retention ORDER BY tenant")
    return {r["tenant"]: float(r["retention_seconds"]) for r in rows}


async def set_retention(conn: asyncpg.Connection, tenant: str, seconds: float) -> None:
    await conn.execute(
        "INSERT INTO run_retention (tenant, retention_seconds) VALUES ($1, $2)"
        " ON CONFLICT (tenant) DO UPDATE SET retention_seconds = $2, updated_at = now()",
        tenant,
        seconds,
    )


async def delete_retention(conn: asyncpg.Connection, tenant: str) -> int:
    status = await conn.execute("DELETE FROM run_retention WHERE tenant = $1", tenant)
    return int(status.split()[-1])


async def last_run(conn: asyncpg.Connection, task: str) -> datetime | None:
    value = await conn.fetchval("SELECT last_run_at FROM maintenance_runs WHERE task = $1", task)
    return value if isinstance(value, datetime) else None


async def maintenance_run(conn: asyncpg.Connection, task: str) -> asyncpg.Record | None:
    """When ``task`` last ran, whether it went well, and its summary (None: never)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT last_run_at, ok, summary FROM maintenance_runs WHERE task = $1", task
    )
    return row


async def record_run(
    conn: asyncpg.Connection, task: str, at: datetime, ok: bool, summary: dict[str, Any]
) -> None:
    await conn.execute(
        "INSERT INTO maintenance_runs (task, last_run_at, ok, summary) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (task) DO UPDATE SET last_run_at = $2, ok = $3, summary = $4",
        task,
        at,
        ok,
        summary,
    )


async def try_lock(conn: asyncpg.Connection, key: int) -> bool:
    """A session advisory lock, or False at once: one replica runs a maintenance task."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", key))


async def unlock(conn: asyncpg.Connection, key: int) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1)", key)
