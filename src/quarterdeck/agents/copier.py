"""Copy a server directory into a run's workspace as the run's own user, in a child process.

Run as ``python -I -m quarterdeck.agents.copier SRC DEST MAX_BYTES MAX_FILES [UID GID]``. When
started as root with a uid, the first thing it does is drop to that uid and gid (no
supplementary groups) and check that root cannot be regained, so every file it reads is one the
run's user could read anyway: a root-only file under the source is a clear refusal, not a leak.
(The interpreter is loaded before the drop, so it need not be readable by the run's user;
every module it needs is imported up front for the same reason.)

It walks with directory descriptors and ``O_NOFOLLOW``: a symlink is never followed, only
recreated, and kept only when it resolves inside the copied tree; FIFOs, sockets and devices
are skipped (``O_NONBLOCK`` plus ``fstat`` after the open, so one swapped in under us cannot
block the copy either); directories on another filesystem are not entered (``cp -x``); and the
copy stops as soon as it passes ``MAX_BYTES`` or ``MAX_FILES``. The outcome is one JSON line on
stdout; exit status 2 means refused, with the reason in ``error``.

Only the standard library is used: this is a separate program, not part of the worker.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from typing import Any

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PASS_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
"""For the components above the one we copy: search permission is enough to pass them."""
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CHUNK = 1 << 20
_MAX_DEPTH = 256
_KERNEL_TREES = ("/proc", "/sys", "/dev")


class Refused(Exception):
    """The copy cannot go on; the message is for the person who submitted the run."""


def drop_to(uid: int, gid: int) -> None:
    """Become ``uid``/``gid`` for good; refuse to continue if root is still reachable."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise Refused("could not drop privileges")  # pragma: no cover - kernel misbehaving


def open_exact(path: str) -> int:
    """Open the directory ``path`` walking one component at a time without following any
    symlink, so what we copy is the real directory the server checked, not a swapped-in link."""
    if not path.startswith("/"):
        raise Refused(f"{path!r} is not absolute")
    parts = [p for p in path.split("/") if p]
    fd = os.open("/", _DIR_FLAGS if not parts else _PASS_FLAGS)
    try:
        for i, part in enumerate(parts):
            flags = _DIR_FLAGS if i == len(parts) - 1 else _PASS_FLAGS
            try:
                nfd = os.open(part, flags, dir_fd=fd)
            except OSError as exc:
                raise Refused(f"cannot open {path!r} at {part!r}: {exc.strerror}") from None
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


