"""All SQL of the autoscaler: its stored decisions (table ``scaling_decisions``, migration 0020)
and the scale-up requests handed to its leader (table ``scaling_requests``, migration 0027).

Functions take an open connection (the pool's, whose ``jsonb`` codec is JSON) so the caller
chooses it. Pages are keyset pages on the primary key, newest first: ``id`` grows with time for
the one writer (the leader), and a keyset page stays correct while new decisions arrive.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime

import asyncpg

from quarterdeck.scaling.policy import FactorValue

__all__ = [
    "expire_requests",
    "insert_decision",
    "insert_request",
    "latest_decision",
    "list_decisions",
    "purge_decisions",
    "purge_requests",
    "settle_request",
    "take_requests",
]


def _finite(factors: Mapping[str, FactorValue]) -> dict[str, FactorValue]:
    """``jsonb`` has no NaN or infinity; such a factor is stored as null (unknown)."""
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in factors.items()
    }


async def insert_decision(
    conn: asyncpg.Connection,
    *,
    at: datetime,
    policy: str,
    mode: str,
    target: str,
    current: int,
    desired: int,
    applied: int | None,
    direction: str,
    reason: str,
    factors: Mapping[str, FactorValue],
    error: str | None,
) -> int:
    """Store one decision; returns its id."""
    new_id = await conn.fetchval(
        """
        INSERT INTO scaling_decisions
               (at, policy, mode, target, current, desired, applied, direction, reason, factors,
                error)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        RETURNING id
        """,
        at,
        policy,
        mode,
        target,
        current,
        desired,
        applied,
        direction,
        reason,
        _finite(factors),
        error,
    )
    return int(new_id)


async def list_decisions(
    conn: asyncpg.Connection,
    *,
    limit: int,
    before_id: int | None = None,
    direction: str | None = None,
) -> list[asyncpg.Record]:
    """Up to ``limit`` decisions older than ``before_id`` (all when None), newest first."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT * FROM scaling_decisions
         WHERE ($1::bigint IS NULL OR id < $1) AND ($2::text IS NULL OR direction = $2)
         ORDER BY id DESC
         LIMIT $3
        """,
        before_id,
        direction,
        limit,
    )
    return rows


async def latest_decision(conn: asyncpg.Connection) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM scaling_decisions ORDER BY id DESC LIMIT 1"
    )
    return row


async def purge_decisions(conn: asyncpg.Connection, older_than: datetime) -> int:
    """Delete decisions made before ``older_than``; returns how many."""
    status: str = await conn.execute("DELETE FROM scaling_decisions WHERE at < $1", older_than)
    return int(status.rsplit(" ", 1)[-1])


# -- scale-up requests handed to the scaler's leader (scaling/handover.py) ------------------------
async def insert_request(conn: asyncpg.Connection, *, at: datetime, reason: str) -> int:
    """Store one pending request; returns its id."""
    new_id = await conn.fetchval(
        "INSERT INTO scaling_requests (requested_at, reason) VALUES ($1, $2) RETURNING id",
        at,
        reason,
    )
    return int(new_id)


async def expire_requests(
    conn: asyncpg.Connection, *, before: datetime, at: datetime, answer: str
) -> list[int]:
    """Mark pending requests made before ``before`` expired; returns their ids."""
    rows = await conn.fetch(
        """
        UPDATE scaling_requests
           SET status = 'expired', settled_at = $2, answer = $3
         WHERE status = 'pending' AND requested_at < $1
        RETURNING id
        """,
        before,
        at,
        answer,
    )
    return sorted(int(r["id"]) for r in rows)


async def take_requests(
    conn: asyncpg.Connection, *, at: datetime, limit: int
) -> list[asyncpg.Record]:
    """Mark up to ``limit`` pending requests taken and return them, oldest first.

    ``SKIP LOCKED``: two processes taking at once (a leadership hand-over in flight) each get
    different rows, so every request is acted on by one of them only.
    """
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        UPDATE scaling_requests
           SET status = 'taken', settled_at = $1
         WHERE id IN (SELECT id FROM scaling_requests
                       WHERE status = 'pending'
                       ORDER BY id
                       LIMIT $2
                       FOR UPDATE SKIP LOCKED)
        RETURNING id, requested_at, reason
        """,
        at,
        limit,
    )
    return sorted(rows, key=lambda r: int(r["id"]))


async def settle_request(conn: asyncpg.Connection, request_id: int, answer: str) -> None:
    """Keep the leader's answer with a request it took."""
    await conn.execute("UPDATE scaling_requests SET answer = $2 WHERE id = $1", request_id, answer)


async def purge_requests(conn: asyncpg.Connection, older_than: datetime) -> int:
    """Delete requests made before ``older_than`` (taken, expired or, long stale, pending)."""
    status: str = await conn.execute(
        "DELETE FROM scaling_requests WHERE requested_at < $1", older_than
    )
    return int(status.rsplit(" ", 1)[-1])
