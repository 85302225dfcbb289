"""SQL of the health monitor: the health details it keeps on an incident.

Which runs count as stuck, and what recovering them changes, belong to the run store
(:class:`quarterdeck.runs.store.RunStore`): the monitor's check and its recovery both ask it, so
they agree, and a requeue here is the same operation as a worker's release.
"""

from __future__ import annotations

from typing import Any

import asyncpg


async def merge_incident_details(
    conn: asyncpg.Connection,
    incident_id: str,
    details: dict[str, Any],
    *,
    only_unresolved: bool = False,
) -> bool:
    """Add health bookkeeping (detection, recovery times) to an incident's ``details``.

    False when nothing was updated (``only_unresolved`` and someone resolved it meanwhile).
    """
    sql = "UPDATE incidents SET details = details || $2::jsonb WHERE id = $1"
    if only_unresolved:
        sql += " AND status <> 'resolved'"
    updated = await conn.fetchval(sql + " RETURNING true", incident_id, details)
    return bool(updated)
