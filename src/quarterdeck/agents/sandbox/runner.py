"""Run one shell command for an agent, contained by the mode this host gives.

The model decides what runs here, so every command is treated as hostile. This module spawns the
argv that :mod:`.bwrap` (strong) or :mod:`.weak` built, with an environment rebuilt from a tiny
allowlist (no parent variable -- API keys, database URLs, ``QUARTERDECK_*`` -- ever reaches the
command), reads its output incrementally under a cap, kills the whole tree on timeout or output
flood, and kills it too when the workspace grows past its size limit. Everything is spawned with
``exec`` (no ``preexec_fn`` unless prlimit is missing), which is safe from a multi-threaded worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quarterdeck.agents.sandbox.bwrap import (
    Bridge,
    Mount,
    account_files,
    build_argv,
    egress_env,
    inside_ids,
)
from quarterdeck.agents.sandbox.identity import shared_identity
from quarterdeck.agents.sandbox.probe import (
    Capabilities,
    bwrap_inputs,
    capabilities,
    current_config,
    select_mode,
)
from quarterdeck.agents.sandbox.spec import (
    KILL_AFTER_DISCARDED,
    SAFE_PATH,
    TMP_DIRNAME,
    CommandResult,
    Mode,
    SandboxLimits,
    prlimit_argv,
    rlimit_pairs,
)
from quarterdeck.agents.sandbox.usage import disk_usage
from quarterdeck.agents.sandbox.weak import build_weak
from quarterdeck.exceptions import ConfigError

_CHUNK = 64 * 1024
WATCH_INTERVAL_S = 0.1
"""How often the workspace is measured while a command runs (at least; 10x the time one
measurement takes, so a huge workspace does not cost a core)."""


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


def group_alive(pgid: int) -> bool:
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


async def kill_group(proc: asyncio.subprocess.Process, waiter: asyncio.Future[int]) -> None:
    """SIGKILL the whole process group and reap its leader, repeating until no live member is
    left (a fork racing the first signal can add one). Bounded to about a second. In bwrap mode
    the group is bwrap itself: its child dies with it (``--die-with-parent``) and takes the whole
    PID namespace along."""
    for attempt in range(50):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        if attempt == 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(waiter), timeout=0.5)
        if not group_alive(proc.pid):
            return
        await asyncio.sleep(0.02)


def _data_fd(content: bytes) -> int:
    """A pipe's read end holding ``content`` (small: it fits the pipe buffer)."""
    read, write = os.pipe()
    try:
        os.write(write, content)
    finally:
        os.close(write)
    return read


def _bwrap_label(
    caps: Capabilities, ident: tuple[int, int] | None, egress: bool, ports: Sequence[int] = ()
) -> str:
    parts = ["bwrap", "fsview", "netns", "pidns", "ipcns", "utsns"]
    parts += ["uid"] if caps.root else ["userns"]
    parts += ["rlimits", "nnp"]
    if egress:
        notes = ["network: egress proxy only"]
    elif ports:
        notes = [f"network: none but loopback ports {', '.join(map(str, ports))} bridged out"]
    else:
        notes = ["network: none"]
    if not caps.root:
        notes.append("host uid is the worker's own (not root: no per-run uid)")
    return "+".join(parts) + f" ({'; '.join(notes)})"


