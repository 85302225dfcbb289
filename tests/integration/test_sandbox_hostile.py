"""The hostile suite: an agent with nothing but ``run_command`` tries to get out, in every
isolation context this machine can produce. Every attempt must fail.

Each context runs a real worker-like child process (``WORKER`` below) that holds secrets the way
the worker does (in its environment, in a 0600 key file in its data dir, a Postgres-style unix
socket in the data dir, another run's workspace beside this one), builds the real
:class:`~quarterdeck.agents.tools.WorkspaceTools` and sends each attack through
``tools.run(run, run_command)``: the exact path a model's tool call takes after the policy gate,
which is bypassed here on purpose (the gate detects intent; only the sandbox can guarantee).

Contexts (the test id names context and mode, e.g. ``[unprivileged-bwrap-proc_environ]``):

* ``root``: the worker runs as root (the container image's default, a root systemd unit).
* ``unprivileged``: the worker runs as uid 65534 with user namespaces available (a developer's
  ``make up`` as a normal user). On this box the venv's interpreter lives under ``/root`` (0700),
  so the child gets a private mount namespace in which ``/root`` shows only ``.pyenv``; nothing
  else about the child is changed.
* ``pod``: the shipped Deployment's securityContext as far as a process can reproduce it: uid
  and gid 10001 (``runAsUser``/``runAsNonRoot``), no_new_privs (``allowPrivilegeEscalation:
  false``), an empty capability bounding set (``capabilities.drop: [ALL]``). NOT simulated: the
  container runtime's seccomp profile and AppArmor (``RuntimeDefault`` blocks user namespaces on
  many runtimes; then bwrap is unavailable, the worker has rlimits only and production refuses to
  start -- see ``test_production_refuses_rlimits_only_unless_allowed``), the container's own
  mount and PID namespaces, ``readOnlyRootFilesystem``.

A context whose sandbox mode is not bwrap on this machine is skipped with the probe's reason.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = os.geteuid() == 0
MARKER = "qd-hostile-marker-7f3a9c"
HOSTILE_TIMEOUT_S = 60

# Worker-like child: builds WorkspaceTools, plants secrets, runs every attempt, reports JSON.
WORKER = r"""
import asyncio, itertools, json, os, socket, sys, threading, time
from datetime import UTC, datetime
from pathlib import Path

params = json.loads(sys.argv[1])
marker = params["marker"]
data = Path(params["data_dir"])

from quarterdeck.agents import sandbox
from quarterdeck.agents.tools import WorkspaceTools
from quarterdeck.config import load_settings
from quarterdeck.providers.types import ToolUseBlock
from quarterdeck.runs.models import Run, RunStatus

ids = itertools.count()

def make_run(run_id):
    return Run(id=run_id, tenant="t", agent_type="coder", operation="task", prompt="p",
               model="m", status=RunStatus.running, attempts=1, max_attempts=3,
               created_at=datetime.now(UTC), started_at=None, finished_at=None, input_tokens=0,
               output_tokens=0, cache_creation_tokens=0, cache_read_tokens=0, cost_usd=None,
               turns=0, result=None, error=None, idempotency_key=None, params={})

def live_with(fragment):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if fragment.encode() in cmd and state not in (b"Z", b"X") and int(pid) != os.getpid():
            found.append(int(pid))
    return found

# The worker's secrets: a key file only its uid may read, a trusting database socket.
keys = data / "keys"
keys.mkdir(mode=0o700)
key_file = keys / "audit.key"
key_file.write_text(marker + "-key\n")
key_file.chmod(0o600)
pg = data / "pg"
pg.mkdir(mode=0o700)
pg_sock = socket.socket(socket.AF_UNIX)
pg_sock.bind(str(pg / ".s.PGSQL.5432"))
os.chmod(pg / ".s.PGSQL.5432", 0o777)  # Postgres's own default
pg_sock.listen(16)
pg_hits = []
def accept():
    while True:
        try:
            conn, _ = pg_sock.accept()
        except OSError:
            return
        pg_hits.append(1)
        conn.close()
threading.Thread(target=accept, daemon=True).start()

sandbox.configure(sandbox.SandboxConfig(workspace_bytes=16 * 1024**2, tmp_bytes=8 * 1024**2))
settings = load_settings(None, data_dir=data, command_timeout=params["timeout"])
tools = WorkspaceTools(settings, limits=sandbox.SandboxLimits(nproc=64, cpu_s=20))

