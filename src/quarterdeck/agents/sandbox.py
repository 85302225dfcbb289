"""Run one shell command for an agent, contained as far as this host allows.

The model decides what runs here, so every command is treated as hostile. Containment is layered
from util-linux tools because they are present on every Debian host and, unlike ``preexec_fn``,
are safe to spawn from a multi-threaded asyncio worker:

* ``unshare --net`` puts the command in an empty network namespace (only a downed loopback), and
  ``--pid --fork --kill-child --mount-proc`` in its own PID namespace, so when the top process dies
  the kernel kills everything it started -- even children that escaped with ``setsid``.
* As root the command runs as an unprivileged uid (per run when the caller passes ``run_as``), so
  ``RLIMIT_NPROC`` is enforced (the kernel exempts uid 0) and file permissions apply.
* ``setpriv --no-new-privs`` stops setuid binaries from regaining privileges.
* ``prlimit`` caps CPU seconds, address space, file size, process count and open files, and
  disables core dumps.
* The environment is rebuilt from a tiny allowlist: no parent variable (API keys, database URLs,
  ``QUARTERDECK_*``) ever reaches the command.
* Output is read incrementally and capped; the whole process group is SIGKILLed on timeout.

What works is probed once and cached; :class:`CommandResult.isolation` says honestly what a given
command got, and :func:`isolation_report` explains each layer for the README.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import pwd
import resource
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SANDBOX_USER = "quarterdeck-sandbox"
TMP_DIRNAME = ".sandbox-tmp"
"""Per-workspace TMPDIR; workspaces leave it out of diffs."""
RUN_UID_BASE = 1_000_000_000
RUN_UID_SPAN = 100_000_000
KILL_AFTER_DISCARDED = 64 * 1024 * 1024
"""Output beyond the cap is drained (so the child never blocks) up to this many bytes, then the
command is killed: an endless ``yes`` should not burn CPU until the timeout."""
_CHUNK = 64 * 1024
_NS_FLAGS = ("--pid", "--fork", "--kill-child", "--mount-proc")


@dataclass(frozen=True)
class SandboxLimits:
    """Per-process resource limits. ``address_space`` breaks runtimes that reserve huge virtual
    ranges up front (JVM, some Node builds); raise it for such agents."""

    cpu_s: int = 60
    address_space: int = 2 * 1024**3
    file_size: int = 256 * 1024**2
    nproc: int = 256
    open_files: int = 1024


@dataclass
class CommandResult:
    exit_code: int | None
    stdout: str
    stderr: str
    truncated: bool
    timed_out: bool
    duration_s: float
    isolation: str


@dataclass(frozen=True)
class _Capabilities:
    """What this host lets us do; probed once."""

    root: bool
    unshare: str | None
    netns: bool
    pidns: bool
    userns: bool  # non-root: namespaces only via a user namespace (--map-root-user)
    setpriv: str | None
    prlimit: str | None
    reason: str  # why namespaces are missing, when they are


def _which(name: str) -> str | None:
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
            useradd = _which("useradd")
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
    """A per-run (uid, gid) from a high, unnamed range, so runs cannot touch each other's files
    or exhaust each other's process quota. None when not root. Collisions (two concurrent runs
    hashing to the same uid) only degrade to the shared-user case."""
    if os.geteuid() != 0:
        return None
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    uid = RUN_UID_BASE + digest % RUN_UID_SPAN
    return uid, uid


def _probe(argv: list[str]) -> tuple[bool, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=10, check=False, cwd="/")
    except (OSError, subprocess.SubprocessError) as exc:
        return False, str(exc)
    message = proc.stderr.decode(errors="replace").strip().splitlines()
    return proc.returncode == 0, (message[-1] if message else f"exit {proc.returncode}")


@lru_cache(maxsize=1)
def capabilities() -> _Capabilities:
    """Probe (once) which isolation layers this kernel and these binaries give us."""
    root = os.geteuid() == 0
    unshare, true = _which("unshare"), _which("true") or "/bin/true"
    netns = pidns = userns = False
    reason = ""
    if unshare is None:
        reason = "unshare (util-linux) not installed"
    else:
        base = [unshare] if root else [unshare, "--user", "--map-root-user"]
        ident = shared_identity()
        drop = ["--setgid", str(ident[1]), "--setuid", str(ident[0])] if ident else []
        ok, why = _probe([*base, "--net", *_NS_FLAGS, *drop, "--", true])
        if ok:
            netns = pidns = True
        else:
            ok2, why2 = _probe([*base, "--net", *drop, "--", true])
            netns = ok2
            reason = f"pid namespace not permitted: {why}" if ok2 else f"not permitted: {why2}"
        userns = (netns or pidns) and not root
    return _Capabilities(
        root, unshare, netns, pidns, userns, _which("setpriv"), _which("prlimit"), reason
    )


def _limit_args(limits: SandboxLimits) -> list[tuple[int, int]]:
    wanted = [
        (resource.RLIMIT_CPU, limits.cpu_s),
        (resource.RLIMIT_AS, limits.address_space),
        (resource.RLIMIT_FSIZE, limits.file_size),
        (resource.RLIMIT_NPROC, limits.nproc),
        (resource.RLIMIT_NOFILE, limits.open_files),
        (resource.RLIMIT_CORE, 0),
    ]
    out = []
    for res, value in wanted:
        hard = resource.getrlimit(res)[1]
        out.append((res, value if hard == resource.RLIM_INFINITY else min(value, hard)))
    return out


_PRLIMIT_NAMES = {
    resource.RLIMIT_CPU: "cpu",
    resource.RLIMIT_AS: "as",
    resource.RLIMIT_FSIZE: "fsize",
    resource.RLIMIT_NPROC: "nproc",
    resource.RLIMIT_NOFILE: "nofile",
    resource.RLIMIT_CORE: "core",
}


def _build(
    command: str | list[str],
    caps: _Capabilities,
    network: bool,
    ident: tuple[int, int] | None,
    limits: SandboxLimits,
) -> tuple[list[str], dict[str, Any], str]:
    """The argv, extra Popen kwargs and isolation label for one command."""
    inner = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
    kwargs: dict[str, Any] = {}
    parts: list[str] = []
    notes: list[str] = []
    rl = _limit_args(limits)
    if caps.prlimit:
        inner = [caps.prlimit, *(f"--{_PRLIMIT_NAMES[r]}={v}" for r, v in rl), "--", *inner]
    else:

        def _apply_limits() -> None:  # pragma: no cover - runs in the child
            for res, value in rl:
                resource.setrlimit(res, (value, value))

        kwargs["preexec_fn"] = _apply_limits
    if caps.setpriv:
        inner = [caps.setpriv, "--no-new-privs", "--", *inner]
    use_net = caps.netns and not network
    if caps.unshare and (use_net or caps.pidns):
        pre = [caps.unshare] if caps.root else [caps.unshare, "--user", "--map-root-user"]
        if use_net:
            pre.append("--net")
            parts.append("netns")
        if caps.pidns:
            pre.extend(_NS_FLAGS)
            parts.append("pidns")
        if ident:
            pre.extend(["--setgid", str(ident[1]), "--setuid", str(ident[0])])
        inner = [*pre, "--", *inner]
    elif ident:
        kwargs.update(user=ident[0], group=ident[1], extra_groups=[])
    parts.append("rlimits")
    if ident:
        parts.append("uid")
    if caps.setpriv:
        parts.append("nnp")
    if network:
        notes.append("network allowed by configuration")
    elif not caps.netns:
        notes.append(f"no network namespace: {caps.reason}")
    if not ident:
        notes.append("runs as the worker's own user: not root, cannot drop privileges")
    label = "+".join(parts) + (f" ({'; '.join(notes)})" if notes else "")
    return inner, kwargs, label


class _Capture:
    """Keeps the first ``limit`` bytes across both streams and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept = 0
        self.data = {"stdout": bytearray(), "stderr": bytearray()}
        self.omitted = {"stdout": 0, "stderr": 0}
        self.flooded = asyncio.Event()

    async def pump(self, name: str, stream: asyncio.StreamReader | None) -> None:
        if stream is None:
            return
        while chunk := await stream.read(_CHUNK):
            room = max(0, self.limit - self.kept)
            self.data[name] += chunk[:room]
            self.kept += min(room, len(chunk))
            self.omitted[name] += max(0, len(chunk) - room)
            if sum(self.omitted.values()) > KILL_AFTER_DISCARDED:
                self.flooded.set()

    def text(self, name: str) -> str:
        out = self.data[name].decode("utf-8", errors="replace")
        if self.omitted[name]:
            out += f"\n[output truncated: {self.omitted[name]} bytes omitted]"
        return out


