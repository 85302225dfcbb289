"""run_sandboxed against real subprocesses, mode by mode: what each mode gives, and what it does
not. Every sentence of :data:`quarterdeck.agents.sandbox.report.GIVES` has a test here or in
``test_sandbox_hostile.py`` (which runs attacks as an agent would)."""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog

from quarterdeck.agents import sandbox
from quarterdeck.agents.sandbox import (
    Mode,
    SandboxConfig,
    SandboxLimits,
    capabilities,
    isolation_report,
    prepare_dir,
    run_sandboxed,
    shared_identity,
)
from quarterdeck.agents.sandbox.probe import python_prefixes
from quarterdeck.exceptions import ConfigError
from quarterdeck.monitoring.doctor import isolation_checks

ROOT = os.geteuid() == 0
MODES = [
    pytest.param(
        mode,
        id=str(mode),
        marks=pytest.mark.skipif(
            not capabilities().available(mode),
            reason=f"{mode} not available here: {capabilities().modes[mode]}",
        ),
    )
    for mode in (Mode.BWRAP, Mode.UNSHARE, Mode.RLIMITS)
]
needs_bwrap = pytest.mark.skipif(
    not capabilities().available(Mode.BWRAP),
    reason=f"bwrap not available here: {capabilities().modes[Mode.BWRAP]}",
)


def exists(path: str) -> bool:
    """Whether a host path exists (sync helpers like this one are instant on a local disk)."""
    return Path(path).exists()


def host_text(path: str) -> str:
    return Path(path).read_text()


def bytes_of(folder: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in folder.rglob(pattern))


def chmod(path: Path, mode: int) -> None:
    path.chmod(mode)


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


def processes_with(fragment: bytes) -> list[int]:
    """PIDs of live processes whose command line contains ``fragment``."""
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()):
        try:
            if fragment in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            continue
    return found


async def run(command: str | list[str], cwd: Path, mode: Mode | None = None, **kw: object):  # type: ignore[no-untyped-def]
    kw.setdefault("timeout_s", 10)
    kw.setdefault("output_limit", 100_000)
    return await run_sandboxed(command, cwd, mode=mode, **kw)  # type: ignore[arg-type]


# -- every mode ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_exit_code_streams_and_label(cwd: Path, mode: Mode) -> None:
    result = await run("echo out; echo err >&2; exit 3", cwd, mode)
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert not result.timed_out and not result.truncated
    assert result.mode is mode
    assert result.isolation.split("+")[0] == str(mode)
    assert "rlimits" in result.isolation.split(" ")[0].split("+")


@pytest.mark.parametrize("mode", MODES)
async def test_environment_is_scrubbed(
    cwd: Path, monkeypatch: pytest.MonkeyPatch, mode: Mode
) -> None:
    secrets = {
        "ANTHROPIC_API_KEY": "sk-ant-secret",
        "POSTGRES_URL": "postgresql://u:pw@db/x",
        "QUARTERDECK_ADMIN_API_KEY": "admin-secret",
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
    }
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    # The environment of every process the command can see, not only its own.
    result = await run("env; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'", cwd, mode)
    assert result.exit_code == 0
    for value in secrets.values():
        assert value not in result.stdout
    env = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert {"ANTHROPIC_API_KEY", "POSTGRES_URL"}.isdisjoint(env)
    assert env["HOME"] == str(cwd)
    assert env["TMPDIR"].startswith(str(cwd))
    assert env["TERM"] == "dumb"
    if mode is Mode.BWRAP:  # our own pid's environ is visible only where the view hides it
        assert set(env) <= {"PATH", "HOME", "LANG", "TERM", "TMPDIR", "PWD", "SHLVL", "OLDPWD", "_"}


@pytest.mark.parametrize("mode", [m for m in MODES if m.values[0] is not Mode.RLIMITS])
async def test_timeout_kills_the_whole_tree(cwd: Path, mode: Mode) -> None:
    # One child backgrounded, one that escapes the process group with setsid.
    result = await run("sleep 1001 & setsid sleep 1001 & sleep 1001", cwd, mode, timeout_s=2)
    assert result.timed_out
    assert result.exit_code is None
    assert live_processes(["sleep", "1001"]) == []


async def test_background_children_die_with_the_command_in_bwrap(cwd: Path) -> None:
    if not capabilities().available(Mode.BWRAP):
        pytest.skip("bwrap not available")
    result = await run("setsid sleep 1002 & echo started", cwd, Mode.BWRAP)
    assert result.stdout == "started\n"
    assert live_processes(["sleep", "1002"]) == []