def sandbox_env(
    cwd: Path, ident: tuple[int, int] | None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The whole environment of a sandboxed process: a tiny allowlist (nothing of the worker's:
    API keys, database URLs, ``QUARTERDECK_*``), ``HOME`` the workspace, ``TMPDIR`` the
    workspace's own tmp dir (made here, owned by ``ident``), then ``extra`` on top."""
    tmp = cwd / TMP_DIRNAME
    if tmp.is_symlink() or (tmp.exists() and not tmp.is_dir()):
        tmp.unlink()  # the command may have replaced it; only its own runs would suffer
    tmp.mkdir(exist_ok=True)
    if ident:
        os.chown(tmp, *ident, follow_symlinks=False)
    env = {"PATH": SAFE_PATH, "HOME": str(cwd), "LANG": "C.UTF-8", "TERM": "dumb"}
    env["TMPDIR"] = str(tmp)
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class BwrapLaunch:
    """What spawning one bwrap sandbox takes: its argv, the fds it reads the synthesized
    account files from (pass them to the child, close them after the spawn) and its label."""

    argv: list[str]
    fds: dict[str, int]
    label: str


def bwrap_launch(
    caps: Capabilities,
    cwd: Path,
    ident: tuple[int, int] | None,
    limits: SandboxLimits | None,
    inner: Sequence[str],
    *,
    egress_socket: Path | None = None,
    mounts: Sequence[Mount] = (),
    bridges: Sequence[Bridge] = (),
) -> BwrapLaunch:
    """``inner`` under prlimit inside bwrap: the one way both a command (:func:`run_sandboxed`)
    and a long-lived agent (:mod:`.session`) are put in the strong sandbox."""
    uid, gid = inside_ids(caps.root, ident)
    fds = {dest: _data_fd(data) for dest, data in account_files(uid, gid, str(cwd)).items()}
    rlimits = rlimit_pairs(limits or SandboxLimits())
    limited = [*prlimit_argv(caps.prlimit or "prlimit", rlimits), *inner]
    inputs = bwrap_inputs(
        caps, cwd, ident, current_config().tmp_bytes, fds, egress_socket, mounts, bridges
    )
    label = _bwrap_label(caps, ident, egress_socket is not None, [b.port for b in bridges])
    return BwrapLaunch(build_argv(inputs, limited), fds, label)


async def watch_workspace(cwd: Path, ceiling: int) -> int:
    """Returns (ending the wait) only when the workspace grows above ``ceiling``."""
    spent = 0.0
    while True:
        await asyncio.sleep(max(WATCH_INTERVAL_S, 10 * spent))
        started = time.monotonic()
        used = await asyncio.to_thread(disk_usage, str(cwd), ceiling)
        if used > ceiling:
            return used
        spent = time.monotonic() - started


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
    egress_socket: Path | None = None,
    mode: Mode | str | None = None,
    workspace_limit: int | None = None,
) -> CommandResult:
    """Run ``command`` (a str goes through ``/bin/sh -c``) in ``cwd`` under the sandbox.

    ``cwd`` must be writable by the sandbox identity (``run_as``, else the shared sandbox user);
    :class:`~quarterdeck.agents.workspace.Workspace` arranges that. ``mode`` and
    ``workspace_limit`` default to the configured ones (:func:`.probe.configure`).
    ``egress_socket`` (bwrap mode only) is a unix socket that appears inside as
    ``/run/quarterdeck/egress.sock``, bridged to ``127.0.0.1:3128``, with ``HTTP(S)_PROXY`` set to
    it; it must be connectable by the run's uid. Never raises for anything the command does:
    failure, timeout, output flood and a too-big workspace are all reported in the result.
    """
    caps = await asyncio.to_thread(capabilities)
    chosen = select_mode(mode)
    config = current_config()
    ident = (run_as or await asyncio.to_thread(shared_identity)) if caps.root else None
    inner = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
    env = sandbox_env(cwd, ident, extra_env)
    kwargs: dict[str, Any] = {}
    fds: dict[str, int] = {}
    if egress_socket is not None:
        if chosen is not Mode.BWRAP:
            raise ConfigError([("QUARTERDECK_SANDBOX_MODE", f"egress needs bwrap, not {chosen}")])
        if caps.socat is None:
            raise ConfigError([("socat", "the egress bridge needs socat (apt-get install socat)")])
        env.update(egress_env())
    if chosen is Mode.BWRAP:
        launch = bwrap_launch(caps, cwd, ident, limits, inner, egress_socket=egress_socket)
        argv, fds, label = launch.argv, launch.fds, launch.label
        kwargs["pass_fds"] = tuple(fds.values())
        if network:
            label += " [sandbox_network ignored: in bwrap mode the network is off or egress-only]"
    else:
        rlimits = rlimit_pairs(limits or SandboxLimits())
        argv, kwargs, label = build_weak(chosen, inner, caps, network, ident, rlimits)
    limit = workspace_limit if workspace_limit is not None else config.workspace_bytes
    ceiling = max(limit, await asyncio.to_thread(disk_usage, str(cwd)))
    started = time.monotonic()
    try:
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
    finally:
        for fd in fds.values():
            os.close(fd)
    capture = _Capture(output_limit)
    pumps = asyncio.gather(capture.pump("stdout", proc.stdout), capture.pump("stderr", proc.stderr))
    waiter = asyncio.ensure_future(proc.wait())
    flood = asyncio.ensure_future(capture.flooded.wait())
    watch = asyncio.ensure_future(watch_workspace(cwd, ceiling))
    timed_out = False
    try:
        await asyncio.wait({waiter, flood, watch}, timeout=timeout_s, return_when="FIRST_COMPLETED")
        if not waiter.done():
            timed_out = not capture.flooded.is_set() and not watch.done()
            await kill_group(proc, waiter)
            await waiter
        # The shell may have exited while background children still hold the pipes: give them a
        # moment, then kill whatever is left so nothing outlives the call.
        remaining = max(0.0, timeout_s - (time.monotonic() - started))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(pumps), timeout=min(remaining, 1.0))
        await kill_group(proc, waiter)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(pumps), timeout=1.0)
    finally:
        flood.cancel()
        watch.cancel()
        if not waiter.done():
            await kill_group(proc, waiter)
            waiter.cancel()
        pumps.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pumps
    stderr = capture.text("stderr")
    if capture.flooded.is_set() and not timed_out:
        stderr += f"\n[command killed: more than {KILL_AFTER_DISCARDED} bytes of output]"
    used = await asyncio.to_thread(disk_usage, str(cwd), ceiling)
    exceeded = used > ceiling
    if exceeded:
        stderr += (
            f"\n[workspace over its size limit of {limit} bytes"
            f"{' (command killed)' if watch.done() and not watch.cancelled() else ''}:"
            " delete files before writing more]"
        )
    return CommandResult(
        exit_code=None if timed_out else proc.returncode,
        stdout=capture.text("stdout"),
        stderr=stderr,
        truncated=any(capture.omitted.values()),
        timed_out=timed_out,
        duration_s=time.monotonic() - started,
        isolation=label,
        mode=chosen,
        workspace_exceeded=exceeded,
    )
