"""All SQL of the audit log.

Functions take an open connection so callers choose the transaction. Driver errors become
:class:`StoreError` here (connection loss stays :class:`Unavailable`, which the pool raises).

:data:`PREFIX_SQL` is the one place Postgres rebuilds record bytes from stored columns; it must
produce exactly what :func:`chain.prefix` does in Python. ``to_json`` escapes strings by the same
rule as the canonical encoder. Event types and severities are quoted as they are: the writer only
accepts ones that need no escaping, and an edited one that would need it no longer hashes right.
``extract(epoch ...)`` is exact numeric arithmetic since Postgres 14. A test checks that the two
agree on hostile strings.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from quarterdeck.exceptions import StoreError
from quarterdeck.security.audit.checkpoints import Anchor, Checkpoint
from quarterdeck.security.audit.models import EventFilter
from quarterdeck.store.params import Params
from quarterdeck.store.pool import CONNECTION_ERRORS

EVENT_COLUMNS = (
    "tenant",
    "seq",
    "ts",
    "event_type",
    "actor",
    "session_id",
    "severity",
    "body",
    "hash",
)
PREFIX_SQL = """
    '{"body":'::bytea || e.body || convert_to(
        ',"head":{"actor":' || coalesce(to_json(e.actor)::text, 'null')
        || ',"event_type":"' || e.event_type
        || '","session_id":' || coalesce(to_json(e.session_id)::text, 'null')
        || ',"severity":' || coalesce('"' || e.severity || '"', 'null')
        || ',"timestamp_us":' || (extract(epoch FROM e.ts) * 1000000)::int8
        || '}', 'UTF8')"""
_ROW_SQL = "e.tenant, e.seq, e.ts, e.event_type, e.actor, e.session_id, e.severity, e.body, e.hash"


@contextlib.contextmanager
def errors(what: str) -> Iterator[None]:
    try:
        yield
    except CONNECTION_ERRORS:
        raise
    except asyncpg.PostgresError as exc:
        raise StoreError(f"audit log: {what} failed: {exc}") from exc


# --- appending -----------------------------------------------------------------------------
async def lock_heads(conn: asyncpg.Connection, tenants: list[str]) -> dict[str, asyncpg.Record]:
    """Lock the chain heads of ``tenants`` (created when new), always in tenant order."""
    with errors("locking chain heads"):
        await conn.execute(
            "INSERT INTO audit_chain_heads (tenant) SELECT unnest($1::text[]) "
            "ON CONFLICT (tenant) DO NOTHING",
            tenants,
        )
        rows = await conn.fetch(
            "SELECT tenant, seq, hash, key_id FROM audit_chain_heads "
            "WHERE tenant = ANY($1::text[]) ORDER BY tenant FOR UPDATE",
            tenants,
        )
    return {r["tenant"]: r for r in rows}


async def insert_events(conn: asyncpg.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    """One binary ``COPY``; ``rows`` may be a generator, consumed as the data is sent."""
    with errors("writing audit events"):
        await conn.copy_records_to_table("audit_events", records=rows, columns=EVENT_COLUMNS)


async def update_heads(
    conn: asyncpg.Connection, heads: Sequence[tuple[str, int, bytes, int | None]]
) -> None:
    with errors("advancing chain heads"):
        await conn.execute(
            """
            UPDATE audit_chain_heads h
               SET seq = u.seq, hash = u.hash, key_id = u.key_id, updated_at = now()
              FROM unnest($1::text[], $2::bigint[], $3::bytea[], $4::int[])
                   AS u(tenant, seq, hash, key_id)
             WHERE h.tenant = u.tenant
            """,
            [h[0] for h in heads],
            [h[1] for h in heads],
            [h[2] for h in heads],
            [h[3] for h in heads],
        )


# --- data keys -----------------------------------------------------------------------------
async def wrapped_key(conn: asyncpg.Connection, tenant: str, key_id: int) -> bytes | None:
    with errors("reading a data key"):
        value = await conn.fetchval(
            "SELECT wrapped FROM audit_data_keys WHERE tenant = $1 AND key_id = $2",
            tenant,
            key_id,
        )
    return bytes(value) if value is not None else None


async def next_key_id(conn: asyncpg.Connection, tenant: str) -> int:
    with errors("numbering a data key"):
        value = await conn.fetchval(
            "SELECT coalesce(max(key_id), 0) + 1 FROM audit_data_keys WHERE tenant = $1", tenant
        )
    return int(value)


async def insert_key(
    conn: asyncpg.Connection, tenant: str, key_id: int, wrapped: bytes, master_fp: str
) -> None:
    with errors("storing a data key"):
        await conn.execute(
            "INSERT INTO audit_data_keys (tenant, key_id, wrapped, master_fingerprint) "
            "VALUES ($1, $2, $3, $4)",
            tenant,
            key_id,
            wrapped,
            master_fp,
        )


async def wrapped_keys(
    conn: asyncpg.Connection, pairs: set[tuple[str, int]]
) -> dict[tuple[str, int], bytes | None]:
    """Wrapped data keys by (tenant, key_id); None for a shredded (or never created) key."""
    if not pairs:
        return {}
    tenants, ids = zip(*sorted(pairs), strict=True)
    with errors("reading data keys"):
        rows = await conn.fetch(
            "SELECT k.tenant, k.key_id, k.wrapped FROM audit_data_keys k "
            "JOIN unnest($1::text[], $2::int[]) AS p(tenant, key_id) "
            "ON k.tenant = p.tenant AND k.key_id = p.key_id",
            list(tenants),
            list(ids),
        )
    found: dict[tuple[str, int], bytes | None] = dict.fromkeys(pairs)
    for r in rows:
        found[(r["tenant"], r["key_id"])] = bytes(r["wrapped"]) if r["wrapped"] else None
    return found


async def shred(conn: asyncpg.Connection, tenant: str) -> int:
    """Destroy every data key of ``tenant``; the head forgets its current key. Returns count."""
    with errors("shredding data keys"):
        await conn.execute("UPDATE audit_chain_heads SET key_id = NULL WHERE tenant = $1", tenant)
        status = await conn.execute(
            "UPDATE audit_data_keys SET wrapped = NULL, shredded_at = now() "
            "WHERE tenant = $1 AND wrapped IS NOT NULL",
            tenant,
        )
    return int(status.split()[-1])


async def vacuum_keys(conn: asyncpg.Connection) -> None:
    """Rewrite the key table so shredded keys do not linger in dead tuples (outside a txn)."""
    with errors("vacuuming data keys"):
        await conn.execute("VACUUM (FULL) audit_data_keys")


# --- reading the chain ---------------------------------------------------------------------
async def tenants(conn: asyncpg.Connection) -> list[str]:
    """Every tenant with any audit state, even one whose head row was deleted."""
    with errors("listing audit tenants"):
        rows = await conn.fetch(
            """
            WITH RECURSIVE ev(tenant) AS (
                SELECT min(tenant) FROM audit_events
                UNION ALL
                SELECT (SELECT min(tenant) FROM audit_events WHERE tenant > ev.tenant)
                  FROM ev WHERE ev.tenant IS NOT NULL
            ), cp(tenant) AS (
                SELECT min(tenant) FROM audit_checkpoints
                UNION ALL
                SELECT (SELECT min(tenant) FROM audit_checkpoints WHERE tenant > cp.tenant)
                  FROM cp WHERE cp.tenant IS NOT NULL
            )
            SELECT tenant FROM ev WHERE tenant IS NOT NULL
            UNION SELECT tenant FROM cp WHERE tenant IS NOT NULL
            UNION SELECT tenant FROM audit_chain_heads
            UNION SELECT tenant FROM audit_anchors
            ORDER BY 1
            """
        )
    return [r["tenant"] for r in rows]


async def chain_rows(
    conn: asyncpg.Connection, tenant: str, after_seq: int, upto_seq: int
) -> list[asyncpg.Record]:
    """``(seq, hash, prefix)`` of the events ``after_seq < seq <= upto_seq``, in seq order."""
    with errors("reading the audit chain"):
        return await conn.fetch(
            f"SELECT e.seq, e.hash, {PREFIX_SQL} AS pre FROM audit_events e "
            "WHERE e.tenant = $1 AND e.seq > $2 AND e.seq <= $3 ORDER BY e.seq",
            tenant,
            after_seq,
            upto_seq,
        )


async def max_seq(conn: asyncpg.Connection, tenant: str) -> int:
    with errors("reading the chain length"):
        value = await conn.fetchval("SELECT max(seq) FROM audit_events WHERE tenant = $1", tenant)
    return int(value or 0)


async def head(conn: asyncpg.Connection, tenant: str) -> asyncpg.Record | None:
    with errors("reading a chain head"):
        return await conn.fetchrow(
            "SELECT tenant, seq, hash, key_id FROM audit_chain_heads WHERE tenant = $1", tenant
        )


async def checkpoints(
    conn: asyncpg.Connection, tenant: str | None, after_id: int = 0, limit: int | None = None
) -> list[Checkpoint]:
    with errors("reading checkpoints"):
        rows = await conn.fetch(
            "SELECT * FROM audit_checkpoints WHERE ($1::text IS NULL OR tenant = $1) "
            "AND id > $2 ORDER BY id LIMIT $3",
            tenant,
            after_id,
            limit,
        )
    return [Checkpoint.from_row(r) for r in rows]


async def latest_checkpoint(
    conn: asyncpg.Connection, tenant: str, *, sealing: bool = False
) -> Checkpoint | None:
    with errors("reading the latest checkpoint"):
        row = await conn.fetchrow(
            "SELECT * FROM audit_checkpoints WHERE tenant = $1 AND (NOT $2 OR count > 0) "
            "ORDER BY id DESC LIMIT 1",
            tenant,
            sealing,
        )
    return Checkpoint.from_row(row) if row else None


async def insert_checkpoint(conn: asyncpg.Connection, cp: Checkpoint) -> int:
    """Store a signed checkpoint; an idle one replaces the tenant's previous idle one."""
    with errors("writing a checkpoint"):
        new_id: int = await conn.fetchval(
            "INSERT INTO audit_checkpoints (tenant, seq, head_hash, count, created_at, "
            "prev_digest, key_fingerprint, signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
            "RETURNING id",
            cp.tenant,
            cp.seq,
            cp.head_hash,
            cp.count,
            cp.created_at,
            cp.prev,
            cp.key_fingerprint,
            cp.signature,
        )
        if cp.count == 0:
            await conn.execute(
                "DELETE FROM audit_checkpoints WHERE tenant = $1 AND count = 0 AND id < $2",
                cp.tenant,
                new_id,
            )
    return new_id


