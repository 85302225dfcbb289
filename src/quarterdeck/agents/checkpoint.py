"""Capturing a run's workspace into checkpoints, and rebuilding it from them on any replica.

:class:`WorkspaceCheckpoints` is the agent runtime's
:class:`~quarterdeck.runs.workspace_state.WorkspaceCheckpointer`. Its first capture is the base
(the tree as prepared from its source); every later one is what changed since the previous: a
stat walk (:func:`~quarterdeck.agents.changes.snapshot`, no file opened) finds the paths whose
(type, size, mtime, ctime, inode) moved, and only those are read and hashed, so an unchanged
10 MB tree costs a walk, not a read. New contents are zlib-compressed blobs named by the sha256
of their raw bytes; one this run has already carried is never sent again.

Every file is opened through directory descriptors with ``O_NOFOLLOW`` (the worker is root and
the tree is the agent's: a symlink swapped in must not make it read, say, ``/etc/shadow`` into a
checkpoint). Build caches (``__pycache__`` and friends) are left out: rebuilt by running code.

On resume :meth:`WorkspaceCheckpoints.restore` keeps the local tree if its diff baseline is the
checkpoint's base and its files hash to the checkpoint's current tree (a resume on the same
replica), else rebuilds both through :meth:`~quarterdeck.agents.workspace.Workspace.rebuild`:
the base files, a baseline commit of them, then the current files, all written in a directory
only root can enter and handed to the run's uid at the end (0700, as the sandbox expects).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import structlog

from quarterdeck.agents.changes import Stamp, snapshot
from quarterdeck.agents.sandbox import TMP_DIRNAME
from quarterdeck.agents.workspace import Workspace
from quarterdeck.runs.workspace_state import (
    ENTRY_OVERHEAD,
    Blob,
    BlobLoader,
    CheckpointTooLarge,
    Entry,
    RestoreFailed,
    WorkspaceDelta,
    WorkspaceState,
    cap_problem,
    digest,
)

log = structlog.get_logger(__name__)

CACHE_DIRS = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"})
LEVEL = 6
"""zlib level. Measured on the 10 MB benchmark workspace (benchmarks/checkpoint.py): level 1
compressed in 270 ms to 3.82 MB, level 6 in 400 ms to 3.48 MB; only the base pays the time."""
LOAD_BATCH = 256
"""Blobs fetched per query on restore."""
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def skipped(path: str) -> bool:
    """Build caches: byproducts of running code, regenerated, never worth a checkpoint."""
    parts = path.split("/")
    return any(p in CACHE_DIRS for p in parts) or path.endswith((".pyc", ".pyo"))


@dataclass
class _Walk:
    """Directory descriptors of one pass, opened component by component without following."""

    root: Path
    fds: dict[str, int] = field(default_factory=dict)

    def parent(self, path: str) -> tuple[int, str]:
        """(descriptor of ``path``'s directory, its last component)."""
        head, _, name = path.rpartition("/")
        fd = self.fds.get(head)
        if fd is None:
            if head == "":
                fd = os.open(self.root, _DIR_FLAGS)
            else:
                up, last = self.parent(head)
                fd = os.open(last, _DIR_FLAGS, dir_fd=up)
            self.fds[head] = fd
        return fd, name

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def _read(walk: _Walk, path: str) -> tuple[Entry, bytes | None] | None:
    """The entry at ``path`` and, for a file, its bytes; None if it vanished or is special."""
    try:
        dfd, name = walk.parent(path)
        info = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        mode = stat.S_IMODE(info.st_mode) & 0o777
        if stat.S_ISDIR(info.st_mode):
            return Entry(path, "dir", mode), None
        if stat.S_ISLNK(info.st_mode):
            target = os.readlink(name, dir_fd=dfd)
            target.encode()  # a target that is not UTF-8 cannot be stored as text
            return Entry(path, "symlink", target=target), None
        if not stat.S_ISREG(info.st_mode):
            return None  # FIFOs, sockets, devices: not content
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
    except OSError:  # gone, or a directory swapped for a symlink (ELOOP) under the walk
        return None  # the next capture sees what it became
    except UnicodeEncodeError:
        log.warning("checkpoint_skipped_link", path=path)
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    sha = hashlib.sha256(data).hexdigest()
    return Entry(path, "file", stat.S_IMODE(info.st_mode) & 0o777, sha, size=len(data)), data


class WorkspaceCheckpoints:
    """One run's :class:`~quarterdeck.runs.workspace_state.WorkspaceCheckpointer`."""

    def __init__(
        self, workspace: Workspace, *, turn_max_bytes: int, run_max_bytes: int, max_entries: int
    ) -> None:
        self.ws = workspace
        self.turn_max_bytes = turn_max_bytes
        self.run_max_bytes = run_max_bytes
        self.max_entries = max_entries
        self._known: dict[str, tuple[Stamp, Entry]] = {}
        self._stored: set[str] = set()
        self._bytes = 0
        self._started = False

    @property
    def started(self) -> bool:
        return self._started

    @property
    def stored_bytes(self) -> int:
        """Compressed bytes this run's checkpoints carried so far (what the run cap counts)."""
        return self._bytes

    async def capture(self) -> WorkspaceDelta:
        delta = await asyncio.to_thread(self._capture)
        if delta.full:
            await asyncio.to_thread(self._mark_base, {e.path: e for e in delta.entries})
        return delta

    # -- capture ------------------------------------------------------------------------------
    def _stamps(self) -> dict[str, Stamp]:
        snap = snapshot(self.ws.path, max_entries=self.max_entries, skip=frozenset({TMP_DIRNAME}))
        if not snap.complete:
            raise CheckpointTooLarge(
                f"the workspace has more than {self.max_entries} entries to checkpoint"
            )
        stamps = {}
        for key, stamp in snap.entries.items():
            path = key.rstrip("/")
            if skipped(path):
                continue
            try:
                path.encode()
            except UnicodeEncodeError:
                log.warning("checkpoint_skipped_name", run_id=self.ws.run_id, path=repr(path))
                continue
            stamps[path] = stamp
        return stamps

    def _capture(self) -> WorkspaceDelta:
        full = not self._started
        stamps = self._stamps()
        known: dict[str, tuple[Stamp, Entry]] = {}
        changed: list[Entry] = []
        blobs: dict[str, Blob] = {}
        size = 0
        walk = _Walk(self.ws.path)
        try:
            for path in sorted(stamps):
                stamp, before = stamps[path], self._known.get(path)
                if before is not None and before[0] == stamp:
                    known[path] = before
                    continue
                found = _read(walk, path)
                if found is None:
                    continue
                entry, data = found
                known[path] = (stamp, entry)
                if entry.same(before[1] if before else None):
                    continue
                changed.append(entry)
                size += len(path.encode()) + ENTRY_OVERHEAD
                sha = entry.sha256
                if data is not None and sha and sha not in self._stored and sha not in blobs:
                    blob = Blob(sha, len(data), zlib.compress(data, LEVEL))
                    blobs[sha] = blob
                    size += len(blob.data)
                problem = cap_problem(size, self._bytes, self.turn_max_bytes, self.run_max_bytes)
                if problem:
                    raise CheckpointTooLarge(problem)
        finally:
            walk.close()
        gone = [Entry(p, "deleted") for p in sorted(self._known) if p not in known]
        delta = WorkspaceDelta(tuple(changed + gone), tuple(blobs.values()), full)
        problem = cap_problem(delta.bytes, self._bytes, self.turn_max_bytes, self.run_max_bytes)
        if problem:
            raise CheckpointTooLarge(problem)
        self._known, self._started = known, True
        self._stored.update(blobs)
        self._bytes += delta.bytes
        return delta

    # -- restore ------------------------------------------------------------------------------
    @property
    def _base_mark(self) -> Path:
        return self.ws.git_dir / "quarterdeck-base"

    def _mark_base(self, base: dict[str, Entry]) -> None:
        self._base_mark.write_text(digest(base))

    def _local(self) -> dict[str, tuple[Stamp, Entry]] | None:
        """The local tree hashed in full, if its baseline is present; None otherwise."""
        if not self.ws.ready or not self._base_mark.exists():
            return None
        stamps = self._stamps()
        local: dict[str, tuple[Stamp, Entry]] = {}
        walk = _Walk(self.ws.path)
        try:
            for path in sorted(stamps):
                found = _read(walk, path)
                if found is not None:
                    local[path] = (stamps[path], found[0])
        finally:
            walk.close()
        return local

    async def restore(self, state: WorkspaceState, load: BlobLoader) -> bool:
        local = None
        if self.ws.ready and self._base_mark.exists():
            if self._base_mark.read_text().strip() == digest(state.base):
                local = await asyncio.to_thread(self._local)
        if local is not None and digest({p: e for p, (_, e) in local.items()}) == digest(
            state.current
        ):
            self._prime(local, state)
            return False
        blobs = await self._fetch(state, load)
        await self.ws.rebuild(
            lambda root: write_tree(root, state.base, blobs),
            lambda root: write_tree(root, state.current, blobs),
        )
        await asyncio.to_thread(self._mark_base, state.base)
        stamps = await asyncio.to_thread(self._stamps)
        known = {p: (stamps[p], e) for p, e in state.current.items() if p in stamps}
        if len(known) != len(state.current):
            missing = sorted(set(state.current) - set(known))[:5]
            raise RestoreFailed(f"the rebuilt workspace lacks {missing}")
        self._prime(known, state)
        log.info("workspace_restored", run_id=self.ws.run_id, turn=state.turn, files=len(known))
        return True

    def _prime(self, known: dict[str, tuple[Stamp, Entry]], state: WorkspaceState) -> None:
        self._known, self._started = known, True
        self._stored = set(state.blob_shas)
        self._bytes = state.bytes

    async def _fetch(self, state: WorkspaceState, load: BlobLoader) -> dict[str, bytes]:
        wanted = sorted(
            {e.sha256 for m in (state.base, state.current) for e in m.values() if e.sha256}
        )
        blobs: dict[str, bytes] = {}
        for i in range(0, len(wanted), LOAD_BATCH):
            blobs.update(await load(wanted[i : i + LOAD_BATCH]))
        missing = [s for s in wanted if s not in blobs]
        if missing:
            raise RestoreFailed(
                f"{len(missing)} workspace blob(s) of the checkpoint are missing "
                f"(first: {missing[0]})"
            )
        return blobs


def _safe(path: str) -> str:
    parts = PurePosixPath(path).parts
    if (
        not parts
        or path.startswith("/")
        or "\0" in path
        or any(p in ("", ".", "..") for p in parts)
        or "/".join(parts) != path
    ):
        raise RestoreFailed(f"refusing a checkpoint path that is not plainly inside: {path!r}")
    return path


def write_tree(root: Path, manifest: dict[str, Entry], blobs: dict[str, bytes]) -> None:
    """Write ``manifest`` into ``root`` (empty, reachable by root only): directories first,
    then files, then symlinks, so nothing is ever written through a link; every content is
    checked against its sha256."""
    order = {"dir": 0, "file": 1, "symlink": 2}
    entries = sorted(manifest.values(), key=lambda e: (order.get(e.kind, 3), e.path))
    links = {e.path for e in entries if e.kind == "symlink"}
    for e in entries:  # a real tree never has this; a manifest that does would write through
        inside = next((p for p in PurePosixPath(e.path).parents if str(p) in links), None)
        if inside is not None:
            raise RestoreFailed(f"{e.path!r} lies under the symlink {str(inside)!r}")
    dirs: list[Entry] = []
    for e in entries:
        full = root / _safe(e.path)
        if e.kind == "dir":
            full.mkdir(parents=True, exist_ok=True)
            dirs.append(e)
        elif e.kind == "file":
            data = zlib.decompress(blobs[e.sha256 or ""])
            if hashlib.sha256(data).hexdigest() != e.sha256:
                raise RestoreFailed(f"blob {e.sha256} does not hash to itself: {e.path}")
            full.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(full, flags, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fchmod(fd, e.mode)
            finally:
                os.close(fd)
        elif e.kind == "symlink":
            full.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(e.target or "", full)
    for e in reversed(dirs):  # deepest first; root ignores them while writing anyway
        os.chmod(root / e.path, e.mode)
