"""A run's private working tree under ``<data_dir>/workspaces/<run_id>/``.

It lives in the data directory rather than a temp dir so it survives a worker crash: the resumed
run reopens it and carries on. Beside it, ``<run_id>.git`` is a git directory *outside* the tree
holding a baseline commit of the starting state; ``diff()`` compares the tree with it. Keeping
the git dir outside means nothing the agent does in the tree (deleting ``.git``, rewriting
history, hooks) can alter the record of what it changed.

Everything the model names is a path *relative to the tree*; :meth:`Workspace.resolve` refuses
any that lands outside it after ``..`` and symlinks are resolved, and :meth:`Workspace.open_fd`
then walks the components with ``O_NOFOLLOW`` so a symlink swapped in between the check and
the open is refused too.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import shutil
import stat
import tarfile
from pathlib import Path, PurePosixPath

from quarterdeck.agents.sandbox import SAFE_PATH, TMP_DIRNAME, prepare_dir, run_identity
from quarterdeck.exceptions import ValidationFailed

Source = None | bytes | Path | str
"""None: empty tree; bytes: a tar archive; Path: a local directory to copy; str: a git URL."""
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
_SCP_LIKE = re.compile(r"^[A-Za-z0-9_.-]+@[A-Za-z0-9_.-]+:[^/]")
_GIT_ENV = {
    "PATH": SAFE_PATH,
    "HOME": "/nonexistent",
    "LANG": "C.UTF-8",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_TERMINAL_PROMPT": "0",
}
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


class WorkspaceError(ValidationFailed):
    """A workspace operation was refused or failed; the message is meant for the model."""


class PathEscape(WorkspaceError):
    """A path resolved outside the workspace."""


def parse_source(spec: object) -> Source:
    """``run.params["workspace"]`` (``{"type": "empty"|"path"|"git"|"tar", "value": ...}``, tar
    base64-encoded) to a :data:`Source`."""
    import base64
    import binascii

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


def check_git_url(url: str) -> str:
    """Only https, ssh (URL or scp-like), file URLs and absolute local paths; returns the URL to
    clone. ``ext::`` and friends run arbitrary commands, and a leading ``-`` is an option."""
    if url.startswith("-") or any(c in url for c in "\0\n\r"):
        raise WorkspaceError(f"refusing git URL {url!r}")
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", url)
    if match:
        if match.group(1).lower() not in ("https", "ssh", "file"):
            raise WorkspaceError(
                f"git URL scheme {match.group(1)!r} not allowed (https, ssh, file)"
            )
        return url
    if _SCP_LIKE.match(url):
        return url
    if url.startswith("/"):
        return Path(url).resolve().as_uri()  # a local-path clone would ignore --depth
    raise WorkspaceError(f"refusing git URL {url!r}: use https://, ssh://, file:// or a path")


def _check_tar(tf: tarfile.TarFile, max_bytes: int, max_members: int) -> list[tarfile.TarInfo]:
    """Refuse the whole archive on the first hostile member; the clear reason goes to the caller.
    ``tarfile``'s ``data`` filter then re-checks against the real filesystem as it extracts."""
    members, total = [], 0
    for member in tf:
        members.append(member)
        if len(members) > max_members:
            raise WorkspaceError(f"tar archive has more than {max_members} members")
        name = member.name
        parts = PurePosixPath(name).parts
        if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
            raise WorkspaceError(f"tar member {name!r} has an absolute path")
        if ".." in parts:
            raise WorkspaceError(f"tar member {name!r} contains '..'")
        if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            raise WorkspaceError(f"tar member {name!r} is a device, fifo or other special file")
        if member.issym() or member.islnk():
            target = member.linkname
            base = os.path.dirname(name) if member.issym() else ""
            joined = os.path.normpath(os.path.join(base, target))
            if target.startswith("/") or joined == ".." or joined.startswith("../"):
                raise WorkspaceError(f"tar link {name!r} -> {target!r} points outside")
        total += max(0, member.size)
        if total > max_bytes:
            raise WorkspaceError(f"tar archive expands to more than {max_bytes} bytes")
    return members


def _extract_tar(data: bytes, dest: Path, max_bytes: int, max_members: int) -> None:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
            members = _check_tar(tf, max_bytes, max_members)
            if not hasattr(tarfile, "data_filter"):  # pragma: no cover - Python < 3.11.4
                if any(m.issym() or m.islnk() for m in members):
                    raise WorkspaceError("tar links need Python >= 3.11.4 (tarfile data filter)")
                tf.extractall(dest, members=members)
            else:
                tf.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise WorkspaceError(f"cannot extract tar archive: {exc}") from exc