async def try_lock(conn: asyncpg.Connection, key: int) -> bool:
    """A transaction-level advisory lock, or False at once when another process holds it."""
    with errors("taking an advisory lock"):
        return bool(await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", key))


# --- anchors, retention and purge ----------------------------------------------------------
async def latest_anchor(conn: asyncpg.Connection, tenant: str) -> Anchor | None:
    with errors("reading the purge anchor"):
        row = await conn.fetchrow(
            "SELECT * FROM audit_anchors WHERE tenant = $1 ORDER BY seq DESC LIMIT 1", tenant
        )
    return Anchor.from_row(row) if row else None


async def purge_candidate(
    conn: asyncpg.Connection, tenant: str, cutoff: datetime, after_seq: int
) -> Checkpoint | None:
    """The newest checkpoint written before ``cutoff`` that lies beyond the current anchor."""
    with errors("finding a purge point"):
        row = await conn.fetchrow(
            "SELECT * FROM audit_checkpoints WHERE tenant = $1 AND created_at <= $2 "
            "AND seq > $3 ORDER BY created_at DESC, id DESC LIMIT 1",
            tenant,
            cutoff,
            after_seq,
        )
    return Checkpoint.from_row(row) if row else None


async def purge(conn: asyncpg.Connection, anchor: Anchor) -> int:
    """Delete the sealed segment behind ``anchor`` and store the anchor. Returns events deleted."""
    with errors("purging audit events"):
        await conn.execute("SET LOCAL quarterdeck.audit_purge = 'on'")
        status = await conn.execute(
            "DELETE FROM audit_events WHERE tenant = $1 AND seq <= $2", anchor.tenant, anchor.seq
        )
        await conn.execute(
            "DELETE FROM audit_checkpoints WHERE tenant = $1 AND id < $2",
            anchor.tenant,
            anchor.checkpoint_id,
        )
        await conn.execute(
            "INSERT INTO audit_anchors (tenant, seq, head_hash, checkpoint_id, purged, "
            "created_at, key_fingerprint, signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            anchor.tenant,
            anchor.seq,
            anchor.head_hash,
            anchor.checkpoint_id,
            anchor.purged,
            anchor.created_at,
            anchor.key_fingerprint,
            anchor.signature,
        )
        await conn.execute(
            "DELETE FROM audit_anchors WHERE tenant = $1 AND seq < $2", anchor.tenant, anchor.seq
        )
    return int(status.split()[-1])


async def retention(conn: asyncpg.Connection, tenant: str) -> float | None:
    with errors("reading retention"):
        value = await conn.fetchval(
            "SELECT retention_seconds FROM audit_retention WHERE tenant = $1", tenant
        )
    return float(value) if value is not None else None


async def set_retention(conn: asyncpg.Connection, tenant: str, seconds: float) -> None:
    with errors("storing retention"):
        await conn.execute(
            "INSERT INTO audit_retention (tenant, retention_seconds) VALUES ($1, $2) "
            "ON CONFLICT (tenant) DO UPDATE SET retention_seconds = excluded.retention_seconds, "
            "updated_at = now()",
            tenant,
            seconds,
        )


# --- search and export ---------------------------------------------------------------------
async def search(
    conn: asyncpg.Connection, f: EventFilter, after: tuple[datetime, str, int] | None
) -> list[asyncpg.Record]:
    """Newest first by (ts, tenant, seq); ``after`` is the last row of the previous page."""
    clauses: list[str] = []
    arg = Params()

    if f.tenant is not None:
        clauses.append(f"e.tenant = {arg(f.tenant)}")
    if f.event_types:
        clauses.append(f"e.event_type = ANY({arg(f.event_types)}::text[])")
    if f.actor is not None:
        clauses.append(f"e.actor = {arg(f.actor)}")
    if f.session_id is not None:
        clauses.append(f"e.session_id = {arg(f.session_id)}")
    if f.since is not None:
        clauses.append(f"e.ts >= {arg(f.since)}")
    if f.until is not None:
        clauses.append(f"e.ts < {arg(f.until)}")
    if f.anomalies:
        clauses.append("e.severity IS NOT NULL")
    if f.severities:
        clauses.append(f"e.severity = ANY({arg(f.severities)}::text[])")
    if after is not None:
        clauses.append(
            f"(e.ts, e.tenant, e.seq) < ({arg(after[0])}, {arg(after[1])}, {arg(after[2])})"
        )
    where = " AND ".join(clauses) or "true"
    with errors("searching audit events"):
        return await conn.fetch(
            f"SELECT {_ROW_SQL} FROM audit_events e WHERE {where} "
            f"ORDER BY e.ts DESC, e.tenant DESC, e.seq DESC LIMIT {arg(f.limit + 1)}",
            *arg.values,
        )


async def export_rows(
    conn: asyncpg.Connection,
    tenant: str | None,
    since: datetime | None,
    until: datetime | None,
    after: tuple[str, int],
    limit: int,
) -> list[asyncpg.Record]:
    """Events in chain order with the record prefix and the previous hash, for JSON Lines."""
    with errors("exporting audit events"):
        return await conn.fetch(
            f"""
            SELECT {_ROW_SQL}, {PREFIX_SQL} AS pre,
                   coalesce(
                       (SELECT p.hash FROM audit_events p
                         WHERE p.tenant = e.tenant AND p.seq = e.seq - 1),
                       (SELECT a.head_hash FROM audit_anchors a
                         WHERE a.tenant = e.tenant AND a.seq = e.seq - 1),
                       '\\x{"00" * 32}'::bytea) AS prev
              FROM audit_events e
             WHERE ($1::text IS NULL OR e.tenant = $1)
               AND ($2::timestamptz IS NULL OR e.ts >= $2)
               AND ($3::timestamptz IS NULL OR e.ts < $3)
               AND (e.tenant, e.seq) > ($4, $5)
             ORDER BY e.tenant, e.seq
             LIMIT $6
            """,
            tenant,
            since,
            until,
            after[0],
            after[1],
            limit,
        )