async def test_output_flood_is_capped_and_memory_bounded(cwd: Path) -> None:
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = await run("yes | head -c 100000000", cwd, timeout_s=60, output_limit=10_000)
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert result.truncated
    assert not result.timed_out
    assert len(result.stdout) < 10_000 + 200
    assert "[output truncated:" in result.stdout
    assert (peak_after - peak_before) * 1024 < 64 * 1024**2  # ru_maxrss is in KiB


@pytest.mark.skipif(not ROOT, reason="RLIMIT_NPROC is only enforced for a dropped uid")
async def test_process_limit_is_enforced(cwd: Path) -> None:
    result = await run(
        "for i in $(seq 40); do sleep 3 & done; wait", cwd, limits=SandboxLimits(nproc=10)
    )
    assert "fork" in result.stderr.lower()


async def test_resource_limits(cwd: Path) -> None:
    result = await run(
        "ulimit -c; head -c 2000000 /dev/zero > big; echo rc=$?",
        cwd,
        limits=SandboxLimits(file_size=1_000_000),
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "0"  # no core dumps
    assert lines[1] != "rc=0"  # SIGXFSZ / EFBIG
    assert (cwd / "big").stat().st_size <= 1_000_000


@pytest.mark.parametrize("mode", MODES)
async def test_workspace_size_limit_kills_the_command(cwd: Path, mode: Mode) -> None:
    # Many files, each under RLIMIT_FSIZE: only the workspace measurement can stop this.
    fill = "i=0; while true; do head -c 1000000 /dev/zero > f$i || exit 9; i=$((i+1)); done"
    limit = 8 * 1024**2
    result = await run(fill, cwd, mode, timeout_s=20, workspace_limit=limit)
    assert not result.timed_out
    assert result.workspace_exceeded
    assert "workspace over its size limit" in result.stderr
    assert result.duration_s < 5
    used = bytes_of(cwd, "f*")
    assert used < limit + 64 * 1024**2  # overshoot: what it wrote in one measuring interval
    # Over the limit, a command may still shrink the workspace...
    cleaned = await run("rm -f f*; echo ok", cwd, mode, workspace_limit=limit)
    assert cleaned.stdout == "ok\n" and not cleaned.workspace_exceeded


async def test_argv_command_is_not_shell_interpreted(cwd: Path) -> None:
    result = await run(["echo", "$HOME;", "id"], cwd)
    assert result.stdout == "$HOME; id\n"


# -- bwrap ---------------------------------------------------------------------------------------


@needs_bwrap
async def test_bwrap_filesystem_view(cwd: Path) -> None:
    marker = Path(tempfile.mkdtemp(prefix="qd-host-tmp-", dir="/tmp"))
    try:
        script = (
            "ls /; echo ---; ls /etc; echo ---; cat /etc/passwd; echo ---; ls /tmp; echo ---;"
            "touch inside && echo wrote; hostname; ps -e -o pid= | wc -l"
        )
        result = await run(script, cwd, Mode.BWRAP)
    finally:
        shutil.rmtree(marker)
    root, etc, passwd, tmp, rest = result.stdout.split("---\n")
    top = set(root.split())
    assert top <= {
        "bin",
        "sbin",
        "lib",
        "lib64",
        "lib32",
        "libx32",
        "usr",
        "etc",
        "proc",
        "dev",
    } | {"tmp", "run"} | {Path(p).parts[1] for p in [*python_prefixes(), str(cwd)]}
    assert "home" not in top and "var" not in top and "srv" not in top
    assert "shadow" not in etc.split() and "gshadow" not in etc.split() and "ssh" not in etc.split()
    assert {"passwd", "group", "ld.so.cache"} <= set(etc.split())
    host_users = {line.split(":")[0] for line in host_text("/etc/passwd").splitlines()}
    shown = {line.split(":")[0] for line in passwd.splitlines()}
    assert shown <= {"root", "agent", "nobody"} and len(host_users - shown) > 0
    assert marker.name not in tmp  # a private /tmp, not the host's
    assert rest.splitlines()[0] == "wrote" and (cwd / "inside").exists()
    assert rest.splitlines()[1] == "sandbox"  # its own UTS namespace
    assert int(rest.splitlines()[2]) <= 4  # its own PID namespace: sh, ps, wc and bwrap's init


@needs_bwrap
async def test_bwrap_tmp_is_size_limited(cwd: Path) -> None:
    sandbox.configure(SandboxConfig(tmp_bytes=2 * 1024**2))
    try:
        result = await run("head -c 5000000 /dev/zero > /tmp/x; echo rc=$?", cwd, Mode.BWRAP)
    finally:
        sandbox.configure(SandboxConfig())
    assert "rc=0" not in result.stdout
    assert "No space left" in result.stderr


@needs_bwrap
@pytest.mark.skipif(not ROOT, reason="a per-run uid needs root")
async def test_bwrap_as_root_runs_as_the_runs_own_uid_without_capabilities(cwd: Path) -> None:
    ident = sandbox.run_identity("run-xyz")
    assert ident is not None
    prepare_dir(cwd, ident)
    result = await run(
        "id -u; grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs)' /proc/self/status; touch mine",
        cwd,
        Mode.BWRAP,
        run_as=ident,
    )
    lines = result.stdout.splitlines()
    assert lines[0] == str(ident[0])
    caps = dict(line.split(":\t") for line in lines[1:])
    assert caps == {
        "CapPrm": "0000000000000000",
        "CapEff": "0000000000000000",
        "CapBnd": "0000000000000000",
        "NoNewPrivs": "1",
    }
    assert (cwd / "mine").stat().st_uid == ident[0]  # host-side too
    assert "uid" in result.isolation.split(" ")[0].split("+")


@needs_bwrap
async def test_bwrap_network_is_off_even_when_sandbox_network_is_set(cwd: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    port = listener.getsockname()[1]
    probe = f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 2)\""
    try:
        result = await run(probe, cwd, Mode.BWRAP, network=True)
    finally:
        listener.close()
    assert result.exit_code != 0
    assert "refused" in result.stderr.lower()
    assert "sandbox_network ignored" in result.isolation


@needs_bwrap
@pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed")
async def test_egress_socket_is_the_only_way_out(cwd: Path) -> None:
    """The egress hook: a unix socket (here a tiny HTTP proxy stand-in, not the real proxy)
    appears inside, bridged to 127.0.0.1:3128, and HTTP(S)_PROXY points at it."""
    sock_dir = Path(tempfile.mkdtemp(prefix="qd-egress-", dir="/tmp"))
    sock_path = sock_dir / "egress.sock"
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readline())
        while (await reader.readline()).strip():
            pass
        body = b"via-egress"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(handle, path=str(sock_path))
    chmod(sock_path, 0o666)
    chmod(sock_dir, 0o755)
    script = (
        "echo $HTTP_PROXY $https_proxy; ls -l /run/quarterdeck/egress.sock | cut -c1;"
        "python3 -c \"import urllib.request as u; print(u.urlopen('http://example.test/p').read().decode())\";"
        "python3 -c \"import socket; socket.create_connection(('169.254.169.254', 80), 2)\" 2>&1 | tail -1"
    )
    try:
        result = await run(script, cwd, Mode.BWRAP, egress_socket=sock_path)
    finally:
        server.close()
        shutil.rmtree(sock_dir, ignore_errors=True)
    lines = result.stdout.splitlines()
    assert lines[0] == "http://127.0.0.1:3128 http://127.0.0.1:3128"
    assert lines[1] == "s"  # a socket
    assert lines[2] == "via-egress", result.stderr
    assert "unreachable" in lines[3].lower()  # nothing but the proxy
    assert seen == [b"GET http://example.test/p HTTP/1.1\r\n"]
    assert "egress proxy only" in result.isolation
    assert processes_with(b"UNIX-CONNECT:/run/quarterdeck/egress.sock") == []


