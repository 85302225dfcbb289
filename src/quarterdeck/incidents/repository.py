"""All SQL for incidents and their timeline (the notification outbox is in
:mod:`quarterdeck.incidents.outbox_repository`).

Functions take an open connection so the service chooses the transaction: an incident change, its
timeline entry and the notifications it calls for are committed together, so a crash can never
leave a page that was decided but not recorded (or recorded but not decided).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from quarterdeck.incidents.models import (
    Incident,
    IncidentEvent,
    IncidentFilter,
    ResolvedBy,
)
from quarterdeck.store.params import Params


async def get_incident(conn: asyncpg.Connection, incident_id: str) -> Incident | None:
    row = await conn.fetchrow("SELECT * FROM incidents WHERE id = $1", incident_id)
    return Incident.from_row(row) if row else None


async def find_unresolved(
    conn: asyncpg.Connection, dedup_key: str, *, lock: bool = False
) -> Incident | None:
    """The unresolved incident for ``dedup_key``; ``lock`` serialises concurrent updaters.

    ``FOR NO KEY UPDATE``, not ``FOR UPDATE``: the foreign keys of timeline and notification
    rows take ``KEY SHARE`` on the incident, and a full ``FOR UPDATE`` here deadlocks against a
    notifier recording a delivery for the same incident.
    """
    sql = "SELECT * FROM incidents WHERE dedup_key = $1 AND status <> 'resolved'"
    row = await conn.fetchrow(sql + (" FOR NO KEY UPDATE" if lock else ""), dedup_key)
    return Incident.from_row(row) if row else None


async def insert_incident(conn: asyncpg.Connection, values: dict[str, Any]) -> Incident | None:
    """Insert a new open incident; None when an unresolved one with the key appeared meanwhile."""
    row = await conn.fetchrow(
        """
        INSERT INTO incidents (id, service, severity, title, description, affected_components,
                               suggested_actions, details, source, dedup_key, fingerprint,
                               opened_at, last_seen_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, coalesce($12, now()), now())
        ON CONFLICT (dedup_key) WHERE status <> 'resolved' DO NOTHING
        RETURNING *
        """,
        values["id"],
        values["service"],
        values["severity"],
        values["title"],
        values["description"],
        values["affected_components"],
        values["suggested_actions"],
        values["details"],
        values["source"],
        values["dedup_key"],
        values["fingerprint"],
        values["opened_at"],
    )
    return Incident.from_row(row) if row else None


async def record_recurrence(
    conn: asyncpg.Connection, incident_id: str, values: dict[str, Any]
) -> Incident:
    row = await conn.fetchrow(
        """
        UPDATE incidents
           SET severity = $2, title = $3, description = $4, affected_components = $5,
               suggested_actions = $6, details = details || $7, fingerprint = coalesce($8,
               fingerprint), occurrences = occurrences + 1, last_seen_at = now()
         WHERE id = $1
        RETURNING *
        """,
        incident_id,
        values["severity"],
        values["title"],
        values["description"],
        values["affected_components"],
        values["suggested_actions"],
        values["details"],
        values["fingerprint"],
    )
    return Incident.from_row(row)


async def acknowledge(conn: asyncpg.Connection, incident_id: str, actor: str) -> Incident | None:
    row = await conn.fetchrow(
        """
        UPDATE incidents SET status = 'acknowledged', acknowledged_at = now(), acknowledged_by = $2
         WHERE id = $1 AND status = 'open'
        RETURNING *
        """,
        incident_id,
        actor,
    )
    return Incident.from_row(row) if row else None


async def resolve(
    conn: asyncpg.Connection,
    incident_id: str,
    by: ResolvedBy,
    note: str | None,
    at: datetime | None,
) -> Incident | None:
    """Resolve an unresolved incident; ``at`` (clamped to ``opened_at``) backdates the end."""
    row = await conn.fetchrow(
        """
        UPDATE incidents
           SET status = 'resolved', resolved_by = $2, resolution_note = $3,
               resolved_at = greatest(opened_at, least(coalesce($4, now()), now()))
         WHERE id = $1 AND status <> 'resolved'
        RETURNING *
        """,
        incident_id,
        by.value,
        note,
        at,
    )
    return Incident.from_row(row) if row else None


async def mark_escalated(
    conn: asyncpg.Connection, incident_id: str, now: datetime | None = None
) -> Incident | None:
    row = await conn.fetchrow(
        """
        UPDATE incidents SET escalated_at = coalesce($2, now())
         WHERE id = $1 AND status <> 'resolved' AND escalated_at IS NULL
        RETURNING *
        """,
        incident_id,
        now,
    )
    return Incident.from_row(row) if row else None


async def escalate_stale(
    conn: asyncpg.Connection, cutoff: datetime, now: datetime
) -> list[Incident]:
    """Mark every unacknowledged incident opened before ``cutoff`` as escalated, once.

    One UPDATE, so two replicas sweeping at the same moment escalate each incident exactly once.
    A maintenance window restarts the clock: an incident a window overlapped escalates only once
    the window has been over for the whole age (``ends_at <= cutoff``), because nobody was paged
    while it lasted and "unacknowledged for 4 hours" would otherwise fire the moment it ends.
    """
    rows = await conn.fetch(
        """
        UPDATE incidents i SET escalated_at = $2
         WHERE status = 'open' AND escalated_at IS NULL AND opened_at <= $1
           AND NOT EXISTS (SELECT 1 FROM maintenance_windows w
                            WHERE w.starts_at <= $2 AND w.ends_at > $1
                              AND w.ends_at > i.opened_at)
        RETURNING *
        """,
        cutoff,
        now,
    )
    return [Incident.from_row(r) for r in rows]


async def append_event(
    conn: asyncpg.Connection, incident_id: str, type_: str, data: dict[str, Any]
) -> None:
    await conn.execute(
        "INSERT INTO incident_events (incident_id, type, data) VALUES ($1, $2, $3)",
        incident_id,
        type_,
        data,
    )


async def list_events(conn: asyncpg.Connection, incident_id: str) -> list[IncidentEvent]:
    rows = await conn.fetch(
        "SELECT * FROM incident_events WHERE incident_id = $1 ORDER BY id", incident_id
    )
    return [IncidentEvent.model_validate(dict(r)) for r in rows]


async def list_incidents(conn: asyncpg.Connection, f: IncidentFilter) -> list[Incident]:
    clauses, arg = ["true"], Params()

    if f.status:
        clauses.append(f"status = ANY({arg([s.value for s in f.status])}::text[])")
    if f.severity:
        clauses.append(f"severity = ANY({arg([s.value for s in f.severity])}::text[])")
    if f.service:
        clauses.append(f"service = {arg(f.service)}")
    if f.cursor:
        clauses.append(f"id < {arg(f.cursor)}")
    sql = (
        f"SELECT * FROM incidents WHERE {' AND '.join(clauses)} "
        f"ORDER BY id DESC LIMIT {arg(f.limit)}"
    )
    return [Incident.from_row(r) for r in await conn.fetch(sql, *arg.values)]


async def open_stats(conn: asyncpg.Connection) -> tuple[dict[str, int], float]:
    """Unresolved incidents per severity, and the age in seconds of the oldest (0 if none)."""
    rows = await conn.fetch(
        "SELECT severity, count(*) AS n FROM incidents WHERE status <> 'resolved' GROUP BY 1"
    )
    oldest = await conn.fetchval(
        "SELECT coalesce(extract(epoch FROM now() - min(opened_at)), 0)::float8"
        " FROM incidents WHERE status <> 'resolved'"
    )
    return {r["severity"]: int(r["n"]) for r in rows}, float(oldest)


async def mttr(conn: asyncpg.Connection, since: datetime) -> float | None:
    value = await conn.fetchval(
        "SELECT avg(extract(epoch FROM resolved_at - opened_at))::float8 FROM incidents"
        " WHERE status = 'resolved' AND resolved_at >= $1",
        since,
    )
    return None if value is None else float(value)


async def auto_recovery_share(conn: asyncpg.Connection, since: datetime) -> float | None:
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE resolved_by = 'auto') AS auto, count(*) AS total"
        " FROM incidents WHERE status = 'resolved' AND resolved_at >= $1",
        since,
    )
    assert row is not None
    return None if row["total"] == 0 else row["auto"] / row["total"]


async def delete_mentioning_tenant(conn: asyncpg.Connection, tenant: str) -> int:
    """Tenant erasure: incidents raised about the tenant or its runs (security anomalies name
    both, and their descriptions quote what the agent did), with their timelines and outbox."""
    status = await conn.execute(
        "DELETE FROM incidents WHERE details->>'tenant' = $1 OR affected_components ? $2",
        tenant,
        f"tenant:{tenant}",
    )
    return int(status.split()[-1])