def _group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is still in ``pgid``. Zombies cannot run; they linger only
    until whatever reaps orphans (host PID 1, which may be slow) gets to them."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


async def _kill_group(proc: asyncio.subprocess.Process, waiter: asyncio.Future[int]) -> None:
    """SIGKILL the whole process group and reap its leader, repeating until no live member is
    left (a fork racing the first signal can add one). Bounded to about a second."""
    for attempt in range(50):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        if attempt == 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(waiter), timeout=0.5)
        if not _group_alive(proc.pid):
            return
        await asyncio.sleep(0.02)


def prepare_dir(path: Path, ident: tuple[int, int] | None) -> None:
    """Make ``path`` (recursively, without following symlinks) owned by the sandbox identity."""
    if ident is None:
        return
    uid, gid = ident
    os.chown(path, uid, gid, follow_symlinks=False)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


async def run_sandboxed(
    command: str | list[str],
    cwd: Path,
    *,
    timeout_s: float,
    output_limit: int,
    network: bool = False,
    limits: SandboxLimits | None = None,
    extra_env: dict[str, str] | None = None,
    run_as: tuple[int, int] | None = None,
) -> CommandResult:
    """Run ``command`` (a str goes through ``/bin/sh -c``) in ``cwd`` under the sandbox.

    ``cwd`` must be writable by the sandbox identity (``run_as``, else the shared sandbox user);
    :class:`~quarterdeck.agents.workspace.Workspace` arranges that. Never raises for anything the
    command does: failure, timeout and output flood are all reported in the result.
    """
    caps = await asyncio.to_thread(capabilities)
    ident = (run_as or await asyncio.to_thread(shared_identity)) if caps.root else None
    argv, kwargs, label = _build(command, caps, network, ident, limits or SandboxLimits())
    tmp = cwd / TMP_DIRNAME
    if tmp.is_symlink() or (tmp.exists() and not tmp.is_dir()):
        tmp.unlink()  # the command may have replaced it; only its own runs would suffer
    tmp.mkdir(exist_ok=True)
    if ident:
        os.chown(tmp, *ident, follow_symlinks=False)
    env = {
        "PATH": SAFE_PATH,
        "HOME": str(cwd),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "TMPDIR": str(tmp),
    }
    env.update(extra_env or {})
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        **kwargs,
    )
    capture = _Capture(output_limit)
    pumps = asyncio.gather(capture.pump("stdout", proc.stdout), capture.pump("stderr", proc.stderr))
    waiter = asyncio.ensure_future(proc.wait())
    flood = asyncio.ensure_future(capture.flooded.wait())
    timed_out = False
    try:
        await asyncio.wait({waiter, flood}, timeout=timeout_s, return_when="FIRST_COMPLETED")
        if not waiter.done():
            timed_out = not capture.flooded.is_set()
            await _kill_group(proc, waiter)
            await waiter
        # The shell may have exited while background children still hold the pipes: give them a
        # moment, then kill whatever is left so nothing outlives the call.
        remaining = max(0.0, timeout_s - (time.monotonic() - started))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(pumps), timeout=min(remaining, 1.0))
        await _kill_group(proc, waiter)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(pumps), timeout=1.0)
    finally:
        flood.cancel()
        if not waiter.done():
            await _kill_group(proc, waiter)
            waiter.cancel()
        pumps.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pumps
    stderr = capture.text("stderr")
    if capture.flooded.is_set() and not timed_out:
        stderr += f"\n[command killed: more than {KILL_AFTER_DISCARDED} bytes of output]"
    return CommandResult(
        exit_code=None if timed_out else proc.returncode,
        stdout=capture.text("stdout"),
        stderr=stderr,
        truncated=any(capture.omitted.values()),
        timed_out=timed_out,
        duration_s=time.monotonic() - started,
        isolation=label,
    )


