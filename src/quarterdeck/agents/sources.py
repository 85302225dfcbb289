"""Filling a new workspace from its source: a tar archive, a server directory, or a git clone.

Who may name which source is decided in :mod:`quarterdeck.runs.sources`, at submission; it is
checked again here, against the settings the worker has now, before anything is read. Then:

* **Server directories** are copied by a child process (:mod:`quarterdeck.agents.copier`) that
  drops to the run's own uid first, so the copy can read nothing the run could not; it follows no
  symlink, skips FIFOs, sockets and devices, and stops at the byte and file limits.
* **git** runs as the run's uid too, with an environment built from nothing: no ``HOME`` or
  system git config, no credential helper or askpass, no SSH agent, no terminal prompt, https
  only (``file`` for an admin's local repository), no redirects, and the host's address resolved
  and checked here (public unicast only) and pinned for git (``http.curloptResolve``) so DNS
  cannot change it in between. The tree is measured while the clone runs, and the clone killed
  when it passes the limits.
* **tar** archives are refused whole on the first absolute path, ``..``, link out of the tree or
  special file, or when they would expand past the limits; ``tarfile``'s ``data`` filter re-checks
  against the real filesystem as it extracts.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ipaddress
import json
import os
import re
import shutil
import socket
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import structlog

from quarterdeck.agents.changes import snapshot
from quarterdeck.agents.sandbox import SAFE_PATH
from quarterdeck.config import Settings
from quarterdeck.exceptions import ValidationFailed
from quarterdeck.runs.sources import SourceRefused, check_git, resolve_server_path

log = structlog.get_logger(__name__)

Source = None | bytes | Path | str
"""None: empty tree; bytes: a tar archive; Path: a server directory to copy; str: a git URL."""
DEFAULT_GIT_HOSTS = ("github.com", "gitlab.com", "bitbucket.org")
_POLL_S = 0.25
_GIT_ENV = {
    "PATH": SAFE_PATH,
    "HOME": "/nonexistent",
    "LANG": "C.UTF-8",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_TERMINAL_PROMPT": "0",
}


class WorkspaceError(ValidationFailed):
    """A workspace operation was refused or failed; the message is meant for the model."""


@dataclass(frozen=True)
class SourcePolicy:
    """What a source may be and how big it may grow (from the settings, see ``of``)."""

    roots: tuple[Path, ...] = ()
    deny: tuple[Path, ...] = ()
    allowed_hosts: tuple[str, ...] = DEFAULT_GIT_HOSTS
    max_bytes: int = 1024**3
    max_files: int = 200_000
    timeout_s: float = 300.0

    @classmethod
    def of(cls, settings: Settings) -> SourcePolicy:
        return cls(
            roots=tuple(settings.workspace_roots),
            deny=(settings.data_dir,),
            allowed_hosts=tuple(settings.git_allowed_hosts),
            max_bytes=settings.workspace_max_bytes,
            max_files=settings.workspace_max_files,
        )


def git_env() -> dict[str, str]:
    """The whole environment of every git process we start (never the worker's own)."""
    return dict(_GIT_ENV)


async def run_exec(
    argv: list[str],
    *,
    env: dict[str, str],
    timeout_s: float,
    cwd: Path | str | None = None,
    owner: tuple[int, int] | None = None,
    watch: Callable[[], str | None] | None = None,
) -> tuple[int, str, str]:
    """Run ``argv`` (as ``owner`` when given) and return (status, stdout, stderr). ``watch`` is
    called every quarter second in a thread; a message from it kills the process group and is
    raised as :class:`WorkspaceError`, as is a timeout."""
    if shutil.which(argv[0], path=SAFE_PATH) is None and not os.path.isabs(argv[0]):
        raise WorkspaceError(f"{argv[0]} is not installed on the worker; workspaces need it")
    extra: dict[str, Any] = {}
    if owner is not None:
        extra = {"user": owner[0], "group": owner[1], "extra_groups": []}
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        **extra,
    )
    talk = asyncio.ensure_future(proc.communicate())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    problem: str | None = None
    try:
        while not talk.done():
            left = deadline - loop.time()
            if left <= 0:
                problem = f"{os.path.basename(argv[0])} timed out after {timeout_s:g}s"
                break
            await asyncio.wait({talk}, timeout=min(_POLL_S, left))
            if watch is not None and not talk.done():
                problem = await asyncio.to_thread(watch)
                if problem:
                    break
    finally:
        if not talk.done():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, 9)
            with contextlib.suppress(Exception):
                await talk
    if problem:
        raise WorkspaceError(problem)
    out, err = talk.result()
    rc = proc.returncode if proc.returncode is not None else -1
    return rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def _refused(exc: SourceRefused) -> WorkspaceError:
    return WorkspaceError(f"workspace source refused: {exc.detail}")


def size_guard(tree: Path, policy: SourcePolicy) -> Callable[[], str | None]:
    """A ``watch`` for :func:`run_exec`: the reason to stop once ``tree`` passes the limits."""

    def check() -> str | None:
        snap = snapshot(tree, max_entries=policy.max_files)
        if not snap.complete:
            return f"workspace source has more than {policy.max_files} files; stopped"
        if snap.bytes > policy.max_bytes:
            return f"workspace source is larger than {policy.max_bytes} bytes; stopped"
        return None

    return check


