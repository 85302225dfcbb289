"""A run's private working tree under ``<data_dir>/workspaces/<run_id>/``.

It lives in the data directory rather than a temp dir so it survives a worker crash: the resumed
run reopens it and carries on. A run resumed on another replica gets it back from Postgres
instead (:mod:`quarterdeck.agents.checkpoint`, :meth:`Workspace.rebuild`). Beside it, ``<run_id>.git`` is a git directory *outside* the tree
holding a baseline commit of the starting state; ``diff()`` compares the tree with it. Keeping
the git dir outside means nothing the agent does in the tree (deleting ``.git``, rewriting
history, hooks) can alter the record of what it changed.

Everything the model names is a path *relative to the tree*; :meth:`Workspace.resolve` refuses
any that lands outside it after ``..`` and symlinks are resolved, and :meth:`Workspace.open_fd`
then walks the components with ``O_NOFOLLOW`` so a symlink swapped in between the check and
the open is refused too.

Where the tree comes from (tar, a server directory, git) and the limits on it are
:mod:`quarterdeck.agents.sources`; what a command changed in it, :mod:`quarterdeck.agents.changes`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import re
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from quarterdeck.agents.changes import Snapshot, snapshot
from quarterdeck.agents.sandbox import AGENT_STATE_DIRNAME, TMP_DIRNAME, prepare_dir, run_identity
from quarterdeck.agents.sources import (
    Source,
    SourcePolicy,
    WorkspaceError,
    git_env,
    materialise,
    run_exec,
)

__all__ = ["PathEscape", "Source", "SourcePolicy", "Workspace", "WorkspaceError", "parse_source"]

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_READY = "quarterdeck-ready"
# Byproducts of running code, not changes an agent made: kept out of diffs and changed files.
CACHE_PATTERNS = (
    "__pycache__/",
    "*.py[co]",
    ".pytest_cache/",
    ".mypy_cache/",
    ".ruff_cache/",
    ".coverage",
    ".coverage.*",
)
_GIT_OPTS = [
    "-c",
    "safe.directory=*",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.bigFileThreshold=2m",
    "-c",
    "user.name=quarterdeck",
    "-c",
    "user.email=quarterdeck@localhost",
    "-c",
    "commit.gpgsign=false",
    "-c",
    "core.quotePath=false",
]


class PathEscape(WorkspaceError):
    """A path resolved outside the workspace."""


def parse_source(spec: object) -> Source:
    """``run.params["workspace"]`` (``{"type": "empty"|"path"|"git"|"tar", "value": ...}``, tar
    base64-encoded) to a :data:`Source`. Whether the source is allowed is checked when it is
    materialised (:mod:`quarterdeck.agents.sources`)."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise WorkspaceError("params.workspace must be an object with 'type' and 'value'")
    kind, value = spec.get("type", "empty"), spec.get("value")
    if kind == "empty":
        return None
    if not isinstance(value, str) or not value:
        raise WorkspaceError(f"params.workspace.value must be a non-empty string for {kind!r}")
    if kind == "path":
        return Path(value)
    if kind == "git":
        return value
    if kind == "tar":
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise WorkspaceError(f"params.workspace.value is not valid base64: {exc}") from exc
    raise WorkspaceError(f"unknown workspace type {kind!r} (empty, path, git or tar)")


