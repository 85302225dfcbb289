"""Workspace checkpoints in the run store: the logic behind its thin methods, both twins.

:class:`~.store.PostgresRunStore` and :class:`~.memory.InMemoryRunStore` delegate here so they
stay thin owners. The rules both follow:

* A delta is stored in the transaction that records its turn's tool results (``tool_call`` and
  ``tool_results`` events): a resumed run either reuses both or re-runs the tools on the tree as
  of the previous turn, never one without the other.
* Every write is fenced: accepted only while attempt ``epoch`` holds the run (``running`` at that
  attempt), else :class:`~quarterdeck.exceptions.Fenced` and nothing is written.
* Blobs are keyed by (tenant, sha256): deduplicated across turns and runs of a tenant, never
  across tenants.
"""

from __future__ import annotations

from typing import Any

from quarterdeck.runs import workspace_repository as repo
from quarterdeck.runs.workspace_state import (
    BASE_TURN,
    WorkspaceDelta,
    WorkspaceState,
    fenced,
    state_of,
)
from quarterdeck.store.pool import Database

Events = list[tuple[str, int | None, dict[str, Any]]]


# -- Postgres ---------------------------------------------------------------------------------
async def save_base(db: Database, run_id: str, base: WorkspaceDelta, epoch: int) -> None:
    async with db.transaction() as conn:
        tenant = await repo.held_tenant(conn, run_id, epoch)
        if tenant is None:
            raise fenced(run_id, epoch)
        await repo.save_blobs(conn, tenant, list(base.blobs))
        await repo.save_entries(conn, run_id, tenant, BASE_TURN, list(base.entries), base.bytes)


async def save_tool_results(
    db: Database,
    run_id: str,
    turn: int,
    events: Events,
    delta: WorkspaceDelta | None,
    epoch: int,
) -> None:
    async with db.transaction() as conn:
        tenant = await repo.held_tenant(conn, run_id, epoch)
        if tenant is None:
            raise fenced(run_id, epoch)
        if delta is not None:
            await repo.save_blobs(conn, tenant, list(delta.blobs))
            await repo.save_entries(conn, run_id, tenant, turn, list(delta.entries), delta.bytes)
        await repo.insert_events(conn, run_id, events)


async def load_state(db: Database, run_id: str) -> WorkspaceState | None:
    async with db.acquire() as conn:
        found = await repo.load_state(conn, run_id)
    return None if found is None else state_of(*found)


async def load_blobs(db: Database, run_id: str, shas: list[str]) -> dict[str, bytes]:
    async with db.acquire() as conn:
        return await repo.load_blobs(conn, run_id, shas)
