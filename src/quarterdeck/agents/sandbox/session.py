"""A long-lived process in the strong sandbox: an external agent (Claude Code) for a whole run.

:func:`.runner.run_sandboxed` runs one short command and hands back what it printed. An agent
CLI is different: it lives as long as the run, the caller reads its stdout line by line as it
comes (stream-json), it reaches worker-served Unix sockets (the gateway through a loopback
:class:`~.bwrap.Bridge`, the policy gate through a :class:`~.bwrap.Mount`), and on cancel its whole
process tree must be gone within two seconds. Everything else is the same sandbox as a command's,
built by the same code (:func:`.runner.bwrap_launch`, :func:`.runner.sandbox_env`): namespaces, the
``/etc`` view, synthesized accounts, rlimits, the uid drop, an environment rebuilt from the
allowlist. Only the bwrap mode will do: the weaker modes show the host's files and network, which
a process the model steers for a whole run must not see.

Nothing started here outlives :func:`open_sandboxed`'s context, however it is left (normally,
by an exception, by cancellation): bwrap is the group leader and PID 1's parent of a private PID
namespace, so killing bwrap and the namespace's init ends every process the agent started,
``setsid`` or not; the exit waits until none is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from quarterdeck.agents.sandbox.bwrap import Bridge, Mount, layout_problems
from quarterdeck.agents.sandbox.identity import shared_identity
from quarterdeck.agents.sandbox.probe import (
    MODE_SETTING,
    capabilities,
    current_config,
    select_mode,
)
from quarterdeck.agents.sandbox.runner import (
    bwrap_launch,
    kill_group,
    sandbox_env,
    watch_workspace,
)
from quarterdeck.agents.sandbox.spec import Mode, SandboxLimits
from quarterdeck.agents.sandbox.usage import disk_usage
from quarterdeck.exceptions import ConfigError

__all__ = ["Bridge", "Mount", "SandboxProcess", "open_sandboxed"]

STDOUT_LINE_LIMIT = 32 * 1024 * 1024
"""Longest stdout line :meth:`asyncio.StreamReader.readline` accepts: one stream-json event
carries a whole tool result (a file read, a command's output)."""
STDERR_TAIL_BYTES = 64 * 1024
TREE_DEADLINE_S = 1.0
"""How long :meth:`SandboxProcess.kill` waits, after the group kill, for the PID namespace's
members to be gone (the kernel tears it down when its init dies; this is only the wait)."""


class SandboxProcess:
    """One running sandboxed process. ``stdout`` is the caller's to read (``readline``); stderr
    is drained in the background (so the process never blocks on it) and its tail kept for
    error reports. ``workspace_exceeded`` is set when the process was killed because the
    workspace grew past its size limit."""

    def __init__(self, proc: asyncio.subprocess.Process, isolation: str) -> None:
        if proc.stdout is None or proc.stderr is None:  # pragma: no cover - spawned with PIPEs
            raise RuntimeError("a sandboxed process needs its stdout and stderr piped")
        self._proc = proc
        self.pid = proc.pid
        self.stdout: asyncio.StreamReader = proc.stdout
        self.isolation = isolation
        self.workspace_exceeded = False
        self._waiter: asyncio.Future[int] = asyncio.ensure_future(proc.wait())
        self._stderr = bytearray()
        self._stderr_pump = asyncio.ensure_future(self._pump(proc.stderr))

    @property
    def returncode(self) -> int | None:
        """The exit status once it exited (negative: killed by that signal), else None."""
        return self._proc.returncode

    def stderr_tail(self) -> str:
        """The last :data:`STDERR_TAIL_BYTES` of stderr, as text."""
        return bytes(self._stderr).decode("utf-8", errors="replace")

    async def wait(self) -> int:
        return await asyncio.shield(self._waiter)

    async def kill(self) -> None:
        """SIGKILL the whole tree and reap it; returns once no live member is left (or after
        about 2 s at worst). Safe to call again, and after the process exited."""
        if self._waiter.done():  # bwrap is reaped: its namespace, and all in it, went with it
            return
        tree = _descendants(self.pid)
        with contextlib.suppress(OSError):  # bwrap first: its status reads "killed" (-9)
            os.killpg(self.pid, signal.SIGKILL)
        for pid, _ in tree:  # the namespace's init first: the kernel then kills the rest
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        await kill_group(self._proc, self._waiter)
        deadline = time.monotonic() + TREE_DEADLINE_S
        while any(_alive(pid, start) for pid, start in tree) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._waiter), timeout=0.5)

    async def _pump(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(64 * 1024):
            self._stderr += chunk
            if len(self._stderr) > STDERR_TAIL_BYTES:
                del self._stderr[:-STDERR_TAIL_BYTES]

    async def _watch(self, cwd: Path, ceiling: int) -> None:
        """Kill the process when the workspace grows past ``ceiling``; ends when it exits."""
        watcher = asyncio.ensure_future(watch_workspace(cwd, ceiling))
        try:
            await asyncio.wait({watcher, self._waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if not self._waiter.done():
            self.workspace_exceeded = True
            await self.kill()

    async def _close(self) -> None:
        """Kill what is left, then drain both pipes to their end (bounded) so the transport
        closes instead of lingering with unread data."""
        await self.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._stderr_pump), timeout=0.5)
        self._stderr_pump.cancel()
        with contextlib.suppress(TimeoutError, RuntimeError):  # RuntimeError: another reader
            async with asyncio.timeout(0.5):
                while await self.stdout.read(64 * 1024):
                    pass


def _stat(pid: int) -> tuple[int, bytes, bytes] | None:
    """(ppid, state, start time) of a process, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0], fields[19]


def _descendants(root: int) -> list[tuple[int, bytes]]:
    """(pid, start time) of every process below ``root``, nearest first. In the PID namespace
    bwrap made, reparenting keeps orphans under its init, so this is the whole namespace."""
    children: dict[int, list[tuple[int, bytes]]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            children.setdefault(st[0], []).append((int(entry.name), st[2]))
    out: list[tuple[int, bytes]] = []
    frontier = [root]
    while frontier:
        below = [c for pid in frontier for c in children.get(pid, [])]
        out += below
        frontier = [pid for pid, _ in below]
    return out


def _alive(pid: int, start: bytes) -> bool:
    st = _stat(pid)
    return st is not None and st[2] == start and st[1] not in (b"Z", b"X")


async def _uncancellable(work: Awaitable[None]) -> None:
    """Finish ``work`` even when the caller is cancelled (again) meanwhile; then re-raise the
    cancellation. A half-done kill would leave the agent running."""
    task = asyncio.ensure_future(work)
    interrupted = False
    while True:
        try:
            await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            interrupted = True
    if interrupted:
        raise asyncio.CancelledError


def _check(
    cwd: Path, argv: Sequence[str], mounts: Sequence[Mount], bridges: Sequence[Bridge]
) -> None:
    caps = capabilities()
    chosen = select_mode()
    if chosen is not Mode.BWRAP:
        why = caps.modes.get(Mode.BWRAP) or f"the configured mode is {chosen}"
        raise ConfigError(
            [(MODE_SETTING, f"an agent process needs the bwrap sandbox, not {chosen}: {why}")]
        )
    problems = layout_problems(str(cwd), mounts, bridges)
    if not argv:
        problems.append(("argv", "no command to run"))
    if bridges and caps.socat is None:
        problems.append(("socat", "a bridge needs socat (apt-get install socat)"))
    missing = [("mounts", m.source) for m in mounts] + [("bridges", b.socket) for b in bridges]
    problems += [
        (name, f"{path} does not exist") for name, path in missing if not Path(path).exists()
    ]
    if problems:
        raise ConfigError(problems)


@asynccontextmanager
async def open_sandboxed(
    argv: Sequence[str],
    cwd: Path,
    *,
    env: Mapping[str, str],
    run_as: tuple[int, int] | None,
    limits: SandboxLimits,
    mounts: Sequence[Mount] = (),
    bridges: Sequence[Bridge] = (),
    workspace_limit: int | None = None,
) -> AsyncIterator[SandboxProcess]:
    """Start ``argv`` in ``cwd`` (the run's workspace, read-write at its host path) in the bwrap
    sandbox and yield it while it runs; leaving the context kills whatever is left.

    ``env`` goes on top of the allowlist (it may set ``HOME``); nothing of the worker's own
    environment is passed. ``run_as`` is the run's uid and gid (a root worker drops to it; when
    None, the shared sandbox user); a non-root worker cannot change uid, the user namespace maps
    it to uid 1000 inside. Each bridge's socket appears inside at
    ``/run/quarterdeck/bridge-<port>.sock`` and is served on ``127.0.0.1:<port>`` before ``argv``
    starts. ``workspace_limit`` (default: the configured one) kills the process when the
    workspace grows past it. Raises ConfigError when this host has no bwrap sandbox (or socat for
    a bridge), or a mount or bridge cannot be honoured.
    """
    await asyncio.to_thread(_check, cwd, argv, mounts, bridges)
    caps = capabilities()
    ident = (run_as or await asyncio.to_thread(shared_identity)) if caps.root else None
    full_env = sandbox_env(cwd, ident, env)
    limit = workspace_limit if workspace_limit is not None else current_config().workspace_bytes
    ceiling = max(limit, await asyncio.to_thread(disk_usage, str(cwd)))
    launch = bwrap_launch(caps, cwd, ident, limits, list(argv), mounts=mounts, bridges=bridges)
    try:
        proc = await asyncio.create_subprocess_exec(
            *launch.argv,
            cwd=cwd,
            env=full_env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            pass_fds=tuple(launch.fds.values()),
            limit=STDOUT_LINE_LIMIT,
        )
    finally:
        for fd in launch.fds.values():
            os.close(fd)
    process = SandboxProcess(proc, launch.label)
    watch = asyncio.ensure_future(process._watch(cwd, ceiling))
    try:
        yield process
    finally:
        watch.cancel()
        await _uncancellable(_finish(process, watch))


async def _finish(process: SandboxProcess, watch: asyncio.Future[None]) -> None:
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await watch
    await process._close()