class Workspace:
    """One run's tree; see the module docstring."""

    def __init__(
        self,
        data_dir: Path,
        run_id: str,
        *,
        retention: str = "keep",
        owner: tuple[int, int] | None = None,
    ) -> None:
        if not _RUN_ID.match(run_id) or ".." in run_id:
            raise WorkspaceError(f"invalid run id for a workspace: {run_id!r}")
        self.run_id = run_id
        self.root = Path(data_dir).resolve() / "workspaces"
        self.path = self.root / run_id
        self.git_dir = self.root / f"{run_id}.git"
        self.retention = retention
        self.owner = owner if owner is not None else run_identity(run_id)
        self._lock = asyncio.Lock()

    @property
    def ready(self) -> bool:
        """True once ``create`` finished (the baseline exists); a crash before leaves it False."""
        return (self.git_dir / _READY).exists() and self.path.is_dir()

    @classmethod
    def open_existing(cls, data_dir: Path, run_id: str, *, retention: str = "keep") -> Workspace:
        """Reopen the workspace of a resumed run."""
        ws = cls(data_dir, run_id, retention=retention)
        if not ws.ready:
            raise WorkspaceError(f"no workspace for run {run_id}")
        return ws

    async def create(
        self, source: Source = None, *, policy: SourcePolicy | None = None
    ) -> Workspace:
        """Populate the tree from ``source`` within ``policy`` (roots, hosts, size limits) and
        record the baseline. Leftovers of a create that crashed half-way are wiped first, so
        this is safe to retry. The tree is handed to the run's user *before* it is filled, so
        the copy or clone runs as that user, never as the worker."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o711)  # sandbox uids may enter their own tree but not list others
        for leftover in (self.path, self.git_dir):
            await asyncio.to_thread(shutil.rmtree, leftover, ignore_errors=True)
        self.path.mkdir(mode=0o700)
        try:
            if self.owner:
                os.chown(self.path, *self.owner)
            await materialise(source, self.path, self.owner, policy or SourcePolicy())
            await asyncio.to_thread(prepare_dir, self.path, self.owner)
            self.path.chmod(0o700)
            await self._baseline()
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, self.path, ignore_errors=True)
            await asyncio.to_thread(shutil.rmtree, self.git_dir, ignore_errors=True)
            raise
        (self.git_dir / _READY).write_text(self.run_id)
        return self

    async def _baseline(self) -> None:
        """Commit the tree as it is now as the baseline every diff compares with."""
        await self._git("init", "--quiet", env_extra={"GIT_DIR": str(self.git_dir)})
        (self.git_dir / "info").mkdir(exist_ok=True)
        (self.git_dir / "info" / "exclude").write_text(
            "".join(
                f"{line}\n"
                for line in (f"/{TMP_DIRNAME}/", f"/{AGENT_STATE_DIRNAME}/", *CACHE_PATTERNS)
            )
        )
        await self._git("add", "--all")
        await self._git("commit", "--quiet", "--allow-empty", "--no-verify", "-m", "baseline")

    async def rebuild(
        self, write_base: Callable[[Path], None], write_current: Callable[[Path], None]
    ) -> Workspace:
        """Make the tree and its baseline anew from a checkpoint (a run resumed on a replica
        that does not have them): ``write_base`` fills the tree as first prepared, which is
        committed as the baseline; then the tree is emptied and ``write_current`` fills it as of
        the last checkpoint. Both write as the worker into a directory only it can enter; the
        tree is handed to the run's uid at the end, as :meth:`create` leaves it. Like
        :meth:`create`, safe to retry: the ready mark is written last."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o711)
        for leftover in (self.path, self.git_dir):
            await asyncio.to_thread(shutil.rmtree, leftover, ignore_errors=True)
        self.path.mkdir(mode=0o700)
        try:
            await asyncio.to_thread(write_base, self.path)
            await self._baseline()
            await asyncio.to_thread(shutil.rmtree, self.path)
            self.path.mkdir(mode=0o700)
            await asyncio.to_thread(write_current, self.path)
            await asyncio.to_thread(prepare_dir, self.path, self.owner)
            self.path.chmod(0o700)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, self.path, ignore_errors=True)
            await asyncio.to_thread(shutil.rmtree, self.git_dir, ignore_errors=True)
            raise
        (self.git_dir / _READY).write_text(self.run_id)
        return self

    async def _git(self, *args: str, env_extra: dict[str, str] | None = None) -> str:
        env = {**git_env(), "GIT_DIR": str(self.git_dir), "GIT_WORK_TREE": str(self.path)}
        env.update(env_extra or {})
        rc, out, err = await run_exec(["git", *_GIT_OPTS, *args], env=env, timeout_s=300.0)
        if rc != 0:
            raise WorkspaceError(f"git {args[0]} failed: {err.strip()[-2000:]}")
        return out

    async def diff(self) -> str:
        """Unified diff of the tree against the baseline: new, modified and deleted files;
        binary (and >2 MB) files are reported as 'Binary files ... differ'. Files matched by the
        tree's own .gitignore are left out."""
        async with self._lock:
            await self._git("add", "--all")
            return await self._git("diff", "--cached", "--no-renames", "--no-color", "HEAD")

    async def changed_files(self) -> list[str]:
        async with self._lock:
            await self._git("add", "--all")
            out = await self._git("diff", "--cached", "--no-renames", "--name-only", "-z", "HEAD")
        return [name for name in out.split("\0") if name]

    def snapshot(self, max_entries: int) -> Snapshot:
        """A stat walk of the tree (blocking; see :mod:`quarterdeck.agents.changes`): what
        ``run_command`` changed is two of these compared, and its size is checked with one."""
        return snapshot(self.path, max_entries=max_entries, skip=frozenset({TMP_DIRNAME}))

    def size_bytes(self, max_entries: int = 10_000_000) -> int:
        """Bytes the tree holds (each inode once, sparse files at full length)."""
        return self.snapshot(max_entries).bytes

    def resolve(self, path: str | Path) -> Path:
        """The real path ``path`` names inside the tree, or :class:`PathEscape`.

        Relative paths are taken from the tree root; absolute ones are accepted only if they are
        inside it. ``..`` and symlinks are resolved before the check.
        """
        text = str(path)
        if "\0" in text:
            raise PathEscape("path contains a NUL byte")
        base = Path(os.path.realpath(self.path))
        candidate = Path(text) if os.path.isabs(text) else base / text
        real = Path(os.path.realpath(candidate))
        if real != base and base not in real.parents:
            raise PathEscape(
                f"path {text!r} resolves outside the workspace; use paths relative to its root"
            )
        return real

    def relative(self, real: Path) -> str:
        base = Path(os.path.realpath(self.path))
        return str(real.relative_to(base)) if real != base else "."

    def open_fd(self, path: str | Path, *, write: bool = False) -> int:
        """Open a regular file in the tree without following any symlink (the path is resolved
        first), creating it and its parent directories when ``write``. Never truncates: the
        caller does, after it has the descriptor. Refuses hard-linked files, whose other name
        may be outside the tree."""
        real = self.resolve(path)
        parts = Path(self.relative(real)).parts
        if not parts or parts == (".",):
            raise WorkspaceError("that is the workspace root, not a file")
        dfd = os.open(os.path.realpath(self.path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for comp in parts[:-1]:
                if write:
                    try:
                        os.mkdir(comp, 0o755, dir_fd=dfd)
                        if self.owner:
                            os.chown(comp, *self.owner, dir_fd=dfd, follow_symlinks=False)
                    except FileExistsError:
                        pass
                flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                try:
                    nfd = os.open(comp, flags, dir_fd=dfd)
                except FileNotFoundError:
                    raise WorkspaceError(f"{path}: no such file or directory") from None
                except NotADirectoryError:
                    raise WorkspaceError(f"{path}: {comp!r} is not a directory") from None
                except OSError as exc:  # ELOOP: a symlink appeared after resolve()
                    raise PathEscape(f"{path}: path changed while opening ({exc})") from None
                os.close(dfd)
                dfd = nfd
            flags = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
            flags |= (os.O_RDWR | os.O_CREAT) if write else os.O_RDONLY
            try:
                fd = os.open(parts[-1], flags, 0o644, dir_fd=dfd)
            except FileNotFoundError:
                raise WorkspaceError(f"{path}: no such file") from None
            except IsADirectoryError:
                raise WorkspaceError(f"{path} is a directory") from None
            except OSError as exc:
                raise WorkspaceError(f"{path}: cannot open ({exc.strerror})") from None
        finally:
            os.close(dfd)
        info = os.fstat(fd)
        problem = None
        if stat.S_ISDIR(info.st_mode):
            problem = "is a directory"
        elif not stat.S_ISREG(info.st_mode):
            problem = "is not a regular file"
        elif info.st_nlink > 1:
            problem = "is hard-linked; refusing (its other name may be outside the workspace)"
        if problem:
            os.close(fd)
            raise WorkspaceError(f"{path} {problem}")
        os.set_blocking(fd, True)
        if write and self.owner and info.st_uid != self.owner[0]:
            os.fchown(fd, *self.owner)
        return fd

    def cleanup(self, status: str) -> bool:
        """Apply the retention policy once the run is terminal; True if the tree was removed."""
        if self.retention == "keep":
            return False
        if self.retention == "delete_succeeded" and str(status) != "succeeded":
            return False
        shutil.rmtree(self.path, ignore_errors=True)  # fd-based: immune to symlink tricks
        shutil.rmtree(self.git_dir, ignore_errors=True)
        return True
