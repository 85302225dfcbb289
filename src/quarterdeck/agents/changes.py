"""What a command changed in a workspace, and how big the workspace is, from two stat walks.

``run_command`` runs arbitrary code, so the file tools' own bookkeeping cannot say what it
touched. A walk of the tree before and after (``lstat`` only: no file is opened, no symlink
followed) can: a path that appeared was created, one that vanished was deleted, and one whose
type, size, mtime, ctime or inode moved was changed. ``ctime`` cannot be set from user space,
so a command that restores a file's mtime (``touch -r``) is still caught. Unlike the git
baseline, the walk ignores ``.gitignore`` (which the agent controls), so nothing can be hidden
from the audit by ignoring it.

The same walk sums the bytes the tree holds (each inode once; ``max(size, allocated)`` so a
sparse file counts at its full length, which is what a diff or a copy of it would cost) and
counts entries, for ``QUARTERDECK_WORKSPACE_MAX_BYTES`` / ``_MAX_FILES``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AUDIT_PATHS = 200
"""Paths listed per command in the audit record; the rest are counted."""

Stamp = tuple[int, int, int, int, int]
"""(file type, size, mtime_ns, ctime_ns, inode) of one entry."""


@dataclass
class Snapshot:
    """One walk of a tree: each entry's stamp (directories end in ``/``), its total bytes and
    entry count. ``complete`` is False when the walk stopped at ``max_entries``."""

    entries: dict[str, Stamp] = field(default_factory=dict)
    bytes: int = 0
    files: int = 0
    complete: bool = True
    unreadable: list[str] = field(default_factory=list)


def snapshot(root: Path, *, max_entries: int, skip: frozenset[str] = frozenset()) -> Snapshot:
    """Walk ``root`` without following symlinks. Top-level names in ``skip`` are counted for
    size but left out of the entries (the sandbox's own scratch directory)."""
    snap = Snapshot()
    seen: set[tuple[int, int]] = set()
    stack = [(str(root), "")]
    while stack:
        directory, prefix = stack.pop()
        try:
            with os.scandir(directory) as it:
                items = list(it)
        except OSError:
            snap.unreadable.append(prefix or ".")
            continue
        for item in items:
            try:
                info = item.stat(follow_symlinks=False)
            except OSError:
                continue
            rel = prefix + item.name
            snap.files += 1
            if snap.files > max_entries:
                snap.complete = False
                return snap
            kind = stat.S_IFMT(info.st_mode)
            if stat.S_ISREG(info.st_mode) and (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                snap.bytes += max(info.st_size, info.st_blocks * 512)
            is_dir = stat.S_ISDIR(info.st_mode)
            if not (prefix == "" and item.name in skip):
                key = rel + "/" if is_dir else rel
                size = 0 if is_dir else info.st_size
                snap.entries[key] = (kind, size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)
            if is_dir:
                stack.append((item.path, rel + "/"))
    return snap


def compare(before: Snapshot, after: Snapshot, *, limit: int = AUDIT_PATHS) -> dict[str, Any]:
    """Created, modified and deleted paths between two walks, sorted, at most ``limit`` listed
    in all (created first). A directory's own mtime moving is not a change of its own: the
    entries inside it that changed are listed instead."""
    created = sorted(p for p in after.entries if p not in before.entries)
    deleted = sorted(p for p in before.entries if p not in after.entries)
    modified = sorted(
        p
        for p, stamp in after.entries.items()
        if p in before.entries and not p.endswith("/") and before.entries[p] != stamp
    )
    listed: list[dict[str, Any]] = []
    for change, paths in (("created", created), ("modified", modified), ("deleted", deleted)):
        for path in paths:
            if len(listed) >= limit:
                break
            entry: dict[str, Any] = {"path": path, "change": change}
            if change != "deleted" and not path.endswith("/"):
                entry["bytes"] = after.entries[path][1]
            listed.append(entry)
    return {
        "files": listed,
        "created": len(created),
        "modified": len(modified),
        "deleted": len(deleted),
        "omitted": len(created) + len(modified) + len(deleted) - len(listed),
        "complete": before.complete and after.complete,
    }


def command_record(
    before: Snapshot, after: Snapshot, *, max_bytes: int, max_files: int
) -> tuple[dict[str, Any], str]:
    """The audit fields of one ``run_command`` call, and why the workspace is now over its
    limits ("" when it is not).

    ``files_changed`` (what the audit trail records as ``files_modified``) lists the first
    :data:`AUDIT_PATHS` paths; when more changed, a last entry without ``path`` carries the
    counts. ``file_changes`` always has the counts, ``workspace_bytes`` the size after.
    """
    changes = compare(before, after)
    files: list[dict[str, Any]] = list(changes.pop("files"))
    if changes["omitted"]:
        files.append({k: v for k, v in changes.items() if k != "complete"})
    record = {"files_changed": files, "file_changes": changes, "workspace_bytes": after.bytes}
    over = ""
    if not after.complete:
        over = f"the workspace now has more than {max_files} files"
    elif after.bytes > max_bytes:
        over = f"the workspace now holds {after.bytes} bytes"
    if over:
        over += f" (limits: {max_bytes} bytes, {max_files} files): delete files before writing more"
    return record, over
