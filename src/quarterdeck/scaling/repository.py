"""All SQL of the autoscaler: its stored decisions (table ``scaling_decisions``, migration 0020).

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

__all__ = ["insert_decision", "latest_decision", "list_decisions", "purge_decisions"]


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
