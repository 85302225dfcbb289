"""All SQL for API keys. Functions take a connection so the service picks the transaction."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from quarterdeck.security.auth.models import KeyRecord
from quarterdeck.security.auth.permissions import Role


async def insert_key(
    conn: asyncpg.Connection,
    *,
    key_id: str,
    prefix: str,
    digest: bytes,
    name: str,
    tenant: str,
    role: Role,
    created_by: str | None,
    expires_at: datetime | None,
    gateway_fallback: list[str] | None = None,
) -> KeyRecord | None:
    """Insert a key; None when the id is taken (the caller draws another)."""
    row = await conn.fetchrow(
        """
        INSERT INTO api_keys
               (id, prefix, digest, name, tenant, role, created_by, expires_at, gateway_fallback)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT (id) DO NOTHING
        RETURNING *
        """,
        key_id,
        prefix,
        digest,
        name,
        tenant,
        role.value,
        created_by,
        expires_at,
        gateway_fallback,
    )
    return KeyRecord.from_row(row) if row else None


async def get_key(conn: asyncpg.Connection, key_id: str) -> KeyRecord | None:
    row = await conn.fetchrow("SELECT * FROM api_keys WHERE id = $1", key_id)
    return KeyRecord.from_row(row) if row else None


async def list_keys(
    conn: asyncpg.Connection,
    *,
    tenant: str | None,
    include_inactive: bool,
    now: datetime,
    limit: int,
) -> list[KeyRecord]:
    """Keys newest first; ``tenant`` None means every tenant. Inactive = revoked or expired."""
    rows = await conn.fetch(
        """
        SELECT * FROM api_keys
         WHERE ($1::text IS NULL OR tenant = $1)
           AND ($2 OR (revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $3)))
         ORDER BY created_at DESC, id
         LIMIT $4
        """,
        tenant,
        include_inactive,
        now,
        limit,
    )
    return [KeyRecord.from_row(r) for r in rows]


async def revoke_key(
    conn: asyncpg.Connection, key_id: str, revoked_by: str | None, now: datetime
) -> KeyRecord | None:
    """Revoke an unrevoked key; None when it does not exist or was already revoked."""
    row = await conn.fetchrow(
        """
        UPDATE api_keys SET revoked_at = $3, revoked_by = $2
         WHERE id = $1 AND revoked_at IS NULL
        RETURNING *
        """,
        key_id,
        revoked_by,
        now,
    )
    return KeyRecord.from_row(row) if row else None


async def set_gateway_fallback(
    conn: asyncpg.Connection, key_id: str, gateway_fallback: list[str] | None
) -> KeyRecord | None:
    """Change a key's gateway fallback config; None when there is no such key."""
    row = await conn.fetchrow(
        "UPDATE api_keys SET gateway_fallback = $2 WHERE id = $1 RETURNING *",
        key_id,
        gateway_fallback,
    )
    return KeyRecord.from_row(row) if row else None


async def revoke_created_by(
    conn: asyncpg.Connection, created_by: str, revoked_by: str, now: datetime
) -> list[KeyRecord]:
    """Revoke every unrevoked key made by ``created_by``; the keys revoked now."""
    rows = await conn.fetch(
        """
        UPDATE api_keys SET revoked_at = $3, revoked_by = $2
         WHERE created_by = $1 AND revoked_at IS NULL
        RETURNING *
        """,
        created_by,
        revoked_by,
        now,
    )
    return [KeyRecord.from_row(r) for r in rows]
