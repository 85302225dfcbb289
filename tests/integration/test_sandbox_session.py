"""open_sandboxed against real bubblewrap, socat and subprocesses: a long-lived agent process
streams its stdout, reaches worker-served unix sockets through bridges and mounts, sees nothing
of the worker's environment, and leaves no process behind however its context is left. One test
runs the same as an unprivileged worker (uid 65534, the user-namespace shape)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from quarterdeck.agents import sandbox
from quarterdeck.agents.sandbox import (
    Bridge,
    Mode,
    Mount,
    SandboxConfig,
    SandboxLimits,
    capabilities,
    open_sandboxed,
    prepare_dir,
    shared_identity,
)
from quarterdeck.exceptions import ConfigError
from tests.integration.test_sandbox import live_processes

ROOT = os.geteuid() == 0
pytestmark = pytest.mark.skipif(
    not capabilities().available(Mode.BWRAP) or shutil.which("socat") is None,
    reason=f"needs bwrap and socat: {capabilities().modes[Mode.BWRAP]}",
)
LIMITS = SandboxLimits()


@pytest.fixture
def cwd() -> Iterator[Path]:
    """A workspace the sandbox uid can write (as test_sandbox.py's)."""
    path = Path(tempfile.mkdtemp(prefix="qd-sess-", dir="/tmp"))
    path.chmod(0o755)
    prepare_dir(path, shared_identity())
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """Where the worker-side unix servers listen (traversable by the sandbox uid)."""
    path = Path(tempfile.mkdtemp(prefix="qd-sess-sock-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
async def _default_config() -> AsyncIterator[None]:
    sandbox.configure(SandboxConfig())
    yield
    sandbox.configure(SandboxConfig())


def is_dir(path: str) -> bool:
    """Sync helper (instant on a local disk), as in test_sandbox.py."""
    return Path(path).is_dir()


async def echo_server(path: Path) -> asyncio.Server:
    """A worker-side unix server answering each line with ``echo:<line>``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        writer.write(b"echo:" + line)
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(handle, path=str(path))
    os.chmod(path, 0o666)  # the sandbox's uid connects to it
    return server


async def until_live(argv: list[str], count: int) -> None:
    """Wait until ``count`` processes run ``argv`` (a backgrounded child execs a moment after
    the shell moved on)."""
    for _ in range(200):
        if len(live_processes(argv)) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{argv} never reached {count} processes")


def tcp_client(port: int, text: str) -> str:
    return (
        "python3 -c \"import socket; s = socket.create_connection(('127.0.0.1', "
        f"{port}), 5); s.sendall(b'{text}\\n'); print(s.makefile().readline().strip())\""
    )


async def test_a_process_reaches_a_worker_unix_server_through_a_bridge(
    cwd: Path, sock_dir: Path
) -> None:
    server = await echo_server(sock_dir / "gateway.sock")
    script = f"{tcp_client(41001, 'via-bridge')}; ls -l /run/quarterdeck/ | grep -c bridge-41001"
    try:
        bridge = Bridge(port=41001, socket=sock_dir / "gateway.sock")
        async with open_sandboxed(
            ["/bin/sh", "-c", script], cwd, env={}, run_as=None, limits=LIMITS, bridges=[bridge]
        ) as proc:
            assert await proc.wait() == 0, proc.stderr_tail()
            out = (await proc.stdout.read()).decode().splitlines()
    finally:
        server.close()
    assert out == ["echo:via-bridge", "1"], proc.stderr_tail()
    assert proc.isolation.startswith("bwrap+")
    assert "loopback ports 41001 bridged out" in proc.isolation
    assert live_processes(["/usr/bin/socat"]) == []  # no bridge outlives the context


async def test_stdout_lines_arrive_while_the_process_runs(cwd: Path) -> None:
    started = time.monotonic()
    async with open_sandboxed(
        ["/bin/sh", "-c", "echo first; sleep 30; echo never"],
        cwd,
        env={},
        run_as=None,
        limits=LIMITS,
    ) as proc:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=5)
        assert line == b"first\n"
        assert proc.returncode is None  # streamed, not collected at exit
    assert time.monotonic() - started < 5  # leaving the context killed the sleep at once
    assert proc.returncode == -9


async def test_a_line_of_twenty_mebibytes_is_read_whole(cwd: Path) -> None:
    """One stream-json event can carry a whole file: readline must not give up at 64 KiB."""
    script = "head -c 20000000 /dev/zero | tr '\\0' a; echo; echo next"
    async with open_sandboxed(
        ["/bin/sh", "-c", script], cwd, env={}, run_as=None, limits=LIMITS
    ) as proc:
        line = await proc.stdout.readline()
        assert len(line) == 20_000_001 and line.endswith(b"a\n")
        assert await proc.stdout.readline() == b"next\n"


async def test_kill_ends_the_whole_tree_within_two_seconds(cwd: Path) -> None:
    script = "sleep 1017 & setsid sleep 1017 & echo ready; wait"
    async with open_sandboxed(
        ["/bin/sh", "-c", script], cwd, env={}, run_as=None, limits=LIMITS
    ) as proc:
        assert await proc.stdout.readline() == b"ready\n"
        await until_live(["sleep", "1017"], 2)
        started = time.monotonic()
        await proc.kill()
        elapsed = time.monotonic() - started
        assert live_processes(["sleep", "1017"]) == []
        assert elapsed < 2.0
        assert proc.returncode == -9
        await proc.kill()  # a second kill is harmless


@pytest.mark.parametrize("how", ["cancel", "exception"])
async def test_leaving_the_context_kills_everything(cwd: Path, how: str) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def agent() -> None:
        async with open_sandboxed(
            ["/bin/sh", "-c", "sleep 1018 & sleep 1018 & echo up; wait"],
            cwd,
            env={},
            run_as=None,
            limits=LIMITS,
        ) as proc:
            await proc.stdout.readline()
            started.set()
            await release.wait()
            raise RuntimeError("the runner failed")

    task = asyncio.ensure_future(agent())
    await asyncio.wait_for(started.wait(), timeout=5)
    await until_live(["sleep", "1018"], 2)
    began = time.monotonic()
    if how == "cancel":
        task.cancel()
    else:
        release.set()
    with pytest.raises(asyncio.CancelledError if how == "cancel" else RuntimeError):
        await task
    assert time.monotonic() - began < 2.0
    assert live_processes(["sleep", "1018"]) == []


async def test_a_writable_mount_of_a_unix_socket_is_connectable(cwd: Path, sock_dir: Path) -> None:
    server = await echo_server(sock_dir / "gate.sock")
    shared = sock_dir / "shared"
    shared.mkdir()
    (shared / "note.txt").write_text("read-only note\n")
    shared.chmod(0o755)
    script = (
        'python3 -c "import socket; s = socket.socket(socket.AF_UNIX);'
        " s.connect('/run/qd-test/gate.sock'); s.sendall(b'via-mount\\n');"
        ' print(s.makefile().readline().strip())"; '
        "cat /opt/qd-shared/note.txt; touch /opt/qd-shared/new 2>/dev/null; echo touch=$?"
    )
    mounts = [
        Mount(source=sock_dir / "gate.sock", target="/run/qd-test/gate.sock", writable=True),
        Mount(source=shared, target="/opt/qd-shared"),
    ]
    try:
        async with open_sandboxed(
            ["/bin/sh", "-c", script], cwd, env={}, run_as=None, limits=LIMITS, mounts=mounts
        ) as proc:
            await proc.wait()
            out = (await proc.stdout.read()).decode().splitlines()
    finally:
        server.close()
    assert out == ["echo:via-mount", "read-only note", "touch=1"], proc.stderr_tail()
    assert not (shared / "new").exists()


async def test_the_environment_holds_nothing_of_the_workers(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUARTERDECK_SECRET", "qd-session-secret-41")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-session-secret")
    home = cwd / ".quarterdeck-agent"
    home.mkdir()
    script = "env; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'; cat < /dev/stdin"
    async with open_sandboxed(
        ["/bin/sh", "-c", script],
        cwd,
        env={"HOME": str(home), "CLAUDE_CONFIG_DIR": str(home)},
        run_as=None,
        limits=LIMITS,
    ) as proc:
        assert await proc.wait() == 0  # stdin is /dev/null: cat ends at once
        text = (await proc.stdout.read()).decode()
    assert "qd-session-secret-41" not in text and "sk-ant-session-secret" not in text
    env = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    assert env["HOME"] == str(home) and env["CLAUDE_CONFIG_DIR"] == str(home)
    assert env["TMPDIR"] == str(cwd / ".sandbox-tmp") and is_dir(env["TMPDIR"])
    assert env["PATH"] == sandbox.SAFE_PATH
    assert set(env) <= {
        *("PATH", "HOME", "LANG", "TERM", "TMPDIR", "CLAUDE_CONFIG_DIR"),
        *("PWD", "SHLVL", "OLDPWD", "_"),
    }


async def test_exit_status_and_the_tail_of_stderr(cwd: Path) -> None:
    script = "head -c 100000 /dev/zero | tr '\\0' x >&2; echo end >&2; exit 3"
    async with open_sandboxed(
        ["/bin/sh", "-c", script], cwd, env={}, run_as=None, limits=LIMITS
    ) as proc:
        assert await proc.wait() == 3
    tail = proc.stderr_tail()
    assert tail.endswith("xend\n") and set(tail[:-4]) == {"x"}
    assert len(tail) == 64 * 1024


async def test_a_workspace_over_its_limit_kills_the_process(cwd: Path) -> None:
    script = "head -c 3000000 /dev/zero > big; echo written; sleep 30"
    started = time.monotonic()
    async with open_sandboxed(
        ["/bin/sh", "-c", script],
        cwd,
        env={},
        run_as=None,
        limits=LIMITS,
        workspace_limit=1_000_000,
    ) as proc:
        assert await asyncio.wait_for(proc.wait(), timeout=5) == -9
    assert proc.workspace_exceeded
    assert time.monotonic() - started < 5


async def test_only_the_bwrap_sandbox_will_do_and_bad_layouts_are_refused(
    cwd: Path, sock_dir: Path
) -> None:
    sandbox.configure(SandboxConfig(mode="rlimits"))
    with pytest.raises(ConfigError, match="needs the bwrap sandbox"):
        async with open_sandboxed(["true"], cwd, env={}, run_as=None, limits=LIMITS):
            pass
    sandbox.configure(SandboxConfig())
    bad = [Bridge(80, sock_dir / "missing.sock")]
    with pytest.raises(ConfigError) as caught:
        async with open_sandboxed(["true"], cwd, env={}, run_as=None, limits=LIMITS, bridges=bad):
            pass
    reasons = " | ".join(reason for _, reason in caught.value.errors)
    assert "port 80 is not in 1024..65535" in reasons and "missing.sock does not exist" in reasons


# -- as an unprivileged worker --------------------------------------------------------------------

CHILD = r"""
import asyncio, json, os, sys, time
from pathlib import Path
from quarterdeck.agents.sandbox import Bridge, SandboxLimits, open_sandboxed

def live(fragment):
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if cmd == fragment and state not in (b"Z", b"X"):
            found.append(pid)
    return found

async def main():
    work = Path(sys.argv[2])
    sock = work / "gateway.sock"
    async def handle(reader, writer):
        writer.write(b"echo:" + await reader.readline())
        await writer.drain()
        writer.close()
    server = await asyncio.start_unix_server(handle, path=str(sock))
    ws = work / "ws"
    ws.mkdir()
    script = sys.argv[1] + "; id -u; env; sleep 1019 & sleep 1019 & wait"
    out = {"uid": os.getuid()}
    async with open_sandboxed(["/bin/sh", "-c", script], ws, env={}, run_as=None,
                              limits=SandboxLimits(), bridges=[Bridge(41002, sock)]) as proc:
        out["lines"] = [(await proc.stdout.readline()).decode().strip() for _ in range(2)]
        out["env"] = []
        while len(live(b"sleep\0" + b"1019\0")) < 2:
            line = await asyncio.wait_for(proc.stdout.readline(), 5)
            out["env"].append(line.decode())
        started = time.monotonic()
        await proc.kill()
        out["kill_s"] = time.monotonic() - started
        out["isolation"] = proc.isolation
        out["stderr"] = proc.stderr_tail()
    out["left"] = live(b"sleep\0" + b"1019\0")
    server.close()
    print(json.dumps(out))

asyncio.run(main())
"""


# As root: a private mount namespace where /root shows only .pyenv (the venv's interpreter lives
# there on this box), staged at $1, then the rest of the argv (the uid drop and the child).
MOUNT_WRAPPER = r"""
set -e
stage="$1"; shift
if [ -d /root/.pyenv ]; then
  mount --bind /root/.pyenv "$stage"
  mount -t tmpfs -o mode=0755 tmpfs /root
  mkdir /root/.pyenv
  mount --bind "$stage" /root/.pyenv
fi
exec "$@"
"""


def test_an_unprivileged_worker_gets_the_same_session() -> None:
    """The worker as uid 65534 (a developer's ``make up``): bwrap in a user namespace, the
    bridge, the kill, the scrubbed environment, as for root (the same shape as the hostile
    suite's ``unprivileged`` context)."""
    work = Path(tempfile.mkdtemp(prefix="qd-sess-nonroot-", dir="/tmp"))
    stage = Path(tempfile.mkdtemp(prefix="qd-sess-stage-", dir="/tmp"))
    work.chmod(0o755)
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"] if ROOT else []
    child = [*prefix, sys.executable, "-c", CHILD, tcp_client(41002, "unprivileged"), str(work)]
    argv = child
    if ROOT:
        os.chown(work, 65534, 65534)
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", MOUNT_WRAPPER]
        argv += ["sh", str(stage), *child]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "QUARTERDECK_SECRET": "qd-nr-41"}
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, cwd="/")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        stage.rmdir()
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["uid"] == (65534 if ROOT else os.getuid())
    assert out["lines"] == ["echo:unprivileged", "1000"], out["stderr"]  # inside: userns uid
    assert "userns" in out["isolation"].split(" ")[0].split("+")
    assert not any("qd-nr-41" in line for line in out["env"])
    assert out["kill_s"] < 2.0 and out["left"] == []
