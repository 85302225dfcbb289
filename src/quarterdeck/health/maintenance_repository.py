"""SQL of maintenance windows (scheduled downtime): insert, list by overlap, delete.

Functions over a connection, like every repository; the rules (what a valid window is) are in
:mod:`.maintenance`.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

__all__ = ["delete_window", "insert_window", "list_windows"]

_COLUMNS = "id, starts_at, ends_at, reason, created_by, created_at"


async def insert_window(
    conn: asyncpg.Connection,
    window_id: str,
    starts_at: datetime,
    ends_at: datetime,
    reason: str,
    created_by: str | None,
    created_at: datetime,
) -> asyncpg.Record:
    row = await conn.fetchrow(
        f"INSERT INTO maintenance_windows ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) "
        f"RETURNING {_COLUMNS}",
        window_id,
        starts_at,
        ends_at,
        reason,
        created_by,
        created_at,
    )
    assert row is not None
    return row


async def list_windows(
    conn: asyncpg.Connection, start: datetime | None, end: datetime | None, limit: int
) -> list[asyncpg.Record]:
    """Windows overlapping ``[start, end)`` (an open bound: unbounded), earliest first."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {_COLUMNS} FROM maintenance_windows "
        "WHERE ($1::timestamptz IS NULL OR ends_at > $1) "
        "AND ($2::timestamptz IS NULL OR starts_at < $2) "
        "ORDER BY starts_at, id LIMIT $3",
        start,
        end,
        limit,
    )
    return rows


async def delete_window(conn: asyncpg.Connection, window_id: str) -> asyncpg.Record | None:
    """The deleted window, or None when there was none with that id."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"DELETE FROM maintenance_windows WHERE id = $1 RETURNING {_COLUMNS}", window_id
    )
    return row