# -- tar --------------------------------------------------------------------------------------
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


def extract_tar(data: bytes, dest: Path, max_bytes: int, max_members: int) -> None:
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


# -- server directories -----------------------------------------------------------------------
async def copy_path(
    source: Path, dest: Path, owner: tuple[int, int] | None, policy: SourcePolicy
) -> dict[str, Any]:
    """Copy a server directory into ``dest`` (empty, writable by ``owner``) as ``owner``;
    returns the copier's report (bytes, files, what it skipped)."""
    try:
        real = resolve_server_path(str(source), list(policy.roots), list(policy.deny))
    except SourceRefused as exc:
        raise _refused(exc) from None
    argv = [sys.executable, "-I", "-m", "quarterdeck.agents.copier", str(real), str(dest)]
    argv += [str(policy.max_bytes), str(policy.max_files)]
    if owner is not None and os.geteuid() == 0:
        argv += [str(owner[0]), str(owner[1])]  # the child drops to them before reading
    env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8"}
    rc, out, err = await run_exec(argv, env=env, timeout_s=policy.timeout_s, cwd="/")
    try:
        report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise WorkspaceError(f"copying {str(source)!r} failed: {err.strip()[-2000:]}") from None
    if rc != 0 or not report.get("ok"):
        raise WorkspaceError(f"copying workspace source {str(source)!r} stopped: {report['error']}")
    if report.get("skipped"):
        log.info("workspace_copy_skipped", source=str(real), skipped=report["skipped"][:20])
    return report


# -- git --------------------------------------------------------------------------------------
def _public_address(host: str, port: int) -> str:
    """The address git will connect to; every answer must be public unicast."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise WorkspaceError(f"cannot resolve git host {host!r}: {exc}") from None
    addresses = sorted({str(info[4][0]) for info in infos}, key=lambda a: (":" in a, a))
    for text in addresses:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        if not addr.is_global or addr.is_multicast:
            raise WorkspaceError(f"git host {host} resolves to non-public address {addr}")
    if not addresses:
        raise WorkspaceError(f"git host {host!r} has no address")
    return addresses[0]


@contextlib.contextmanager
def _local_clone_config() -> Iterator[str]:
    """A throwaway global git config holding only ``safe.directory=*``, readable by all."""
    fd, path = tempfile.mkstemp(prefix="qd-gitconfig-", suffix=".cfg")
    try:
        os.write(fd, b"[safe]\n\tdirectory = *\n")
        os.fchmod(fd, 0o644)
        os.close(fd)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


async def clone(url: str, dest: Path, owner: tuple[int, int] | None, policy: SourcePolicy) -> None:
    """Shallow-clone ``url`` into ``dest`` (empty, writable by ``owner``) as ``owner``."""
    try:
        source = check_git(url, list(policy.roots), list(policy.allowed_hosts), list(policy.deny))
    except SourceRefused as exc:
        raise _refused(exc) from None
    opts = [
        "-c", "protocol.allow=never",
        "-c", "credential.helper=",
        "-c", "core.askPass=",
        "-c", "http.followRedirects=false",
        "-c", "safe.directory=*",
    ]  # fmt: skip
    if source.local is not None:
        opts += ["-c", "protocol.file.allow=always"]
    else:
        assert source.host is not None
        ip = await asyncio.to_thread(_public_address, source.host, source.port)
        pinned = f"[{ip}]" if ":" in ip else ip
        opts += ["-c", "protocol.https.allow=always"]
        opts += ["-c", f"http.curloptResolve={source.host}:{source.port}:{pinned}"]
    argv = ["git", *opts, "clone", "--quiet", "--depth", "1", "--no-recurse-submodules"]
    argv += ["--", source.url, str(dest)]
    env = git_env()
    with _local_clone_config() as config:
        if source.local is not None:
            # git drops ``-c`` options for the upload-pack of a local clone, which then refuses
            # a repository its (unprivileged) user does not own; a global config file it reads.
            env["GIT_CONFIG_GLOBAL"] = config
        rc, _, err = await run_exec(
            argv,
            env=env,
            timeout_s=policy.timeout_s,
            cwd="/",
            owner=owner if os.geteuid() == 0 else None,
            watch=size_guard(dest, policy),
        )
    if rc != 0:
        raise WorkspaceError(f"git clone failed: {err.strip()[-2000:]}")
    problem = await asyncio.to_thread(size_guard(dest, policy))
    if problem:  # finished between two looks of the watch
        raise WorkspaceError(problem)


async def materialise(
    source: Source, dest: Path, owner: tuple[int, int] | None, policy: SourcePolicy
) -> None:
    """Fill the empty ``dest`` from ``source`` within ``policy``; see the module docstring."""
    if isinstance(source, bytes):
        await asyncio.to_thread(extract_tar, source, dest, policy.max_bytes, policy.max_files)
    elif isinstance(source, Path):
        await copy_path(source, dest, owner, policy)
    elif isinstance(source, str):
        await clone(source, dest, owner, policy)
    elif source is not None:
        raise WorkspaceError(f"unsupported workspace source {type(source).__name__}")
    problem = await asyncio.to_thread(size_guard(dest, policy))
    if problem:
        raise WorkspaceError(problem)