async def call(run, name, **args):
    started = time.monotonic()
    result, event = await tools.run(run, ToolUseBlock(id=f"tu_{next(ids)}", name=name, input=args))
    return {"content": result.content, "is_error": result.is_error,
            "isolation": event.get("isolation"), "timed_out": event.get("timed_out"),
            "seconds": time.monotonic() - started}

async def main():
    run_a, run_b = make_run("run-attacker"), make_run("run-victim")
    await call(run_b, "write_file", path="secret.txt", content=marker + "-other-run\n")
    ws_a = (await tools.workspace(run_a)).path
    ws_b = (await tools.workspace(run_b)).path
    out = {"mode": str(sandbox.select_mode()), "caps": {str(k): v for k, v in sandbox.capabilities().modes.items()},
           "uid": os.getuid(), "ws": str(ws_a), "results": {}}
    if out["mode"] != "bwrap":
        print(json.dumps(out)); return
    sa = params["sa_token"]
    attempts = {
        "proc_environ": f"d=/proc; cat $d/$PPID/environ; cat $d/1/environ; "
                        f"for p in /proc/[0-9]*; do cat $p/environ; done; cat /proc/{os.getpid()}/environ",
        "data_dir_keys": f"cat {key_file}; ls -la {data} {keys}; cat {data}/*/*.key",
        "other_workspace": f"cat {ws_b}/secret.txt; ls {ws_b.parent}; cat ../run-victim/secret.txt",
        "postgres_socket": "python3 -c \"import socket,sys; s=socket.socket(socket.AF_UNIX); "
                           f"s.connect('{pg}/.s.PGSQL.5432'); print('CONNECTED')\"",
        "service_account_token": "cat /var/run/secrets/kubernetes.io/serviceaccount/token; "
                                 f"cat {sa}; ls /var/run/secrets",
        "etc_shadow": "cat /etc/shadow; cat /etc/s*adow; cat /etc/gshadow; ls -la /etc",
        "loopback_port": "python3 -c \"import socket; "
                         f"socket.create_connection(('127.0.0.1', {params['port']}), 2); print('CONNECTED')\"",
        "metadata_address": "python3 -c \"import socket; "
                            "socket.create_connection(('169.254.169.254', 80), 2); print('CONNECTED')\"",
        "symlink_escape": f"ln -s /etc/shadow s1; ln -s {key_file} s2; ln -s / s3; ln -s {ws_b} s4; "
                          f"cat s1 s2 s4/secret.txt; ls s3{data}",
        "hardlink_escape": f"ln {key_file} h1; ln {ws_b}/secret.txt h2; ln /etc/passwd h3; cat h1 h2",
        "privileges": "id -u; grep -E '^CapEff' /proc/self/status; "
                      "unshare --user --map-root-user true; echo userns=$?",
        "dotdot_escape": "cat ../../keys/audit.key ../run-victim/secret.txt; cd ../../../../..; "
                         f"pwd; ls; cat .{key_file}",
    }
    for name, command in attempts.items():
        out["results"][name] = await call(run_a, "run_command", command=command)
    # The file tools follow what the command planted only inside the workspace.
    for name, path in (("symlink_file_tool", "s2"), ("symlink_dir_file_tool", "s4/secret.txt"),
                       ("hardlink_file_tool", "h1"), ("dotdot_file_tool", "../../keys/audit.key")):
        out["results"][name] = await call(run_a, "read_file", path=path)
    out["pg_hits"] = len(pg_hits)
    bomb = "bash -c ':(){ :|:& };:; sleep 2' qd-bomb"
    out["results"]["fork_bomb"] = await call(run_a, "run_command", command=bomb, timeout_s=5)
    out["results"]["fork_bomb"]["survivors"] = live_with(":(){ :|:& };:")
    out["results"]["fork_bomb"]["after"] = await call(run_a, "run_command", command="echo alive")
    fill = ("head -c 50000000 /dev/zero > /tmp/big; echo tmp=$?; i=0; "
            "while head -c 1000000 /dev/zero > f$i; do i=$((i+1)); done; echo files=$i")
    out["results"]["fill_disk"] = await call(run_a, "run_command", command=fill, timeout_s=30)
    out["results"]["fill_disk"]["workspace_bytes"] = sandbox.usage.disk_usage(str(ws_a))
    out["results"]["outlive_timeout"] = await call(
        run_a, "run_command", command="setsid sleep 98765 & nohup sleep 98766 & sleep 600", timeout_s=2)
    out["results"]["outlive_timeout"]["survivors"] = live_with("sleep\0" + "9876")
    print(json.dumps(out))

