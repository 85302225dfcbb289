"""SQL over ``gateway_calls``: the batched insert, the paged list and the usage aggregates.

Calls arrive at up to hundreds per second, so the recorder writes them with ``COPY`` (one round
trip per batch, no per-row statement); a batch that might already be there (its commit was
lost with the connection) goes through an ``ON CONFLICT DO NOTHING`` insert instead, so a retry
never duplicates a call nor fails forever on its own earlier success. Listing pages by the
``(created_at, id)`` pair, encoded in an opaque cursor, so a page boundary is stable while new
calls keep arriving.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from quarterdeck.exceptions import ValidationFailed
from quarterdeck.gateway.models import (
    CallFilter,
    CallPage,
    CallView,
    GatewayCall,
    UsageGroup,
    UsageRow,
)
from quarterdeck.store.params import Params

COLUMNS = (
    "id",
    "created_at",
    "tenant",
    "key_id",
    "run_id",
    "session_id",
    "agent_id",
    "model",
    "served_model",
    "stream",
    "status",
    "error_type",
    "input_tokens",
    "output_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "cache_read_tokens",
    "web_search_requests",
    "cost_usd",
    "cost_estimated",
    "ttfb_ms",
    "duration_ms",
    "upstream_request_id",
    "client_disconnected",
)

# SQL of each usage grouping; the API's names, the table's columns.
GROUP_SQL: dict[str, str] = {
    "tenant": "tenant",
    "key": "key_id",
    "model": "model",
    "session": "session_id",
    "day": "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
}


def record(call: GatewayCall) -> tuple[Any, ...]:
    """One call as a row of ``COLUMNS``.

    Cache writes the upstream did not split by TTL are stored as 5-minute writes, which is how
    they are priced (:meth:`~quarterdeck.providers.pricing.ModelPrice.cost`).
    """
    u = call.usage
    unsplit = max(
        0, u.cache_creation_input_tokens - u.cache_creation_5m_tokens - u.cache_creation_1h_tokens
    )
    return (
        call.id,
        call.created_at,
        call.tenant,
        call.key_id,
        call.run_id,
        call.session_id,
        call.agent_id,
        call.model,
        call.served_model,
        call.stream,
        call.status,
        call.error_type,
        u.input_tokens,
        u.output_tokens,
        u.cache_creation_5m_tokens + unsplit,
        u.cache_creation_1h_tokens,
        u.cache_read_input_tokens,
        call.web_search_requests,
        call.cost_usd,
        call.cost_estimated,
        call.ttfb_ms,
        call.duration_ms,
        call.upstream_request_id,
        call.client_disconnected,
    )


async def insert_calls(
    conn: asyncpg.Connection, calls: Sequence[GatewayCall], *, idempotent: bool = False
) -> None:
    """Write ``calls``; with ``idempotent``, calls already stored (same id) are skipped."""
    if not calls:
        return
    rows = [record(c) for c in calls]
    if not idempotent:
        await conn.copy_records_to_table("gateway_calls", records=rows, columns=COLUMNS)
        return
    placeholders = ", ".join(f"${i}" for i in range(1, len(COLUMNS) + 1))
    await conn.executemany(
        f"INSERT INTO gateway_calls ({', '.join(COLUMNS)}) VALUES ({placeholders}) "
        "ON CONFLICT (id) DO NOTHING",
        rows,
    )


def encode_cursor(created_at: datetime, call_id: str) -> str:
    raw = f"{created_at.isoformat()}|{call_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The ``(created_at, id)`` a cursor continues after. Raises ValidationFailed (422)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, call_id = raw.split("|", 1)
        created_at = datetime.fromisoformat(stamp)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise ValidationFailed(
            "cursor is malformed", errors=[{"field": "cursor", "message": "malformed"}]
        ) from exc
    if created_at.tzinfo is None or not call_id:
        raise ValidationFailed(
            "cursor is malformed", errors=[{"field": "cursor", "message": "malformed"}]
        )
    return created_at, call_id


def _view(row: asyncpg.Record) -> CallView:
    return CallView.model_validate(dict(row))


async def list_calls(conn: asyncpg.Connection, f: CallFilter, tenant: str | None) -> CallPage:
    """Calls matching ``f``, newest first; ``tenant`` (the caller's reach) None means all."""
    arg = Params()

    clauses = ["true"]
    if tenant is not None:
        clauses.append(f"tenant = {arg(tenant)}")
    for name, column in (
        ("tenant", "tenant"),
        ("key_id", "key_id"),
        ("run_id", "run_id"),
        ("session_id", "session_id"),
        ("model", "model"),
        ("status", "status"),
    ):
        value = getattr(f, name)
        if value is not None:
            clauses.append(f"{column} = {arg(value)}")
    if f.since is not None:
        clauses.append(f"created_at >= {arg(f.since)}")
    if f.until is not None:
        clauses.append(f"created_at < {arg(f.until)}")
    if f.cursor:
        created_at, call_id = decode_cursor(f.cursor)
        clauses.append(f"(created_at, id) < ({arg(created_at)}, {arg(call_id)})")
    sql = (
        f"SELECT {', '.join(COLUMNS)} FROM gateway_calls "
        f"WHERE {' AND '.join(clauses)} "
        f"ORDER BY created_at DESC, id DESC LIMIT {arg(f.limit + 1)}"
    )
    rows = await conn.fetch(sql, *arg.values)
    items = [_view(r) for r in rows[: f.limit]]
    next_cursor = None
    if len(rows) > f.limit:
        last = items[-1]
        next_cursor = encode_cursor(last.created_at, last.id)
    return CallPage(items=items, next_cursor=next_cursor)


_TOTALS = """count(*) AS calls,
       count(*) FILTER (WHERE status >= 400 OR error_type IS NOT NULL) AS errors,
       coalesce(sum(input_tokens), 0) AS input_tokens,
       coalesce(sum(output_tokens), 0) AS output_tokens,
       coalesce(sum(cache_write_5m_tokens + cache_write_1h_tokens), 0) AS cache_write_tokens,
       coalesce(sum(cache_read_tokens), 0) AS cache_read_tokens,
       coalesce(sum(web_search_requests), 0) AS web_search_requests,
       coalesce(sum(cost_usd), 0) AS cost_usd,
       count(*) FILTER (WHERE cost_estimated) AS cost_estimated_calls"""
"""The totals of a set of gateway calls: one ``UsageRow``'s fields."""


async def usage(
    conn: asyncpg.Connection,
    since: datetime,
    until: datetime,
    group_by: Sequence[UsageGroup],
    tenant: str | None,
) -> list[UsageRow]:
    """Totals of the calls in ``[since, until)``, one row per group (one row for no grouping)."""
    args: list[Any] = [since, until]
    where = "created_at >= $1 AND created_at < $2"
    if tenant is not None:
        args.append(tenant)
        where += " AND tenant = $3"
    groups = [f"{GROUP_SQL[g]} AS g{i}" for i, g in enumerate(group_by)]
    positions = ", ".join(str(i + 1) for i in range(len(group_by)))
    sql = f"""
        SELECT {"".join(g + ", " for g in groups)}
               {_TOTALS}
          FROM gateway_calls
         WHERE {where}
        {f"GROUP BY {positions} ORDER BY {positions}" if group_by else ""}
    """
    out = []
    for row in await conn.fetch(sql, *args):  # (no grouping: one row, zeros when no calls)
        out.append(
            UsageRow(
                group={g: row[f"g{i}"] for i, g in enumerate(group_by)},
                calls=row["calls"],
                errors=row["errors"],
                input_tokens=row["input_tokens"],
                output_tokens=row["output_tokens"],
                cache_write_tokens=row["cache_write_tokens"],
                cache_read_tokens=row["cache_read_tokens"],
                web_search_requests=row["web_search_requests"],
                cost_usd=row["cost_usd"],
                cost_estimated_calls=row["cost_estimated_calls"],
            )
        )
    return out


async def run_usage(conn: asyncpg.Connection, run_id: str) -> UsageRow:
    """Totals of every call attributed to one run (the ``gateway_calls_run`` index)."""
    row = await conn.fetchrow(f"SELECT {_TOTALS} FROM gateway_calls WHERE run_id = $1", run_id)
    assert row is not None  # an aggregate without GROUP BY always answers one row
    return UsageRow(group={}, **{k: row[k] for k in row.keys()})


async def delete_tenant(conn: asyncpg.Connection, tenant: str) -> dict[str, int]:
    """Tenant erasure: its recorded calls (client-chosen session and agent ids, request ids) and
    budget holds. No prompt text is stored here, but the ids may identify people; the tenant's
    gateway spend goes with them."""
    counts = {}
    for table in ("gateway_calls", "budget_holds"):
        status = await conn.execute(
            f"DELETE FROM {table} WHERE tenant = $1",
            tenant,
        )
        counts[table] = int(status.split()[-1])
    return counts
