"""Which host uid a command runs as, and giving that uid its workspace.

As root every run gets its own unprivileged uid from a high, unnamed range, so runs cannot touch
each other's files or exhaust each other's process quota, and root-owned files stay protected.
A non-root worker cannot change uid at all: then these return None and the fs view of the
bwrap mode (not a uid) is what keeps a command away from the worker's files.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from quarterdeck.agents.sandbox.spec import RUN_UID_BASE, RUN_UID_SPAN, SAFE_PATH, SANDBOX_USER


def which(name: str) -> str | None:
    return shutil.which(name, path=SAFE_PATH)


@lru_cache(maxsize=1)
def shared_identity() -> tuple[int, int] | None:
    """The unprivileged (uid, gid) commands run as when no per-run identity is given.

    Only meaningful as root: creates the ``quarterdeck-sandbox`` system user if it is missing,
    falling back to ``nobody``. Returns None when not root (we cannot drop privileges).
    """
    if os.geteuid() != 0:
        return None
    for attempt in range(2):
        try:
            entry = pwd.getpwnam(SANDBOX_USER)
            return entry.pw_uid, entry.pw_gid
        except KeyError:
            useradd = which("useradd")
            if attempt or useradd is None:
                break
            subprocess.run(
                [
                    useradd,
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    SANDBOX_USER,
                ],
                capture_output=True,
                timeout=30,
                check=False,
            )
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def run_identity(key: str) -> tuple[int, int] | None:
    """A per-run (uid, gid) from a high, unnamed range. None when not root. Collisions (two
    concurrent runs hashing to the same uid) only degrade to the shared-user case."""
    if os.geteuid() != 0:
        return None
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    uid = RUN_UID_BASE + digest % RUN_UID_SPAN
    return uid, uid


def prepare_dir(path: Path, ident: tuple[int, int] | None) -> None:
    """Make ``path`` (recursively, without following symlinks) owned by the sandbox identity."""
    if ident is None:
        return
    uid, gid = ident
    os.chown(path, uid, gid, follow_symlinks=False)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)