def _copy_tree(src: Path, dest: Path) -> None:
    if not src.is_dir():
        raise WorkspaceError(f"workspace source {str(src)!r} is not a directory")

    def special(directory: str, names: list[str]) -> set[str]:
        """Skip fifos, sockets and devices: copying a fifo would block forever."""
        skip = set()
        for name in names:
            mode = os.lstat(os.path.join(directory, name)).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
                skip.add(name)
        return skip

    shutil.copytree(src, dest, symlinks=True, ignore=special, dirs_exist_ok=True)


async def _exec(
    argv: list[str], *, env: dict[str, str], timeout_s: float, cwd: Path | None = None
) -> tuple[int, str, str]:
    if shutil.which(argv[0], path=SAFE_PATH) is None:
        raise WorkspaceError(f"{argv[0]} is not installed on the worker; workspaces need it")
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        await proc.wait()
        raise WorkspaceError(f"{argv[0]} timed out after {timeout_s:g}s") from None
    rc = proc.returncode if proc.returncode is not None else -1
    return rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


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
        self,
        source: Source = None,
        *,
        clone_timeout_s: float = 300.0,
        max_bytes: int = 1024**3,
        max_members: int = 200_000,
    ) -> Workspace:
        """Populate the tree from ``source`` and record the baseline. Leftovers of a create that
        crashed half-way are wiped first, so this is safe to retry."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o711)  # sandbox uids may enter their own tree but not list others
        for leftover in (self.path, self.git_dir):
            await asyncio.to_thread(shutil.rmtree, leftover, ignore_errors=True)
        self.path.mkdir(mode=0o700)
        try:
            if isinstance(source, bytes):
                await asyncio.to_thread(_extract_tar, source, self.path, max_bytes, max_members)
            elif isinstance(source, Path):
                await asyncio.to_thread(_copy_tree, source, self.path)
            elif isinstance(source, str):
                await self._clone(check_git_url(source), clone_timeout_s)
            elif source is not None:
                raise WorkspaceError(f"unsupported workspace source {type(source).__name__}")
            await asyncio.to_thread(prepare_dir, self.path, self.owner)
            self.path.chmod(0o700)
            await self._git("init", "--quiet", env_extra={"GIT_DIR": str(self.git_dir)})
            (self.git_dir / "info").mkdir(exist_ok=True)
            (self.git_dir / "info" / "exclude").write_text(
                "".join(f"{line}\n" for line in (f"/{TMP_DIRNAME}/", *CACHE_PATTERNS))
            )
            await self._git("add", "--all")
            await self._git("commit", "--quiet", "--allow-empty", "--no-verify", "-m", "baseline")
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, self.path, ignore_errors=True)
            await asyncio.to_thread(shutil.rmtree, self.git_dir, ignore_errors=True)
            raise
        (self.git_dir / _READY).write_text(self.run_id)
        return self

    async def _clone(self, url: str, timeout_s: float) -> None:
        env = {**_GIT_ENV, "HOME": os.environ.get("HOME", "/nonexistent")}
        env.pop("GIT_CONFIG_GLOBAL")  # operator credentials/helpers may live in ~/.gitconfig
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"
        argv = [
            "git",
            "-c",
            "protocol.allow=never",
            "-c",
            "protocol.https.allow=always",
            "-c",
            "protocol.ssh.allow=always",
            "-c",
            "protocol.file.allow=always",
            "-c",
            "safe.directory=*",
            "clone",
            "--quiet",
            "--depth",
            "1",
            "--no-recurse-submodules",
            "--",
            url,
            str(self.path),
        ]
        rc, _, err = await _exec(argv, env=env, timeout_s=timeout_s)
        if rc != 0:
            raise WorkspaceError(f"git clone failed: {err.strip()[-2000:]}")

    async def _git(self, *args: str, env_extra: dict[str, str] | None = None) -> str:
        env = {**_GIT_ENV, "GIT_DIR": str(self.git_dir), "GIT_WORK_TREE": str(self.path)}
        env.update(env_extra or {})
        rc, out, err = await _exec(["git", *_GIT_OPTS, *args], env=env, timeout_s=300.0)
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
