"""All SQL for the notification outbox: queued pages, their claims, maintenance-window holds and
per-channel send slots.

Kept apart from the incident SQL in :mod:`quarterdeck.incidents.repository` because the outbox
has its own life cycle and its own reader: the notifier claims, holds, releases and finishes rows
without ever touching an incident, while the incident service only enqueues (in the same
transaction as the change that calls for a page) and suppresses on resolve. Like the incident
SQL, every function takes an open connection so the caller chooses the transaction.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from quarterdeck.incidents.models import Notification, WindowSpan


async def enqueue_notifications(
    conn: asyncpg.Connection, incident_id: str, targets: list[tuple[str, str]]
) -> int:
    """Record (channel, kind) pairs to send; pairs already recorded are left alone."""
    if not targets:
        return 0
    result = await conn.execute(
        """
        INSERT INTO notifications (incident_id, channel, kind)
        SELECT $1, t.channel, t.kind FROM unnest($2::text[], $3::text[]) AS t(channel, kind)
        ON CONFLICT (incident_id, channel, kind) DO NOTHING
        """,
        incident_id,
        [c for c, _ in targets],
        [k for _, k in targets],
    )
    return int(result.rsplit(" ", 1)[-1])


async def paged_channels(conn: asyncpg.Connection, incident_id: str) -> set[str]:
    """Channels that were (or are about to be) told this incident needs attention."""
    rows = await conn.fetch(
        "SELECT DISTINCT channel FROM notifications WHERE incident_id = $1"
        " AND kind IN ('trigger', 'escalation')",
        incident_id,
    )
    return {r["channel"] for r in rows}


CLAIM_SQL = """
WITH c AS (
    SELECT id FROM notifications
     WHERE ($1::text IS NULL OR incident_id = $1)
       AND (status = 'pending'
            OR (status = 'failed' AND attempts < $3)
            OR (status = 'sending' AND claimed_at < now() - make_interval(secs => $2)))
     ORDER BY id
     LIMIT $4
     FOR UPDATE SKIP LOCKED
)
UPDATE notifications n SET status = 'sending', claimed_at = now()
  FROM c WHERE n.id = c.id
