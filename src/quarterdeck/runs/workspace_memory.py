"""The in-memory twin of the workspace checkpoints in the run store (runs/workspace_store.py).

:class:`~.memory.InMemoryRunStore` keeps its workspace checkpoints here, under the same rules
as Postgres: fenced writes, blobs keyed by (tenant, sha256), erasure that drops a tenant's
blobs once no run of theirs references them. No grace period on collection: one process, no
concurrent writer to protect.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from quarterdeck.runs.models import RunStatus
from quarterdeck.runs.workspace_state import (
    Blob,
    Entry,
    WorkspaceDelta,
    WorkspaceState,
    fenced,
    state_of,
)


@dataclass
class InMemoryWorkspaces:
    """The same rules over dicts, for :class:`~.memory.InMemoryRunStore`."""

    blobs: dict[tuple[str, str], Blob] = field(default_factory=dict)
    rows: dict[str, list[tuple[int, Entry]]] = field(default_factory=dict)
    heads: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    """run id -> (tenant, last turn, bytes)."""

    def save(self, run_id: str, tenant: str, turn: int, delta: WorkspaceDelta | None) -> None:
        if delta is None:
            return
        for blob in delta.blobs:
            self.blobs.setdefault((tenant, blob.sha256), blob)
        self.rows.setdefault(run_id, []).extend((turn, e) for e in delta.entries)
        _, last, size = self.heads.get(run_id, (tenant, turn, 0))
        self.heads[run_id] = (tenant, max(last, turn), size + delta.bytes)

    def check(self, run_id: str, status: RunStatus, attempts: int, epoch: int) -> None:
        if status is not RunStatus.running or attempts != epoch:
            raise fenced(run_id, epoch)

    def state(self, run_id: str) -> WorkspaceState | None:
        head = self.heads.get(run_id)
        if head is None:
            return None
        rows = sorted(self.rows.get(run_id, []), key=lambda r: (r[0], r[1].path))
        return state_of(head[1], head[2], rows)

    def load(self, tenant: str, shas: list[str]) -> dict[str, bytes]:
        return {s: self.blobs[tenant, s].data for s in shas if (tenant, s) in self.blobs}

    def delete(self, run_ids: list[str], tenants: set[str]) -> dict[str, int]:
        """Drop the runs' manifests, then the tenants' blobs no remaining run references."""
        counts = {
            "run_workspace_files": sum(len(self.rows.pop(r, [])) for r in run_ids),
            "run_workspaces": sum(1 for r in run_ids if self.heads.pop(r, None) is not None),
        }
        referenced = {
            (self.heads[r][0], e.sha256)
            for r, rows in self.rows.items()
            if r in self.heads
            for _, e in rows
            if e.sha256
        }
        gone = [k for k in self.blobs if k[0] in tenants and k not in referenced]
        for key in gone:
            del self.blobs[key]
        counts["workspace_blobs"] = len(gone)
        return counts
