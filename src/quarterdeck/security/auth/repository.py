"""All SQL for API keys. Functions take a connection so the service picks the transaction."""

from __future__ import annotations

from dataclasses import dataclass
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


async def note_key_use(
    conn: asyncpg.Connection, key_ids: list[str], used_at: list[datetime]
) -> None:
    """Record each key's latest use; never moves a key's time backwards (replicas race)."""
    await conn.execute(
        """
        UPDATE api_keys AS k
           SET last_used_at = greatest(k.last_used_at, u.at)
          FROM unnest($1::text[], $2::timestamptz[]) AS u(id, at)
         WHERE k.id = u.id
        """,
        key_ids,
        used_at,
    )


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


# -- run tokens (security/auth/run_tokens.py) ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class RunTokenRow:
    """A run's token row with what deciding about it needs from the run (one indexed join)."""

    attempt: int
    digest: bytes
    tenant: str
    key_id: str | None
    """``runs.key_id``: the key that submitted the run (None without auth)."""
    gateway_fallback: tuple[str, ...] | None
    """That key's gateway fallback config (None: no such key, or the deployment default)."""
    status: str
    attempts: int
    cancel_requested: bool


async def upsert_run_token(
    conn: asyncpg.Connection, run_id: str, attempt: int, digest: bytes, now: datetime
) -> bool:
    """Store the token digest of ``attempt``, replacing the run's earlier one, only while that
    attempt holds the run (``running`` at ``attempts = attempt``); False when it does not (or
    the run is gone). A newer attempt's token is never replaced by an older attempt's."""
    stored = await conn.fetchval(
        """
        INSERT INTO run_tokens (run_id, attempt, digest, created_at)
        SELECT id, $2, $3, $4 FROM runs
         WHERE id = $1 AND status = 'running' AND attempts = $2
        ON CONFLICT (run_id) DO UPDATE
           SET attempt = EXCLUDED.attempt, digest = EXCLUDED.digest,
               created_at = EXCLUDED.created_at
         WHERE run_tokens.attempt <= EXCLUDED.attempt
        RETURNING run_id
        """,
        run_id,
        attempt,
        digest,
        now,
    )
    return stored is not None


async def get_run_token(conn: asyncpg.Connection, run_id: str) -> RunTokenRow | None:
    """The run's token row joined to its run (and the run's submitting key); None when the run
    has no token (or no longer exists). Primary-key lookups only."""
    row = await conn.fetchrow(
        """
        SELECT t.attempt, t.digest, r.tenant, r.key_id, k.gateway_fallback,
               r.status, r.attempts, r.cancel_requested
          FROM run_tokens t
          JOIN runs r ON r.id = t.run_id
          LEFT JOIN api_keys k ON k.id = r.key_id
         WHERE t.run_id = $1
        """,
        run_id,
    )
    if row is None:
        return None
    return RunTokenRow(
        attempt=row["attempt"],
        digest=bytes(row["digest"]),
        tenant=row["tenant"],
        key_id=row["key_id"],
        gateway_fallback=(
            tuple(row["gateway_fallback"]) if row["gateway_fallback"] is not None else None
        ),
        status=row["status"],
        attempts=row["attempts"],
        cancel_requested=row["cancel_requested"],
    )