RETURNING n.*
"""
"""Parameters: incident id or NULL, lease seconds, max attempts, limit. Its three states imply
the predicate of ``notifications_claimable`` (migration 0028), so the claim walks claimable rows
only, never the suppressed history."""


async def claim_notifications(
    conn: asyncpg.Connection,
    incident_id: str | None,
    *,
    lease_s: float,
    max_attempts: int,
    limit: int = 100,
) -> list[Notification]:
    """Claim undelivered notifications for sending, oldest first.

    Claimable: pending rows, failed rows still under ``max_attempts`` in total, and rows stuck in
    'sending' longer than ``lease_s`` (their sender died). ``SKIP LOCKED`` lets concurrent senders
    split the work instead of both taking the same row.
    """
    rows = await conn.fetch(
        CLAIM_SQL,
        incident_id,
        lease_s,
        max_attempts,
        limit,
    )
    return sorted((Notification.model_validate(dict(r)) for r in rows), key=lambda n: n.id)


async def finish_notification(
    conn: asyncpg.Connection, notification_id: int, *, ok: bool, attempts: int, error: str | None
) -> Notification:
    row = await conn.fetchrow(
        """
        UPDATE notifications
           SET status = CASE WHEN $2 THEN 'sent' ELSE 'failed' END,
               attempts = attempts + $3, last_error = $4,
               sent_at = CASE WHEN $2 THEN now() ELSE sent_at END
         WHERE id = $1
        RETURNING *
        """,
        notification_id,
        ok,
        attempts,
        error,
    )
    assert row is not None, notification_id
    return Notification.model_validate(dict(row))


# --- maintenance windows: held and suppressed notifications ------------------------------------
async def windows_covering(conn: asyncpg.Connection, at: datetime) -> list[WindowSpan]:
    """Maintenance windows covering ``at`` (every window is platform-wide)."""
    rows = await conn.fetch(
        "SELECT id, starts_at, ends_at FROM maintenance_windows"
        " WHERE starts_at <= $1 AND ends_at > $1",
        at,
    )
    return [WindowSpan.model_validate(dict(r)) for r in rows]


async def silence_candidates(
    conn: asyncpg.Connection,
    incident_id: str | None,
    *,
    statuses: list[str],
    failed_below: int,
    skip_locked: bool,
    limit: int = 500,
) -> list[tuple[Notification, bool]]:
    """Unsent rows a window could hold or suppress, locked, each with whether its channel's page
    (trigger or escalation) already went out or is going out (``sent`` or ``sending``).

    ``failed_below`` also takes failed rows still under that many attempts (0: none). The sweep
    skips locked rows (another sender has them); a resolve waits for them instead, so a row
    another transaction is holding right now is seen as held, not missed.
    """
    rows = await conn.fetch(
        f"""
        SELECT n.*, EXISTS (
                   SELECT 1 FROM notifications p
                    WHERE p.incident_id = n.incident_id AND p.channel = n.channel
                      AND p.kind IN ('trigger', 'escalation') AND p.status IN ('sent', 'sending')
               ) AS channel_paged
          FROM notifications n
         WHERE ($1::text IS NULL OR n.incident_id = $1)
           AND (n.status = ANY($2::text[]) OR (n.status = 'failed' AND n.attempts < $3))
         ORDER BY n.id
         LIMIT $4
         FOR UPDATE OF n{" SKIP LOCKED" if skip_locked else ""}
        """,
        incident_id,
        statuses,
        failed_below,
        limit,
    )
    out = []
    for r in rows:
        values = dict(r)
        paged = bool(values.pop("channel_paged"))
        out.append((Notification.model_validate(values), paged))
    return out


async def silence(
    conn: asyncpg.Connection, ids: list[int], status: str, window: WindowSpan
) -> list[Notification]:
    """Mark unsent rows ``held`` (not claimable until released) or ``suppressed`` (final), naming
    ``window``; a suppressed row that was held keeps the window that held it."""
    rows = await conn.fetch(
        """
        UPDATE notifications SET status = $2,
               held_by = CASE WHEN $2 = 'held' THEN $3 ELSE coalesce(held_by, $3) END,
               held_until = CASE WHEN $2 = 'held' THEN $4 ELSE coalesce(held_until, $4) END
         WHERE id = ANY($1::bigint[]) AND status IN ('pending', 'held', 'failed')
        RETURNING *
        """,
        ids,
        status,
        window.id,
        window.ends_at,
    )
    return sorted((Notification.model_validate(dict(r)) for r in rows), key=lambda n: n.id)


async def release_held(conn: asyncpg.Connection, incident_id: str | None) -> list[Notification]:
    """Put held rows back to pending (no window covers now); ``held_by`` stays as history."""
    rows = await conn.fetch(
        "UPDATE notifications SET status = 'pending'"
        " WHERE status = 'held' AND ($1::text IS NULL OR incident_id = $1) RETURNING *",
        incident_id,
    )
    return sorted((Notification.model_validate(dict(r)) for r in rows), key=lambda n: n.id)


async def list_notifications(conn: asyncpg.Connection, incident_id: str) -> list[Notification]:
    rows = await conn.fetch(
        "SELECT * FROM notifications WHERE incident_id = $1 ORDER BY id", incident_id
    )
    return [Notification.model_validate(dict(r)) for r in rows]


async def reserve_slot(
    conn: asyncpg.Connection, channel: str, interval_s: float, max_wait_s: float
) -> float | None:
    """Reserve the channel's next send slot: seconds to wait before sending, or None when the
    next free slot is more than ``max_wait_s`` away (nothing is reserved then).

    The row lock makes the schedule global: N replicas sweeping the outbox still send at the
    configured rate between them.
    """
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO notification_slots (channel, next_at) VALUES ($1, now())"
            " ON CONFLICT (channel) DO NOTHING",
            channel,
        )
        wait = await conn.fetchval(
            "SELECT greatest(extract(epoch FROM next_at - clock_timestamp()), 0)::float8"
            " FROM notification_slots WHERE channel = $1 FOR UPDATE",
            channel,
        )
        if wait > max_wait_s:
            return None
        await conn.execute(
            "UPDATE notification_slots"
            " SET next_at = greatest(next_at, clock_timestamp()) + make_interval(secs => $2)"
            " WHERE channel = $1",
            channel,
            interval_s,
        )
    return float(wait)
