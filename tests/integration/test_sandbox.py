"""run_sandboxed against real subprocesses: hostile commands must be contained, not trusted."""

from __future__ import annotations

import os
import resource
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from quarterdeck.agents.sandbox import (
    SandboxLimits,
    capabilities,
    isolation_report,
    prepare_dir,
    run_sandboxed,
    shared_identity,
)

ROOT = os.geteuid() == 0


def exists(path: str) -> bool:
    """Whether a host path exists (sync helper: the check is instant)."""
    return Path(path).exists()


@pytest.fixture
def cwd() -> Iterator[Path]:
    """A world-traversable dir (the sandbox uid must reach it), owned by the sandbox user."""
    path = Path(tempfile.mkdtemp(prefix="qd-sbx-", dir="/tmp"))
    path.chmod(0o755)
    prepare_dir(path, shared_identity())
    yield path
    shutil.rmtree(path, ignore_errors=True)


def live_processes(argv: list[str]) -> list[int]:
    """PIDs of non-zombie processes whose command line is exactly ``argv``."""
    wanted = ("\0".join(argv) + "\0").encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if cmdline == wanted and state not in (b"Z", b"X"):
            found.append(int(entry))
    return found


async def test_exit_code_and_streams(cwd: Path) -> None:
    result = await run_sandboxed(
        "echo out; echo err >&2; exit 3", cwd, timeout_s=10, output_limit=10_000
    )
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert not result.timed_out and not result.truncated
    assert "rlimits" in result.isolation


async def test_environment_is_scrubbed(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "ANTHROPIC_API_KEY": "sk-ant-secret",
        "POSTGRES_URL": "postgresql://u:pw@db/x",
        "REDIS_URL": "redis://:pw@r",
        "QUARTERDECK_ADMIN_API_KEY": "admin-secret",
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
        "SOME_OTHER_VAR": "other",
    }
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    result = await run_sandboxed("env", cwd, timeout_s=10, output_limit=100_000)
    assert result.exit_code == 0
    env = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    for key, value in secrets.items():
        assert key not in env
        assert value not in result.stdout
    assert set(env) <= {"PATH", "HOME", "LANG", "TERM", "TMPDIR", "PWD", "SHLVL", "OLDPWD", "_"}
    assert env["HOME"] == str(cwd)
    assert env["TMPDIR"].startswith(str(cwd))
    assert env["TERM"] == "dumb"


@pytest.mark.skipif(not ROOT, reason="privilege drop needs root")
async def test_runs_unprivileged(cwd: Path) -> None:
    result = await run_sandboxed(
        "id -u; touch mine; touch /etc/qd-should-not-exist", cwd, timeout_s=10, output_limit=10_000
    )
    assert result.stdout.splitlines()[0] != "0"
    assert (cwd / "mine").exists()  # the workspace is writable by the sandbox user...
    assert not exists("/etc/qd-should-not-exist")  # ...the host is not
    assert "uid" in result.isolation.split(" ")[0].split("+")


async def test_timeout_kills_the_whole_tree(cwd: Path) -> None:
    # One child backgrounded, one that escapes the process group with setsid.
    result = await run_sandboxed(
        "sleep 1000 & setsid sleep 1000 & sleep 1000", cwd, timeout_s=2, output_limit=10_000
    )
    assert result.timed_out
    assert result.exit_code is None
    survivors = live_processes(["sleep", "1000"])
    if capabilities().pidns:
        assert survivors == []
    else:  # without a PID namespace only the setsid escapee can outlive the process group
        assert len(survivors) <= 1
        for pid in survivors:
            os.kill(pid, 9)


async def test_output_flood_is_capped_and_memory_bounded(cwd: Path) -> None:
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = await run_sandboxed("yes | head -c 100000000", cwd, timeout_s=60, output_limit=10_000)
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert result.truncated
    assert not result.timed_out
    assert len(result.stdout) < 10_000 + 200
    assert "[output truncated:" in result.stdout
    assert (peak_after - peak_before) * 1024 < 64 * 1024**2  # ru_maxrss is in KiB


async def test_fork_bomb_is_contained(cwd: Path) -> None:
    result = await run_sandboxed(
        "bash -c ':(){ :|:& };:; sleep 2'",
        cwd,
        timeout_s=5,
        output_limit=10_000,
        limits=SandboxLimits(nproc=64),
    )
    assert result.exit_code is not None or result.timed_out
    # The host still works and nothing of the bomb is left running.
    follow_up = await run_sandboxed("echo alive", cwd, timeout_s=10, output_limit=1000)
    assert follow_up.stdout == "alive\n"
    assert live_processes(["bash", "-c", ":(){ :|:& };:; sleep 2"]) == []


@pytest.mark.skipif(not ROOT, reason="RLIMIT_NPROC is only enforced for a dropped uid")
async def test_process_limit_is_enforced(cwd: Path) -> None:
    result = await run_sandboxed(
        "for i in $(seq 40); do sleep 3 & done; wait",
        cwd,
        timeout_s=10,
        output_limit=10_000,
        limits=SandboxLimits(nproc=10),
    )
    assert "fork" in result.stderr.lower()


async def test_resource_limits(cwd: Path) -> None:
    result = await run_sandboxed(
        "ulimit -c; head -c 2000000 /dev/zero > big; echo rc=$?",
        cwd,
        timeout_s=10,
        output_limit=10_000,
        limits=SandboxLimits(file_size=1_000_000),
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "0"  # no core dumps
    assert lines[1] != "rc=0"  # SIGXFSZ / EFBIG
    assert (cwd / "big").stat().st_size <= 1_000_000


async def test_network_is_cut_off(cwd: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    port = listener.getsockname()[1]
    probe = f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 2)\""
    try:
        result = await run_sandboxed(probe, cwd, timeout_s=10, output_limit=10_000)
        if capabilities().netns:
            assert result.isolation.startswith("netns")
            assert result.exit_code != 0
            assert "unreachable" in result.stderr.lower() or "refused" in result.stderr.lower()
        else:
            assert "no network namespace" in result.isolation
        allowed = await run_sandboxed(probe, cwd, timeout_s=10, output_limit=10_000, network=True)
        assert allowed.exit_code == 0, allowed.stderr
        assert "network allowed by configuration" in allowed.isolation
    finally:
        listener.close()


async def test_argv_command_is_not_shell_interpreted(cwd: Path) -> None:
    result = await run_sandboxed(["echo", "$HOME;", "id"], cwd, timeout_s=10, output_limit=1000)
    assert result.stdout == "$HOME; id\n"


def test_isolation_report_is_honest() -> None:
    report = isolation_report()
    assert report["network_namespace"]["available"] == capabilities().netns
    assert report["running_as_root"] == ROOT
    assert any("filesystem" in item for item in report["not_provided"])
