"""All SQL of workspace checkpoints: blobs, per-turn manifests, per-run totals.

Only the run store reaches this module (through :mod:`.workspace_store`; import-linter forbids
everyone else), because a workspace delta is written in the transaction that records its turn's
tool results and is fenced like every other write of a run attempt. Functions take an open
connection so the store chooses the transaction.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from quarterdeck.runs.workspace_state import CODEC, Blob, Entry

BLOB_GRACE = "5 minutes"
"""An unreferenced blob younger than this survives a purge's collection: a concurrent save of
a live run may be about to reference it (its rows are not visible to the purge yet)."""


async def held_tenant(conn: asyncpg.Connection, run_id: str, epoch: int) -> str | None:
    """The run's tenant if attempt ``epoch`` still holds it (``running`` at that attempt), with
    the row share-locked, so a new claim waits until this transaction ends; else None."""
    tenant: str | None = await conn.fetchval(
        "SELECT tenant FROM runs WHERE id = $1 AND status = 'running' AND attempts = $2 FOR SHARE",
        run_id,
        epoch,
    )
    return tenant


async def insert_events(
    conn: asyncpg.Connection, run_id: str, events: list[tuple[str, int | None, dict[str, Any]]]
) -> None:
    if events:
        await conn.executemany(
            "INSERT INTO run_events (run_id, type, turn, data) VALUES ($1, $2, $3, $4)",
            [(run_id, t, turn, d) for t, turn, d in events],
        )


async def save_blobs(conn: asyncpg.Connection, tenant: str, blobs: list[Blob]) -> None:
    """Insert contents not stored yet for ``tenant``; touch those that are (``used_at``), which
    row-locks them so a concurrent collection cannot delete one this transaction references."""
    if not blobs:
        return
    await conn.execute(
        """
        INSERT INTO workspace_blobs (tenant, sha256, size, codec, data)
        SELECT $1, * FROM unnest($2::text[], $3::bigint[], $4::text[], $5::bytea[])
        ON CONFLICT (tenant, sha256) DO UPDATE SET used_at = clock_timestamp()
        """,
        tenant,
        [b.sha256 for b in blobs],
        [b.size for b in blobs],
        [CODEC] * len(blobs),
        [b.data for b in blobs],
    )


async def save_entries(
    conn: asyncpg.Connection, run_id: str, tenant: str, turn: int, entries: list[Entry], size: int
) -> None:
    """Record one capture's manifest rows and add its bytes to the run's total."""
    if entries:
        await conn.execute(
            """
            INSERT INTO run_workspace_files (run_id, tenant, turn, path, kind, mode, sha256,
                                             target, size)
            SELECT $1, $2, $3, * FROM unnest($4::text[], $5::text[], $6::int[], $7::text[],
                                             $8::text[], $9::bigint[])
            """,
            run_id,
            tenant,
            turn,
            [e.path for e in entries],
            [e.kind for e in entries],
            [e.mode for e in entries],
            [e.sha256 for e in entries],
            [e.target for e in entries],
            [e.size for e in entries],
        )
    await conn.execute(
        """
        INSERT INTO run_workspaces (run_id, tenant, turn, bytes) VALUES ($1, $2, $3, $4)
        ON CONFLICT (run_id) DO UPDATE
            SET turn = greatest(run_workspaces.turn, excluded.turn),
                bytes = run_workspaces.bytes + excluded.bytes, updated_at = now()
        """,
        run_id,
        tenant,
        turn,
        size,
    )


async def load_state(
    conn: asyncpg.Connection, run_id: str
) -> tuple[int, int, list[tuple[int, Entry]]] | None:
    """(last turn, bytes, every manifest row as (turn, entry) in turn order), or None."""
    head = await conn.fetchrow("SELECT turn, bytes FROM run_workspaces WHERE run_id = $1", run_id)
    if head is None:
        return None
    rows = await conn.fetch(
        "SELECT turn, path, kind, mode, sha256, target, size FROM run_workspace_files"
        " WHERE run_id = $1 ORDER BY turn, path",
        run_id,
    )
    entries = [
        (
            int(r["turn"]),
            Entry(r["path"], r["kind"], r["mode"], r["sha256"], r["target"], int(r["size"])),
        )
        for r in rows
    ]
    return int(head["turn"]), int(head["bytes"]), entries


async def load_blobs(conn: asyncpg.Connection, run_id: str, shas: list[str]) -> dict[str, bytes]:
    """Compressed contents of ``shas`` for the run's tenant (never another tenant's)."""
    rows = await conn.fetch(
        """
        SELECT b.sha256, b.data FROM workspace_blobs b
         WHERE b.tenant = (SELECT tenant FROM runs WHERE id = $1) AND b.sha256 = ANY($2::text[])
        """,
        run_id,
        shas,
    )
    return {r["sha256"]: bytes(r["data"]) for r in rows}


async def delete_for_runs(conn: asyncpg.Connection, run_ids: list[str]) -> dict[str, int]:
    """Delete the runs' manifests and totals (before the runs themselves); rows per table."""
    counts: dict[str, int] = {}
    for table in ("run_workspace_files", "run_workspaces"):
        status = await conn.execute(f"DELETE FROM {table} WHERE run_id = ANY($1::text[])", run_ids)
        counts[table] = int(status.split()[-1])
    return counts


async def collect_blobs(conn: asyncpg.Connection, tenants: list[str], *, grace: bool) -> int:
    """Delete the tenants' blobs no run of theirs references any more; returns how many.

    ``grace`` spares blobs touched in the last :data:`BLOB_GRACE` (a purge, while the tenant's
    other runs go on); an erasure, with no run of the tenant left, takes them all.
    """
    if not tenants:
        return 0
    status = await conn.execute(
        f"""
        DELETE FROM workspace_blobs b
         WHERE b.tenant = ANY($1::text[])
           AND NOT EXISTS (SELECT 1 FROM run_workspace_files f
                            WHERE f.tenant = b.tenant AND f.sha256 = b.sha256)
           AND (NOT $2 OR b.used_at < clock_timestamp() - interval '{BLOB_GRACE}')
        """,
        sorted(set(tenants)),
        grace,
    )
    return int(status.split()[-1])