asyncio.run(main())
"""

# As root: give the child a private mount namespace where /root shows only .pyenv (the venv's
# interpreter lives there on this box), then drop to the context's uid.
MOUNT_WRAPPER = r"""
set -e
stage=$(mktemp -d /tmp/qd-hostile-stage-XXXXXX)
if [ -d /root/.pyenv ]; then
  mount --bind /root/.pyenv "$stage"
  mount -t tmpfs -o mode=0755 tmpfs /root
  mkdir /root/.pyenv
  mount --bind "$stage" /root/.pyenv
fi
exec "$@"
"""

CONTEXTS: dict[str, list[str] | None] = {
    "root": [] if ROOT else None,
    "unprivileged": (
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"] if ROOT else []
    ),
    "pod": (
        [
            "setpriv",
            "--reuid=10001",
            "--regid=10001",
            "--clear-groups",
            "--no-new-privs",
            "--bounding-set=-all",
            "--inh-caps=-all",
            "--",
        ]
        if ROOT
        else None
    ),
}
CONTEXT_UID = {"root": 0, "unprivileged": 65534, "pod": 10001}
SKIP_WHY = {
    "root": "tests are not running as root",
    "pod": "simulating the pod's uid 10001 needs root",
}


class Listener:
    """A TCP listener on the host's loopback that counts connections (none may arrive)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.hits = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.hits += 1
            conn.close()


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    lst = Listener()
    yield lst
    lst.sock.close()


@pytest.fixture(scope="module")
def sa_token() -> Iterator[Path]:
    """A fake service-account token at a host path the worker can read (as Kubernetes mounts
    it: world-readable). The real path /var/run/secrets/... is not created on this host; the
    sandbox has no /var at all, so it cannot see that path whatever the host holds there."""
    root = Path(tempfile.mkdtemp(prefix="qd-fake-sa-", dir="/tmp"))
    token = root / "var/run/secrets/kubernetes.io/serviceaccount/token"
    token.parent.mkdir(parents=True)
    token.write_text(MARKER + "-sa-token")
    folder = token.parent
    while folder != root.parent:
        folder.chmod(0o755)
        folder = folder.parent
    token.chmod(0o644)
    yield token
    shutil.rmtree(root, ignore_errors=True)


_reports: dict[str, dict[str, Any]] = {}


def report(context: str, listener: Listener, sa_token: Path) -> dict[str, Any]:
    """Run the worker child for ``context`` once per module and return its JSON report."""
    if context in _reports:
        return _reports[context]
    prefix = CONTEXTS[context]
    if prefix is None:
        pytest.skip(SKIP_WHY[context])
    data = Path(tempfile.mkdtemp(prefix=f"qd-hostile-{context}-", dir="/tmp"))
    data.chmod(0o755)
    if ROOT:
        os.chown(data, CONTEXT_UID[context], CONTEXT_UID[context])
    params = {
        "marker": MARKER,
        "data_dir": str(data),
        "port": listener.port,
        "sa_token": str(sa_token),
        "timeout": 20.0,
    }
    argv = [*prefix, sys.executable, "-c", WORKER, json.dumps(params)]
    if ROOT and context != "root":
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", MOUNT_WRAPPER, "sh"]
        argv += [*prefix, sys.executable, "-c", WORKER, json.dumps(params)]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ANTHROPIC_API_KEY": MARKER + "-anthropic",
        "POSTGRES_URL": f"postgresql://u:{MARKER}-pg@db/x",
        "QUARTERDECK_ADMIN_API_KEY": MARKER + "-admin",
        "HOME": str(data),
    }
    try:
        proc = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=HOSTILE_TIMEOUT_S, cwd="/"
        )
    finally:
        shutil.rmtree(data, ignore_errors=True)
        for stage in Path("/tmp").glob("qd-hostile-stage-*"):
            with_suppress_rmdir(stage)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    _reports[context] = out
    return out


def with_suppress_rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