def isolation_report() -> dict[str, Any]:
    """What each layer gives on this host, for operators and the README."""
    caps = capabilities()
    ident = shared_identity()
    return {
        "running_as_root": caps.root,
        "network_namespace": {
            "available": caps.netns,
            "via": "user namespace" if caps.userns else "unshare as root",
            "gives": "no network at all (loopback down); skipped when sandbox_network=true",
            "missing_because": None if caps.netns else caps.reason,
        },
        "pid_namespace": {
            "available": caps.pidns,
            "gives": "the command sees only its own processes; when it ends or times out the "
            "kernel kills every descendant, including ones that called setsid",
        },
        "privilege_drop": {
            "available": ident is not None,
            "gives": "command runs as a per-run unprivileged uid (shared user "
            f"{SANDBOX_USER!r} otherwise); RLIMIT_NPROC is enforced and root-owned files "
            "are protected",
        },
        "no_new_privs": {"available": caps.setpriv is not None},
        "rlimits": {
            "via": "prlimit" if caps.prlimit else "preexec_fn",
            "defaults": vars(SandboxLimits()),
        },
        "always": [
            "environment rebuilt from PATH/HOME/LANG/TERM/TMPDIR only",
            "own session; the process group is SIGKILLed on timeout",
            "stdout+stderr capped; a flood beyond 64 MiB kills the command",
        ],
        "not_provided": [
            "no filesystem isolation: the command can read anything world-readable on the host",
            "no seccomp syscall filter, no cgroup memory/CPU-share limits",
            "the kernel is shared: a kernel exploit escapes everything above",
        ],
    }