# -- the weak modes ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [m for m in MODES if m.values[0] is not Mode.BWRAP])
async def test_weak_modes_show_the_host_filesystem(cwd: Path, mode: Mode) -> None:
    """The documented weakness: without bwrap the command sees the host's files."""
    result = await run("cat /etc/passwd | head -1; ls /", cwd, mode)
    assert result.stdout.splitlines()[0] == host_text("/etc/passwd").splitlines()[0]
    assert "no filesystem view" in result.isolation


@pytest.mark.parametrize("mode", [m for m in MODES if m.values[0] is not Mode.BWRAP])
async def test_network_in_the_weak_modes(cwd: Path, mode: Mode) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    port = listener.getsockname()[1]
    probe = f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 2)\""
    try:
        result = await run(probe, cwd, mode)
        if mode is Mode.UNSHARE and capabilities().netns:
            assert "netns" in result.isolation.split(" ")[0].split("+")
            assert result.exit_code != 0
        else:  # rlimits: the host network, as documented
            assert result.exit_code == 0
            assert "host network reachable" in result.isolation
        allowed = await run(probe, cwd, mode, network=True)
        assert allowed.exit_code == 0, allowed.stderr
        assert "network allowed by configuration" in allowed.isolation
    finally:
        listener.close()


@pytest.mark.skipif(not ROOT, reason="privilege drop needs root")
@pytest.mark.parametrize("mode", [m for m in MODES if m.values[0] is Mode.UNSHARE])
async def test_unshare_runs_unprivileged(cwd: Path, mode: Mode) -> None:
    result = await run("id -u; touch mine; touch /etc/qd-should-not-exist", cwd, mode)
    assert result.stdout.splitlines()[0] != "0"
    assert (cwd / "mine").exists()
    assert not exists("/etc/qd-should-not-exist")
    assert "uid" in result.isolation.split(" ")[0].split("+")


