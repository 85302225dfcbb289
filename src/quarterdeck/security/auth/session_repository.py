"""All SQL for the web dashboard's sessions (``ui_sessions``, migration 0018)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: str
    """SHA-256 (hex) of the cookie's token: the token itself is never stored."""
    key_id: str
    csrf: str
    created_at: datetime
    expires_at: datetime


async def insert_session(
    conn: asyncpg.Connection, *, digest: str, key_id: str, csrf: str, expires_at: datetime
) -> SessionRow:
    row = await conn.fetchrow(
        "INSERT INTO ui_sessions (id, key_id, csrf, expires_at) VALUES ($1, $2, $3, $4)"
        " RETURNING id, key_id, csrf, created_at, expires_at",
        digest,
        key_id,
        csrf,
        expires_at,
    )
    assert row is not None
    return SessionRow(**dict(row))


async def get_session(conn: asyncpg.Connection, digest: str, now: datetime) -> SessionRow | None:
    row = await conn.fetchrow(
        "SELECT id, key_id, csrf, created_at, expires_at FROM ui_sessions"
        " WHERE id = $1 AND expires_at > $2",
        digest,
        now,
    )
    return SessionRow(**dict(row)) if row is not None else None


async def delete_session(conn: asyncpg.Connection, digest: str) -> bool:
    return (
        await conn.fetchval("DELETE FROM ui_sessions WHERE id = $1 RETURNING true", digest) or False
    )


async def delete_expired(conn: asyncpg.Connection, now: datetime) -> int:
    status = await conn.execute("DELETE FROM ui_sessions WHERE expires_at <= $1", now)
    return int(status.split()[-1])