ATTEMPTS = [
    "proc_environ",
    "data_dir_keys",
    "other_workspace",
    "postgres_socket",
    "service_account_token",
    "etc_shadow",
    "loopback_port",
    "metadata_address",
    "symlink_escape",
    "hardlink_escape",
    "dotdot_escape",
    "privileges",
    "symlink_file_tool",
    "symlink_dir_file_tool",
    "hardlink_file_tool",
    "dotdot_file_tool",
    "fork_bomb",
    "fill_disk",
    "outlive_timeout",
]


def _shadow_lines() -> list[str]:
    try:
        return [line for line in Path("/etc/shadow").read_text().splitlines() if line]
    except OSError:
        return []


@pytest.mark.parametrize(
    ("context", "attempt"),
    [pytest.param(c, a, id=f"{c}-bwrap-{a}") for c in CONTEXTS for a in ATTEMPTS],
)
def test_attempt_fails(context: str, attempt: str, listener: Listener, sa_token: Path) -> None:
    out = report(context, listener, sa_token)
    if out["mode"] != "bwrap":
        pytest.skip(f"{context}: this host gives {out['mode']}, not bwrap: {out['caps']['bwrap']}")
    assert out["uid"] == CONTEXT_UID[context] or not ROOT
    result = out["results"][attempt]
    text = result["content"]
    assert MARKER not in text, f"{attempt} leaked a secret in context {context}: {text[:2000]}"
    if result["isolation"] is not None:
        assert result["isolation"].startswith("bwrap+"), result["isolation"]
    if attempt.endswith("_file_tool"):
        assert result["is_error"], text
    elif attempt == "etc_shadow":
        for line in _shadow_lines():
            assert line not in text
        assert "No such file" in text
    elif attempt == "postgres_socket":
        assert "CONNECTED" not in text and out["pg_hits"] == 0
    elif attempt == "loopback_port":
        assert "CONNECTED" not in text and "refused" in text.lower()
        assert listener.hits == 0
    elif attempt == "metadata_address":
        assert "CONNECTED" not in text and "unreachable" in text.lower()
    elif attempt == "proc_environ":
        assert "ANTHROPIC_API_KEY" not in text and "POSTGRES_URL" not in text
    elif attempt == "service_account_token":
        assert text.count("No such file") >= 2
    elif attempt == "privileges":  # who the command is: never the worker's uid inside
        uid, cap_eff, *_ = text.split("--- stdout ---\n")[1].splitlines()
        assert cap_eff == "CapEff:\t0000000000000000"
        if context == "root":  # the run's own host uid (RUN_UID_BASE..), not root
            assert int(uid) >= 1_000_000_000
        else:  # the worker's uid mapped to 1000, and no nested user namespaces
            assert uid == "1000"
            assert "userns=0" not in text
    elif attempt == "fork_bomb":
        assert result["seconds"] < 5 + 3  # bounded by the timeout (and nproc), cleaned up fast
        assert "fork" in text.lower() or result["timed_out"]  # it hit RLIMIT_NPROC
        assert result["survivors"] == []
        assert "alive" in result["after"]["content"]
    elif attempt == "fill_disk":
        assert "tmp=0" not in text  # /tmp is a small tmpfs, not the host's disk
        assert "workspace over its size limit" in text
        # The limit is polled (every 0.25 s, or 10x the walk's time), so a writer overshoots by
        # what it writes between two polls: ~40 MB on a loaded 2-core box. Bounded, not exact;
        # without the watcher it would fill the disk.
        assert result["workspace_bytes"] < 16 * 1024**2 + 96 * 1024**2
        assert result["seconds"] < 15
    elif attempt == "outlive_timeout":
        assert result["timed_out"] and result["survivors"] == []
        assert result["seconds"] < 2 + 3
    else:  # the reads: each path is absent or unreadable inside
        assert "No such file" in text or "Permission denied" in text


def test_contexts_report_their_mode(listener: Listener, sa_token: Path) -> None:
    """Every context that ran says which mode it got; a context without bwrap names why."""
    ran = 0
    for context, prefix in CONTEXTS.items():
        if prefix is None:
            continue
        out = report(context, listener, sa_token)
        ran += 1
        assert out["mode"] in ("bwrap", "unshare", "rlimits")
        assert (out["mode"] == "bwrap") == (out["caps"]["bwrap"] is None)
    assert ran >= 1