class Copier:
    def __init__(self, max_bytes: int, max_files: int) -> None:
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.bytes = 0
        self.files = 0
        self.skipped: list[str] = []
        self.links: list[str] = []
        self.kernel_devs: set[int] = set()
        for tree in _KERNEL_TREES:
            try:
                self.kernel_devs.add(os.stat(tree).st_dev)
            except OSError:
                pass

    def _skip(self, rel: str, why: str) -> None:
        if len(self.skipped) < 100:
            self.skipped.append(f"{rel}: {why}")

    def _count(self, rel: str, size: int = 0) -> None:
        self.files += 1
        self.bytes += size
        if self.files > self.max_files:
            raise Refused(f"the source has more than {self.max_files} entries (at {rel!r})")
        if self.bytes > self.max_bytes:
            raise Refused(f"the source is larger than {self.max_bytes} bytes (at {rel!r})")

    def copy_tree(self, src_fd: int, dest_fd: int) -> None:
        """Depth first with one open (source, copy) descriptor pair per level, so a wide tree
        cannot run out of descriptors; a tree deeper than ``_MAX_DEPTH`` is refused."""
        root_dev = os.fstat(src_fd).st_dev
        if root_dev in self.kernel_devs:
            raise Refused("the source is on a kernel filesystem (/proc, /sys or /dev)")
        stack = [(src_fd, dest_fd, "", iter(sorted(os.listdir(src_fd))))]
        try:
            while stack:
                sfd, dfd, rel_dir, names = stack[-1]
                name = next(names, None)
                if name is None:
                    stack.pop()
                    os.close(sfd)
                    os.close(dfd)
                    continue
                rel = f"{rel_dir}{name}"
                child = self._entry(sfd, dfd, name, rel, root_dev)
                if child is not None:
                    if len(stack) >= _MAX_DEPTH:
                        os.close(child[0])
                        os.close(child[1])
                        raise Refused(f"the source is nested deeper than {_MAX_DEPTH} levels")
                    stack.append((*child, rel + "/", iter(sorted(os.listdir(child[0])))))
        finally:
            for sfd, dfd, _, _ in stack:
                os.close(sfd)
                os.close(dfd)

    def _entry(
        self, sfd: int, dfd: int, name: str, rel: str, root_dev: int
    ) -> tuple[int, int] | None:
        try:
            info = os.stat(name, dir_fd=sfd, follow_symlinks=False)
        except FileNotFoundError:
            return None  # removed while we walked
        mode = info.st_mode
        if stat.S_ISLNK(mode):
            self._count(rel)
            target = os.readlink(name, dir_fd=sfd)
            os.symlink(target, name, dir_fd=dfd)
            self.links.append(rel)
            return None
        if stat.S_ISDIR(mode):
            if info.st_dev != root_dev:
                self._skip(rel + "/", "on another filesystem, not entered")
                return None
            self._count(rel)
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=sfd)
            except PermissionError:
                raise Refused(f"{rel}/ is not readable by the run's user") from None
            if os.fstat(child).st_ino != info.st_ino:
                os.close(child)
                raise Refused(f"{rel}/ changed while it was copied")
            os.mkdir(name, 0o755, dir_fd=dfd)
            return child, os.open(name, _DIR_FLAGS, dir_fd=dfd)
        if not stat.S_ISREG(mode):
            self._skip(rel, "not a regular file, directory or symlink (fifo, socket or device)")
            return None
        self._count(rel, info.st_size)
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=sfd)
        except PermissionError:
            raise Refused(f"{rel} is not readable by the run's user") from None
        except OSError as exc:  # ELOOP: swapped for a symlink; ENXIO: a socket
            self._skip(rel, f"changed while copied ({exc.strerror})")
            return None
        try:
            now = os.fstat(fd)
            if not stat.S_ISREG(now.st_mode):
                self._skip(rel, "changed into a special file while copied")
                return None
            os.set_blocking(fd, True)
            perm = 0o755 if now.st_mode & 0o111 else 0o644
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            out = os.open(name, flags, perm, dir_fd=dfd)
            try:
                copied = 0
                while chunk := os.read(fd, _CHUNK):
                    copied += len(chunk)
                    if copied > info.st_size:  # a file that grows (or lies, like /proc)
                        self._count(rel, len(chunk))
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(out, view) :]
            finally:
                os.close(out)
        finally:
            os.close(fd)
        return None

    def prune_links(self, dest: str) -> None:
        """Remove copied symlinks that resolve outside the tree; judged on the copy itself,
        which nothing else writes to yet, so chains of links are resolved as the run will see
        them."""
        base = os.path.realpath(dest)
        for rel in self.links:
            path = os.path.join(dest, rel)
            real = os.path.realpath(path)
            if real != base and not real.startswith(base + os.sep):
                os.unlink(path)
                self._skip(rel, "symlink pointing outside the tree, not copied")


def main(argv: list[str]) -> int:
    src, dest, max_bytes, max_files = argv[0], argv[1], int(argv[2]), int(argv[3])
    copier = Copier(max_bytes, max_files)
    result: dict[str, Any]
    try:
        if len(argv) >= 6:
            drop_to(int(argv[4]), int(argv[5]))
        src_fd, dest_fd = open_exact(src), open_exact(dest)
        copier.copy_tree(src_fd, dest_fd)
        copier.prune_links(dest)
        result = {"ok": True, "bytes": copier.bytes, "files": copier.files}
        status = 0
    except Refused as exc:
        result, status = {"ok": False, "error": str(exc)}, 2
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        result, status = {"ok": False, "error": f"{exc.strerror}{where}"}, 2
    result["skipped"] = copier.skipped
    sys.stdout.write(json.dumps(result) + "\n")
    return status


if __name__ == "__main__":  # pragma: no cover - exercised through agents.sources
    sys.exit(main(sys.argv[1:]))
