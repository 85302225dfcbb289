"""How much disk a workspace takes, for the workspace size limit.

There is no unprivileged, portable way to give a directory a hard quota (no loop mounts in a
user namespace, project quotas need the filesystem set up for them), so the limit is enforced by
measuring: ``RLIMIT_FSIZE`` bounds each file the moment it is written, and this walk bounds their
sum, while the command runs (it is killed when over) and after it. Allocated blocks are counted,
not apparent sizes (a sparse file costs what it stores), and a hard-linked inode once.
"""

from __future__ import annotations

import os
import stat


def disk_usage(root: str, stop_above: int | None = None) -> int:
    """Bytes allocated under ``root`` (not following symlinks). Stops early, returning a figure
    above ``stop_above``, once that is exceeded: the caller only needs to know it is too big."""
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [root]
    while stack:
        path = stack.pop()
        try:
            entries = list(os.scandir(path))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += st.st_blocks * 512
            if stat.S_ISDIR(st.st_mode):
                stack.append(entry.path)
            if stop_above is not None and total > stop_above:
                return total
    return total
