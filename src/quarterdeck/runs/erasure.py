"""Deleting runs for good: a tenant's erasure and the run-data retention purge.

Only the run store calls this (it is the one owner of run state); the functions are here so the
store itself stays a thin owner. Both delete children first and count every table, so what an
erasure or purge removed can be audited as numbers without ever reading the content.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from quarterdeck.exceptions import InvalidState
from quarterdeck.runs import repository as repo
from quarterdeck.runs import workspace_repository as workspaces
from quarterdeck.runs.models import RunStatus
from quarterdeck.store.pool import Database


@dataclass(frozen=True)
class Erased:
    """What an erasure or purge deleted: the runs (their workspaces on disk go next, by id) and
    rows per table. Counts only, never content: this is what gets audited."""

    run_ids: tuple[str, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)
    by_tenant: dict[str, int] = field(default_factory=dict)
    """Runs deleted per tenant."""

    def __add__(self, other: Erased) -> Erased:
        def add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
            return {k: a.get(k, 0) + b.get(k, 0) for k in (*a, *(k for k in b if k not in a))}

        return Erased(
            self.run_ids + other.run_ids,
            add(self.counts, other.counts),
            add(self.by_tenant, other.by_tenant),
        )


PURGE_BATCH = 500
"""Runs deleted per transaction by a purge: short transactions, bounded lock lists."""


def still_running(tenant: str, run_ids: list[str]) -> InvalidState:
    return InvalidState(
        f"tenant {tenant} has {len(run_ids)} running run(s) ({', '.join(run_ids[:5])}"
        f"{', ...' if len(run_ids) > 5 else ''}): cancel them and wait until they end"
    )


async def erase_tenant(db: Database, tenant: str) -> Erased:
    async with db.transaction() as conn:
        runs = await repo.lock_tenant_runs(conn, tenant)
        running = [r for r, status, _ in runs if status == RunStatus.running.value]
        if running:
            raise still_running(tenant, running)
        jobs = [job for _, _, job in runs if job is not None]  # queued runs' (others: gone)
        if jobs:
            await repo.delete_jobs(conn, jobs)
        ids = [r for r, _, _ in runs]
        if not ids:
            # Blobs a purge spared for its grace period may outlive the tenant's last run.
            await workspaces.collect_blobs(conn, [tenant], grace=False)
            return Erased()
        counts = await delete_runs(conn, ids, [tenant], grace=False)
    return Erased(tuple(ids), counts, {tenant: len(ids)})


async def purge_finished(
    db: Database, before: datetime, tenant: str | None, exclude: Collection[str]
) -> Erased:
    """In batches of :data:`PURGE_BATCH`, one transaction each, until none is left."""
    total = Erased()
    while True:
        async with db.transaction() as conn:
            found = await repo.lock_finished_runs(
                conn, before, tenant, sorted(exclude), PURGE_BATCH
            )
            if found:
                ids = [run_id for run_id, _ in found]
                by_tenant: dict[str, int] = {}
                for _, owner in found:
                    by_tenant[owner] = by_tenant.get(owner, 0) + 1
                counts = await delete_runs(conn, ids, list(by_tenant), grace=True)
                total += Erased(tuple(ids), counts, by_tenant)
        if len(found) < PURGE_BATCH:
            return total


async def delete_runs(
    conn: asyncpg.Connection, ids: list[str], tenants: list[str], *, grace: bool
) -> dict[str, int]:
    """The runs with every child row, their workspace checkpoints included, then the tenants'
    blobs no run of theirs references any more (see ``collect_blobs`` for ``grace``)."""
    counts = await workspaces.delete_for_runs(conn, ids)
    counts.update(await repo.delete_runs(conn, ids))
    counts["workspace_blobs"] = await workspaces.collect_blobs(conn, tenants, grace=grace)
    return counts
