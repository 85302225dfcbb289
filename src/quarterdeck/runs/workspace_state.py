"""What a run's workspace checkpoint is, as data: manifests, deltas, blobs and the size caps.

A run's workspace lives on one worker's disk, but a resumed run may land on any replica. So the
run store keeps the workspace in Postgres too: the tree as it was prepared from its source (the
*base*, which is also the diff baseline) and, per turn, what that turn's tools changed (a
*delta*), written in the same transaction as the turn's tool results. File contents are blobs,
compressed and content-addressed by the sha256 of their raw bytes, so an unchanged file costs
nothing per turn and the same content is stored once per tenant.

This module is the contract between the executor (which only passes these values along), the
agent runtime (which captures and restores files, :mod:`quarterdeck.agents.checkpoint`) and the
run store (which keeps them). It knows nothing of files or SQL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from quarterdeck.exceptions import Fenced, QuarterdeckError

Kind = Literal["file", "dir", "symlink", "deleted"]
CODEC = "zlib"
"""How blob data is compressed (``zstandard`` is not a dependency; zlib is in the stdlib)."""
BASE_TURN = 0
"""The turn the base manifest is stored under (deltas use the turn whose tools made them)."""
ENTRY_OVERHEAD = 64
"""What the caps charge per manifest row beyond its path, so a delta of many tiny changes still
counts. Nominal: the database spends more per row with its indexes (see benchmarks/checkpoint.py)."""


class CheckpointTooLarge(QuarterdeckError):
    """The workspace change of one turn, or the run's checkpoints in all, passed the cap.

    The run fails with ``error_type`` ``workspace_checkpoint_too_large`` rather than going on
    without a checkpoint: a resume on another replica would silently lose the work.
    """

    status = 413
    type_slug = "workspace-checkpoint-too-large"
    title = "Workspace checkpoint too large"
    error_type = "workspace_checkpoint_too_large"


class RestoreFailed(QuarterdeckError):
    """The checkpointed workspace could not be rebuilt (a blob missing, a bad manifest)."""

    type_slug = "workspace-restore-failed"
    title = "Workspace restore failed"
    error_type = "workspace_restore_failed"


@dataclass(frozen=True)
class Entry:
    """One path of a manifest. ``sha256`` names a file's blob; ``target`` is a symlink's text;
    ``mode`` is the permission bits (0o777 at most: set-id bits are never restored)."""

    path: str
    kind: Kind
    mode: int = 0
    sha256: str | None = None
    target: str | None = None
    size: int = 0

    def same(self, other: Entry | None) -> bool:
        return other is not None and (self.kind, self.mode, self.sha256, self.target) == (
            other.kind,
            other.mode,
            other.sha256,
            other.target,
        )


@dataclass(frozen=True)
class Blob:
    """A file's content: ``sha256`` of the raw bytes, ``size`` raw, ``data`` compressed."""

    sha256: str
    size: int
    data: bytes


@dataclass(frozen=True)
class WorkspaceDelta:
    """What one capture found. ``full``: the whole tree (the base), else the changes since the
    previous capture, deletions as ``deleted`` entries. ``blobs`` are the contents this run has
    not carried before (the store deduplicates across runs of a tenant on top)."""

    entries: tuple[Entry, ...] = ()
    blobs: tuple[Blob, ...] = ()
    full: bool = False

    @property
    def bytes(self) -> int:
        """What the caps count: compressed content plus manifest rows."""
        return sum(len(b.data) for b in self.blobs) + sum(
            ENTRY_OVERHEAD + len(e.path.encode()) + len((e.target or "").encode())
            for e in self.entries
        )


@dataclass(frozen=True)
class WorkspaceState:
    """A run's checkpointed workspace: the base manifest, the tree after the last delta
    (``current``, without deletions), the last turn captured and the bytes stored so far."""

    base: dict[str, Entry]
    current: dict[str, Entry]
    turn: int
    bytes: int
    blob_shas: frozenset[str] = field(default_factory=frozenset)
    """Every blob the run's manifests name (so a resumed capture does not send them again)."""


BlobLoader = Callable[[list[str]], Awaitable[dict[str, bytes]]]
"""sha256s -> compressed data, as stored; a missing one is absent from the result."""


class WorkspaceCheckpointer(Protocol):
    """Captures and restores one run's workspace; the agent runtime implements it, the executor
    calls it (and never touches a file), the run store keeps what it returns."""

    @property
    def started(self) -> bool:
        """True once the base was captured or a checkpoint restored: captures are deltas."""

    async def capture(self) -> WorkspaceDelta:
        """The base on the first call, then what changed since the previous capture.

        Raises :class:`CheckpointTooLarge` past the caps (before anything is recorded)."""

    async def restore(self, state: WorkspaceState, load: BlobLoader) -> bool:
        """Make the local tree and its diff baseline the checkpoint's; True if anything had to
        be rebuilt (a fresh replica), False if the local tree already was it."""


def apply(
    base: Iterable[Entry], deltas: Iterable[Iterable[Entry]]
) -> tuple[dict[str, Entry], dict[str, Entry]]:
    """(base manifest, current tree) from the base and the deltas in turn order."""
    start = {e.path: e for e in base}
    current = dict(start)
    for delta in deltas:
        for e in delta:
            if e.kind == "deleted":
                current.pop(e.path, None)
            else:
                current[e.path] = e
    return start, current


def digest(manifest: Mapping[str, Entry]) -> str:
    """A stable fingerprint of a manifest (paths, kinds, modes, contents)."""
    h = hashlib.sha256()
    for path in sorted(manifest):
        e = manifest[path]
        h.update(f"{path}\0{e.kind}\0{e.mode:o}\0{e.sha256 or ''}\0{e.target or ''}\n".encode())
    return h.hexdigest()


def cap_problem(delta_bytes: int, run_bytes: int, turn_max: int, run_max: int) -> str | None:
    """Why a delta of ``delta_bytes`` may not be stored after ``run_bytes`` already were, or
    None. Pure, so the rule is tested on its own; the capture calls it as it compresses."""
    if delta_bytes > turn_max:
        return (
            f"this turn changed the workspace by more than "
            f"QUARTERDECK_WORKSPACE_CHECKPOINT_TURN_MAX_BYTES={turn_max} compressed bytes "
            f"({delta_bytes} so far)"
        )
    if run_bytes + delta_bytes > run_max:
        return (
            f"the run's workspace checkpoints would pass "
            f"QUARTERDECK_WORKSPACE_CHECKPOINT_MAX_BYTES={run_max} compressed bytes "
            f"({run_bytes} stored, {delta_bytes} more this turn)"
        )
    return None


def fenced(run_id: str, epoch: int) -> Fenced:
    return Fenced(
        f"run {run_id}: attempt {epoch} no longer holds it (it was picked up again, or ended); "
        "its workspace checkpoint and tool results are not recorded"
    )


def state_of(turn: int, size: int, rows: list[tuple[int, Entry]]) -> WorkspaceState:
    """Fold manifest rows (in turn order) into the base and the current tree."""
    base = [e for t, e in rows if t == BASE_TURN]
    by_turn: dict[int, list[Entry]] = {}
    for t, e in rows:
        if t != BASE_TURN:
            by_turn.setdefault(t, []).append(e)
    start, current = apply(base, (by_turn[t] for t in sorted(by_turn)))
    shas = frozenset(e.sha256 for _, e in rows if e.sha256)
    return WorkspaceState(start, current, turn, size, shas)