# -- explicit modes: selection, report, start-up -------------------------------------------------


def test_forced_mode_must_exist() -> None:
    with pytest.raises(ConfigError, match="unknown sandbox mode"):
        sandbox.select_mode("chroot")
    assert sandbox.select_mode("auto") is capabilities().strongest
    assert sandbox.select_mode("rlimits") is Mode.RLIMITS


def test_isolation_report_lists_every_mode_honestly() -> None:
    report = isolation_report()
    by_mode = {m["mode"]: m for m in report["modes"]}
    assert set(by_mode) == {"bwrap", "unshare", "rlimits"}
    for mode in Mode:
        assert by_mode[str(mode)]["available"] == capabilities().available(mode)
        assert by_mode[str(mode)]["missing_because"] == capabilities().modes[mode]
    assert report["in_use"] == str(capabilities().strongest)
    assert [m["mode"] for m in report["modes"] if m["in_use"]] == [report["in_use"]]
    assert report["running_as_root"] == ROOT
    checks = {c.name: c for c in isolation_checks(report)}
    assert set(checks) == {"sandbox.bwrap", "sandbox.unshare", "sandbox.rlimits"}
    assert all(
        c.status == ("ok" if by_mode[n[8:]]["available"] else "warn") for n, c in checks.items()
    )


def test_doctor_fails_a_forced_mode_the_host_lacks() -> None:
    report = isolation_report()
    report["problem"] = "bwrap is not available on this host: test"
    checks = isolation_checks(report)
    assert [c.status for c in checks if c.name == "sandbox"] == ["fail"]


def test_production_refuses_rlimits_only_unless_allowed() -> None:
    with pytest.raises(ConfigError, match="QUARTERDECK_SANDBOX_ALLOW_WEAK"):
        sandbox.check_startup(SandboxConfig(mode="rlimits"), production=True)
    try:
        with structlog.testing.capture_logs() as logs:
            mode = sandbox.check_startup(SandboxConfig(mode="rlimits", allow_weak=True), True)
        assert mode is Mode.RLIMITS
        assert [e for e in logs if e["event"] == "SANDBOX_IS_WEAK" and e["log_level"] == "warning"]
        # Development runs what it has, silently.
        assert sandbox.check_startup(SandboxConfig(mode="rlimits"), production=False)
    finally:
        sandbox.configure(SandboxConfig())


async def test_runtime_start_refuses_in_production() -> None:
    """The refusal comes first: this never reaches the (unreachable) database."""
    from quarterdeck.config import load_settings
    from quarterdeck.runtime import Runtime

    settings = load_settings(
        None,
        env="production",
        admin_api_key="a" * 40,
        audit_master_key="m" * 44,
        audit_signing_key_file="/nonexistent/signing.key",
        postgres_url="postgresql://u@127.0.0.1:1/x",
        data_dir="/nonexistent/qd-data",
        sandbox_mode="rlimits",
    )
    try:
        with pytest.raises(ConfigError, match="only rlimits"):
            await Runtime(settings).start()
    finally:
        sandbox.configure(SandboxConfig())


async def test_system_endpoint_reports_every_mode(client: object) -> None:
    response = await client.get("/v1/system")  # type: ignore[attr-defined]
    assert response.status_code == 200
    isolation = response.json()["isolation"]
    assert [m["mode"] for m in isolation["modes"]] == ["bwrap", "unshare", "rlimits"]
    assert isolation["in_use"] == str(capabilities().strongest)


@pytest.fixture(autouse=True)
async def _default_config() -> AsyncIterator[None]:
    sandbox.configure(SandboxConfig())
    yield
    sandbox.configure(SandboxConfig())
