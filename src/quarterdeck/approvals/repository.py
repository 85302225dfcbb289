"""All SQL for tool calls held for an operator's approval."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg


async def request(conn: asyncpg.Connection, values: dict[str, Any]) -> asyncpg.Record:
    """Insert a pending approval, or return the one that exists for this tool call.

    A resumed run re-issues the same tool call (same ``tool_use_id``): it waits on the original
    request instead of asking the operator twice.
    """
    row = await conn.fetchrow(
        """
        WITH ins AS (
            INSERT INTO run_approvals (id, run_id, tenant, tool_use_id, tool, input, rule_id,
                                       severity, reason, expires_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            ON CONFLICT (run_id, tool_use_id) DO NOTHING
            RETURNING *
        )
        SELECT * FROM ins
        UNION ALL
        SELECT * FROM run_approvals WHERE run_id = $2 AND tool_use_id = $4
        LIMIT 1
        """,
        values["id"],
        values["run_id"],
        values["tenant"],
        values["tool_use_id"],
        values["tool"],
        values["input"],
        values["rule_id"],
        values["severity"],
        values["reason"],
        values["expires_at"],
    )
    assert row is not None
    return row


async def get(
    conn: asyncpg.Connection, approval_id: str, tenant: str | None
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM run_approvals WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)",
        approval_id,
        tenant,
    )


async def listing(
    conn: asyncpg.Connection,
    tenant: str | None,
    status: str | None,
    limit: int,
    run_id: str | None = None,
) -> list[asyncpg.Record]:
    """Newest first; one run's (the unique ``(run_id, tool_use_id)`` index finds them)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM run_approvals WHERE ($1::text IS NULL OR tenant = $1)"
        " AND ($2::text IS NULL OR status = $2) AND ($4::text IS NULL OR run_id = $4)"
        " ORDER BY requested_at DESC LIMIT $3",
        tenant,
        status,
        limit,
        run_id,
    )
    return rows


async def decide(
    conn: asyncpg.Connection,
    approval_id: str,
    tenant: str | None,
    status: str,
    by: str,
    note: str | None,
) -> asyncpg.Record | None:
    """Approve or reject a pending request; None if it is not pending (or not visible)."""
    return await conn.fetchrow(
        """
        UPDATE run_approvals SET status = $3, decided_at = now(), decided_by = $4, note = $5
         WHERE id = $1 AND ($2::text IS NULL OR tenant = $2) AND status = 'pending'
        RETURNING *
        """,
        approval_id,
        tenant,
        status,
        by,
        note,
    )


async def expire(conn: asyncpg.Connection, approval_id: str, now: datetime) -> None:
    await conn.execute(
        "UPDATE run_approvals SET status = 'expired', decided_at = $2, decided_by = 'timeout'"
        " WHERE id = $1 AND status = 'pending'",
        approval_id,
        now,
    )


async def status_of(conn: asyncpg.Connection, approval_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT status, decided_by, note, expires_at FROM run_approvals WHERE id = $1",
        approval_id,
    )


async def delete_tenant(conn: asyncpg.Connection, tenant: str) -> int:
    """Tenant erasure: drop its held tool calls (their ``input`` is the agent's content)."""
    status = await conn.execute("DELETE FROM run_approvals WHERE tenant = $1", tenant)
    return int(status.split()[-1])
