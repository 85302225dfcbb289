"""The shipped worker and API pods, reproduced on this machine's kernel (no Kubernetes runs here).

What decides whether agent commands get the strong sandbox in the pod is rebuilt piece by piece
with the same kernel mechanisms a container runtime uses:

* the pod's identity: ``runAsUser``/``runAsGroup``/``fsGroup`` 10001, ``capabilities: drop
  ALL`` and ``allowPrivilegeEscalation: false`` (no_new_privs): ``setpriv``;
* the shipped Localhost seccomp profile, loaded with libseccomp as runc loads it
  (``seccomp_exec.py``);
* ``procMount: Unmasked`` against the runtime's default masked ``/proc`` (runc's masked and
  read-only ``/proc`` paths, mounted in a private mount namespace);
* RuntimeDefault's refusals for a container without CAP_SYS_ADMIN/CAP_SYS_CHROOT (``unshare``,
  ``mount``, ``umount``, ``pivot_root``, ``setns``, ``chroot``; containerd's profile).

Not reproduced: ``hostUsers: false`` itself (the pod's own user namespace; it only makes the
pod's uids unprivileged on the node) and AppArmor (not enabled on this kernel).

Then ``quarterdeck doctor`` and the worker Deployment's ``quarterdeck worker`` run as that pod,
and the API Deployment's ``quarterdeck serve`` as the API pod (RuntimeDefault seccomp, masked
``/proc``: no bubblewrap, which it does not need), with the production overlay's environment and
ConfigMap, every secret a file laid out as the kubelet writes a projected volume (0440
root:10001), a password-protected Redis and an external Postgres. The two pods run once for the
module (``pods``), and a claude-code run goes from one to the other: submitted to ``serve``,
executed by ``worker`` with the real claude CLI in bubblewrap under the pod's uid and seccomp
profile, its model calls through ``serve``'s gateway at the worker's
``QUARTERDECK_AGENT_GATEWAY_URL``. (The CLI, a Bun binary, calls one system call the profile
denies, ``get_mempolicy``, once at start; it carries on without it, as this run shows.)
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from quarterdeck.chaos.deploy import redis_server_binary
from quarterdeck.chaos.fake_http import Reply
from quarterdeck.chaos.messages_api import MessagesAPIServer, make_usage, message, text, tool_use
from quarterdeck.chaos.process import Process, free_port, http_ok, port_open
from tests.conftest import with_database, world_readable_tmpdir
from tests.integration.test_deploy_kubernetes import (
    KUBE,
    api,
    env_of,
    find,
    render,
    secret_files,
    worker,
)

pytestmark = pytest.mark.e2e

HERE = Path(__file__).parent
SECCOMP_EXEC = HERE / "seccomp_exec.py"
BIN = Path(sys.executable).parent / "quarterdeck"
PROBE = (
    "import json; from quarterdeck.agents.sandbox.probe import capabilities; "
    "print(json.dumps({str(m): r for m, r in capabilities().modes.items()}))"
)
# runc's default masked and read-only /proc paths (what procMount: Default gives a container).
MASK_PROC = """
for f in /proc/kcore /proc/keys /proc/latency_stats /proc/timer_list /proc/timer_stats \
         /proc/sched_debug; do [ -f "$f" ] && mount --bind /dev/null "$f"; done
for d in /proc/acpi /proc/asound /proc/scsi; do [ -d "$d" ] && mount -t tmpfs -o ro tmpfs "$d"; done
for r in /proc/bus /proc/fs /proc/irq /proc/sys /proc/sysrq-trigger; do
  [ -e "$r" ] && mount --bind "$r" "$r" && mount -o remount,bind,ro "$r"
done
exec "$@"
"""
RUNTIME_DEFAULT_DENIES = ["unshare", "mount", "umount", "umount2", "pivot_root", "setns", "chroot"]


@pytest.fixture(scope="module", autouse=True)
def needs_root() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("switching to the pod's uid and masking /proc need root")
    yield
    with contextlib.suppress(OSError):  # python_shim's (empty) mount point
        os.rmdir(f"/tmp/qd-pod-python-{os.getpid()}")


@pytest.fixture(scope="module")
def prod() -> list[dict[str, Any]]:
    return render("overlays/production")


@pytest.fixture(scope="module")
def pod(prod: list[dict[str, Any]]) -> dict[str, Any]:
    spec = find(prod, "Deployment", "claude-agent-worker")["spec"]["template"]["spec"]
    context = spec["securityContext"]
    profile = KUBE / "node" / "seccomp" / context["seccompProfile"]["localhostProfile"]
    return {
        "uid": context["runAsUser"],
        "gid": context["runAsGroup"],
        "fs_group": context["fsGroup"],
        "profile": profile,
    }


def python_shim() -> str:
    """A shell line that shows this interpreter to the pod's uid, or "".

    The image's Python lives in /usr/local, readable by anyone; this machine's may sit under a
    0700 directory (pyenv in /root). Inside the pod's private mount namespace that directory is
    covered by an empty tmpfs holding only the interpreter's tree, bound at its own path, so the
    pod's uid runs the same Python and the machine itself is not changed.
    """
    prefix = Path(os.path.realpath(sys.base_prefix))
    blocked = next((a for a in reversed(prefix.parents) if not os.stat(a).st_mode & 0o001), None)
    if blocked is None:
        return ""
    keep = f"/tmp/qd-pod-python-{os.getpid()}"
    return (
        f"mkdir -p {keep} && mount --bind {prefix} {keep} && "
        f"mount -t tmpfs -o mode=0755 tmpfs {blocked} && mkdir -p {prefix} && "
        f"mount --bind {keep} {prefix} || exit 97\n"
    )


def as_pod(
    pod: dict[str, Any],
    argv: list[str],
    *,
    profile: Path,
    masked: bool = False,
    hosts: Path | None = None,
) -> list[str]:
    """``argv`` run as the pod's process: its uid/gids, no capabilities, the seccomp profile, in
    a private mount namespace (with runc's masked /proc when ``masked``; with ``hosts`` as its
    /etc/hosts, the cluster DNS names it resolves)."""
    command = [sys.executable, str(SECCOMP_EXEC), str(profile), "--"]
    command += ["setpriv", "--reuid", str(pod["uid"]), "--regid", str(pod["gid"])]
    command += ["--groups", str(pod["fs_group"]), "--inh-caps=-all", "--bounding-set=-all"]
    command += ["--", *argv]
    script = python_shim()
    if hosts is not None:
        script += f"mount --bind {hosts} /etc/hosts || exit 96\n"
    script += MASK_PROC if masked else 'exec "$@"\n'
    mount_ns = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script]
    return [*mount_ns, "sh", *command]


def probe_modes(pod: dict[str, Any], profile: Path, masked: bool = False) -> dict[str, Any]:
    argv = as_pod(pod, [sys.executable, "-c", PROBE], profile=profile, masked=masked)
    env = {"PATH": os.environ["PATH"], "HOME": "/tmp"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, cwd="/tmp")
    assert done.returncode == 0, done.stderr
    modes: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return modes


# ------------------------------------------------------------- the sandbox in the pod's shape
def test_the_shipped_pod_gives_bubblewrap_its_full_sandbox(pod: dict[str, Any]) -> None:
    modes = probe_modes(pod, pod["profile"])
    assert modes["bwrap"] is None, modes["bwrap"]


def test_runtime_default_seccomp_would_refuse_it(pod: dict[str, Any], tmp_path: Path) -> None:
    """Why the pod names a Localhost profile: RuntimeDefault leaves rlimits only."""
    profile = json.loads(pod["profile"].read_text())
    profile["syscalls"].append(
        {"names": RUNTIME_DEFAULT_DENIES, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
    )
    path = tmp_path / "runtime-default-like.json"
    path.write_text(json.dumps(profile))
    path.chmod(0o644)
    modes = probe_modes(pod, path)
    assert modes["bwrap"] is not None and "Operation not permitted" in modes["bwrap"]
    assert modes["unshare"] is not None
    assert modes["rlimits"] is None


def test_a_masked_proc_would_refuse_it_and_why_the_pod_forces_bwrap(pod: dict[str, Any]) -> None:
    """Why procMount: Unmasked: the kernel mounts a new /proc only where none is masked. And
    why QUARTERDECK_SANDBOX_MODE=bwrap: the weaker unshare mode still works there, and in it a
    command runs as the worker's uid, able to read the secret files."""
    modes = probe_modes(pod, pod["profile"], masked=True)
    assert modes["bwrap"] is not None and "proc" in modes["bwrap"], modes["bwrap"]
    assert modes["unshare"] is None


def test_the_profile_denies_what_it_lists(pod: dict[str, Any]) -> None:
    code = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.ptrace(0, 0, 0, 0), ctypes.get_errno())\n"  # PTRACE_TRACEME
        "print(libc.syscall(250, 0, 0, 0, 0), ctypes.get_errno())\n"  # keyctl (x86_64)
        "print(open('/proc/self/status').read().count('NoNewPrivs:\\t1'))\n"
    )
    if os.uname().machine != "x86_64":
        pytest.skip("the keyctl number used here is x86_64's")
    argv = as_pod(pod, [sys.executable, "-c", code], profile=pod["profile"])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd="/tmp")
    assert done.stdout.split() == ["-1", "1", "-1", "1", "1"], done.stderr  # EPERM, EPERM, NNP


# --------------------------------------------------------------- quarterdeck as the pod
def kubelet_volume(root: Path, files: dict[str, str], gid: int) -> Path:
    """A projected secret volume as the kubelet writes it with defaultMode 0400 and fsGroup."""
    root.mkdir(parents=True)
    root.chmod(0o755)
    data = root / "..2026_12_06_12_00_00.000000001"
    data.mkdir()
    data.chmod(0o755)
    for name, value in files.items():
        path = data / name
        path.write_text(value)
        os.chown(path, 0, gid)
        path.chmod(0o440)
        (root / name).symlink_to(f"..data/{name}")
    (root / "..data").symlink_to(data.name)
    return root


@pytest.fixture(scope="module")
async def pod_db_url(pg_base_url: str, template_url: str) -> AsyncIterator[str]:
    """The pods' external Postgres: one database for the module, whose pods are started once
    (``pods``) and shared by the tests that need them running."""
    name = f"qd_test_pods_{os.getpid()}"
    conn = await asyncpg.connect(pg_base_url)
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE qd_template")
    finally:
        await conn.close()
    yield with_database(pg_base_url, name)
    conn = await asyncpg.connect(pg_base_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def shipped_pod(
    pod: dict[str, Any], prod: list[dict[str, Any]], pod_db_url: str
) -> Iterator[dict[str, Any]]:
    """Everything `quarterdeck` needs to start as the production pod, and its secret values."""
    db_url = pod_db_url
    tmp_path = world_readable_tmpdir("qd-pod-")  # pytest's tmp_path is root-only
    redis_bin = redis_server_binary()
    if redis_bin is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    # The pod reaches an external Postgres over TCP; the test server listens on a socket in its
    # root-only data directory, so socat (as root) forwards a loopback port to it.
    parts = urlsplit(db_url)
    pg_port = free_port()
    socket_path = f"{parse_qs(parts.query)['host'][0]}/.s.PGSQL.5432"
    forward = Process(
        [
            "socat",
            f"TCP-LISTEN:{pg_port},bind=127.0.0.1,fork,reuseaddr",
            f"UNIX-CONNECT:{socket_path}",
        ],
        log=tmp_path / "socat.log",
        name="socat",
    ).start()
    forward.wait_ready(port_open(pg_port), 10)
    values = {
        "anthropic_api_key": "sk-ant-pod-" + secrets.token_hex(16),
        "admin_api_key": "qd-admin-" + secrets.token_hex(24),
        "postgres_url": f"postgresql://postgres@127.0.0.1:{pg_port}{parts.path}",
        "redis_password": "redis-" + secrets.token_hex(12),
        "audit_master_key": base64.b64encode(secrets.token_bytes(32)).decode(),
        "metrics_token": "metrics-" + secrets.token_hex(16),
    }
    files = secret_files(prod)
    assert set(files) == set(values), "the test gives every secret file the manifest mounts"
    directory = kubelet_volume(
        tmp_path / "secrets", {k: v + "\n" for k, v in values.items()}, pod["fs_group"]
    )
    signing = tmp_path / "audit" / "signing.pem"
    signing.parent.mkdir()
    signing.parent.chmod(0o755)
    signing.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chown(signing, 0, pod["fs_group"])
    signing.chmod(0o440)
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, pod["uid"], pod["gid"])
    container = worker(prod)
    config_text = find(prod, "ConfigMap", "claude-agent-config")["data"]["quarterdeck.yaml"]
    config = tmp_path / "quarterdeck.yaml"
    config.write_text(config_text)
    config.chmod(0o444)
    redis_port = free_port()
    redis = Process(
        [
            *(redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""),
            *("--appendonly", "no", "--dir", str(tmp_path)),
            *("--requirepass", values["redis_password"]),
        ],
        log=tmp_path / "redis.log",
        name="redis-server",
    ).start()
    redis.wait_ready(port_open(redis_port), 10)
    assert yaml.safe_load(config_text), "the ConfigMap's settings file"

    def pod_env(container: dict[str, Any]) -> dict[str, str]:
        env = {name: var["value"] for name, var in env_of(container).items()}  # all literal
        env.update(
            # Paths, ports and addresses of this machine; every other value is the manifest's.
            QUARTERDECK_CONFIG=str(config),
            QUARTERDECK_SECRETS_DIR=str(directory),
            QUARTERDECK_AUDIT_SIGNING_KEY_FILE=str(signing),
            QUARTERDECK_DATA_DIR=str(data),
            QUARTERDECK_HTTP_HOST="127.0.0.1",
            QUARTERDECK_HTTP_PORT=str(free_port()),
            QUARTERDECK_METRICS_PORT=str(free_port()),
            REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
            PATH="/usr/local/bin:/usr/bin:/bin",
            HOME=str(data),
        )
        return env

    try:
        yield {
            "env": pod_env(container),
            "api_env": pod_env(api(prod)),
            "args": container["args"],
            "api_args": api(prod)["args"],
            "values": values,
            "tmp": tmp_path,
        }
    finally:
        redis.stop()
        forward.stop()
        shutil.rmtree(tmp_path, ignore_errors=True)


def test_doctor_in_the_shipped_pod_reports_bubblewrap_and_reads_every_secret_file(
    pod: dict[str, Any], shipped_pod: dict[str, Any]
) -> None:
    argv = as_pod(pod, [str(BIN), "doctor", "--preflight", "--json"], profile=pod["profile"])
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=120, env=shipped_pod["env"], cwd="/tmp"
    )
    assert done.stdout.startswith("["), done.stderr
    checks = {c["name"]: c for c in json.loads(done.stdout)}
    assert done.returncode == 0, done.stdout
    assert checks["config"]["detail"].startswith("production mode")
    assert checks["postgres"]["status"] == "ok" and "external" in checks["postgres"]["detail"]
    assert checks["redis"] == {"name": "redis", "status": "ok", "detail": "reachable", "fix": ""}
    assert checks["provider"]["status"] == "ok", "ANTHROPIC_API_KEY read from its file"
    assert checks["sandbox.bwrap"]["status"] == "ok"
    assert checks["sandbox.bwrap"]["detail"].startswith("available (in use)")
    for secret in shipped_pod["values"].values():
        assert secret not in done.stdout + done.stderr


def runtime_default_like(pod: dict[str, Any], directory: Path) -> Path:
    """The shipped profile plus what containerd's RuntimeDefault refuses: the API pod's seccomp."""
    profile = json.loads(pod["profile"].read_text())
    profile["syscalls"].append(
        {"names": RUNTIME_DEFAULT_DENIES, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
    )
    path = directory / "runtime-default-like.json"
    path.write_text(json.dumps(profile))
    path.chmod(0o644)
    return path


def assert_the_pods_process(
    pod: dict[str, Any], pid: int, env: dict[str, str], values: dict[str, str]
) -> None:
    # The process is the pod's: uid 10001, no capabilities, no_new_privs, seccomp filtered.
    status = Path(f"/proc/{pid}/status").read_text()
    assert f"Uid:\t{pod['uid']}\t" in status and "CapEff:\t0000000000000000" in status
    assert "NoNewPrivs:\t1" in status and "Seccomp:\t2" in status
    # Its environment names the secrets directory and holds no secret.
    environ = Path(f"/proc/{pid}/environ").read_bytes().decode()
    assert f"QUARTERDECK_SECRETS_DIR={env['QUARTERDECK_SECRETS_DIR']}" in environ
    for name, secret in values.items():
        assert secret not in environ, name
    # The metrics listener wants the token from its file, as the ServiceMonitor sends it.
    metrics = f"http://127.0.0.1:{env['QUARTERDECK_METRICS_PORT']}/metrics"
    assert httpx.get(metrics, timeout=10).status_code == 401
    bearer = {"Authorization": f"Bearer {values['metrics_token']}"}
    assert httpx.get(metrics, headers=bearer, timeout=10).status_code == 200


@pytest.fixture(scope="module")
def upstream() -> Iterator[MessagesAPIServer]:
    """The Messages API stand-in behind the API pod's gateway (the model of claude-code runs)."""
    server = MessagesAPIServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pods(
    pod: dict[str, Any],
    prod: list[dict[str, Any]],
    shipped_pod: dict[str, Any],
    upstream: MessagesAPIServer,
) -> Iterator[dict[str, Any]]:
    """The API Deployment's ``serve`` as the API pod (RuntimeDefault's refusals, masked /proc)
    and the worker Deployment's ``worker`` as the worker pod, started together once for the
    tests below. When the module is done with them, each must have stopped with 0 and never
    logged a secret (a failure is reported as this fixture's teardown error).

    The API pod's gateway forwards to the stand-in, with its key as one more secret file. The
    worker pod gets the manifest's QUARTERDECK_AGENT_GATEWAY_URL: the API Service's cluster DNS
    name, resolved to this machine by the pod's /etc/hosts, with the API pod's port here."""
    tmp, values = shipped_pod["tmp"], shipped_pod["values"]
    assert (shipped_pod["api_args"], shipped_pod["args"]) == (["serve"], ["worker"])
    upstream_key = "sk-upstream-" + secrets.token_hex(16)
    api_files = {**values, "gateway_upstream_api_key": upstream_key}
    api_env = dict(shipped_pod["api_env"], QUARTERDECK_GATEWAY_UPSTREAM_URL=upstream.base_url)
    api_env["QUARTERDECK_SECRETS_DIR"] = str(
        kubelet_volume(
            tmp / "api-secrets", {k: v + "\n" for k, v in api_files.items()}, pod["fs_group"]
        )
    )
    gateway = urlsplit(env_of(worker(prod))["QUARTERDECK_AGENT_GATEWAY_URL"]["value"])
    assert gateway.hostname and gateway.port == 8080, gateway
    hosts = tmp / "hosts"
    hosts.write_text(Path("/etc/hosts").read_text() + f"\n127.0.0.1 {gateway.hostname}\n")
    hosts.chmod(0o644)
    env = dict(shipped_pod["env"])
    here = f"{gateway.hostname}:{api_env['QUARTERDECK_HTTP_PORT']}"
    env["QUARTERDECK_AGENT_GATEWAY_URL"] = gateway._replace(netloc=here).geturl()
    api_pod = Process(
        as_pod(
            pod,
            [str(BIN), *shipped_pod["api_args"]],
            profile=runtime_default_like(pod, tmp),
            masked=True,
        ),
        env=api_env,
        log=tmp / "serve.log",
        name="quarterdeck-serve",
        cwd=Path("/tmp"),
    )
    worker_pod = Process(
        as_pod(pod, [str(BIN), *shipped_pod["args"]], profile=pod["profile"], hosts=hosts),
        env=env,
        log=tmp / "worker.log",
        name="quarterdeck-worker",
        cwd=Path("/tmp"),
    )
    url = f"http://127.0.0.1:{api_env['QUARTERDECK_HTTP_PORT']}"
    probes = f"http://127.0.0.1:{env['QUARTERDECK_METRICS_PORT']}"
    try:
        api_pod.start()  # both start at once: each waits on the other's start only here
        worker_pod.start()
        api_pod.wait_ready(http_ok(f"{url}/ready"), 90)
        worker_pod.wait_ready(http_ok(f"{probes}/ready"), 90)
        yield {
            "api": api_pod,
            "worker": worker_pod,
            "api_env": api_env,
            "env": env,
            "url": url,
            "values": api_files,
        }
    finally:
        with ThreadPoolExecutor(2) as stopping:
            codes = list(stopping.map(Process.stop, (worker_pod, api_pod)))
    for proc, code in zip((worker_pod, api_pod), codes, strict=True):
        assert code == 0, proc.log_tail()
        log = proc.log_tail(200_000)
        for name, secret in api_files.items():
            assert secret not in log, f"{proc.name} logged {name}"


def test_the_worker_starts_as_the_shipped_worker_pod_with_secrets_only_in_files(
    pod: dict[str, Any], pods: dict[str, Any]
) -> None:
    """The worker Deployment's own command: bubblewrap in use, probes on the metrics port
    (no token), and no API port at all."""
    env = pods["env"]
    probes = f"http://127.0.0.1:{env['QUARTERDECK_METRICS_PORT']}"
    assert httpx.get(f"{probes}/ready", timeout=10).status_code == 200
    assert httpx.get(f"{probes}/health", timeout=10).status_code == 200
    assert_the_pods_process(pod, pods["worker"].pid, env, pods["values"])
    assert not port_open(int(env["QUARTERDECK_HTTP_PORT"]))(), "a worker serves no API"


def test_the_api_starts_as_the_shipped_api_pod_without_bubblewrap(
    pod: dict[str, Any], pods: dict[str, Any]
) -> None:
    """The API Deployment's `serve` in the API pod's shape (RuntimeDefault's refusals, masked
    /proc): it runs no agent command, so it starts without bubblewrap, and the admin key from
    its file authenticates."""
    env, values, url = pods["api_env"], pods["values"], pods["url"]
    assert_the_pods_process(pod, pods["api"].pid, env, values)
    admin = {"x-api-key": values["admin_api_key"]}
    assert httpx.get(f"{url}/v1/system", timeout=10).status_code == 401
    system = httpx.get(f"{url}/v1/system", headers=admin, timeout=10)
    assert system.status_code == 200, system.text
    assert system.json()["isolation"]["running_as_root"] is False
    assert system.json()["isolation"]["in_use"] != "bwrap", "no bubblewrap in the API pod"


def test_a_pod_without_bubblewrap_refuses_to_start(
    pod: dict[str, Any], shipped_pod: dict[str, Any]
) -> None:
    """The same pod with the runtime's masked /proc (procMount missing, or a cluster without
    user-namespaced pods): QUARTERDECK_SANDBOX_MODE=bwrap makes `up` exit at once, naming the
    setting, instead of running commands in a mode where they can read the secret files."""
    up = Process(
        as_pod(pod, [str(BIN), "up"], profile=pod["profile"], masked=True),
        env=shipped_pod["env"],
        log=shipped_pod["tmp"] / "up-masked.log",
        name="quarterdeck-up-masked",
        cwd=Path("/tmp"),
    ).start()
    try:
        code = up.popen.wait(120)
    finally:
        up.stop()
    log = up.log_tail(20_000)
    assert code != 0, log
    assert "QUARTERDECK_SANDBOX_MODE" in log and "Can't mount proc" in log, log
    for secret in shipped_pod["values"].values():
        assert secret not in log


def test_the_weak_fallback_starts_on_rlimits_and_says_so(
    pod: dict[str, Any], shipped_pod: dict[str, Any], tmp_path: Path
) -> None:
    """components/weak-sandbox on a stock pod (RuntimeDefault's refusals, masked /proc): doctor
    passes, with rlimits in use and flagged, as deploy/kubernetes/README.md says."""
    overlay = tmp_path / "weak"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{os.path.relpath(KUBE / 'overlays/production', overlay)}]\n"
        f"components: [{os.path.relpath(KUBE / 'components/weak-sandbox', overlay)}]\n"
    )
    weak_env = env_of(worker(render(overlay)))
    env = dict(shipped_pod["env"])
    for name in ("QUARTERDECK_SANDBOX_MODE", "QUARTERDECK_SANDBOX_ALLOW_WEAK"):
        env[name] = weak_env[name]["value"]
    profile = json.loads(pod["profile"].read_text())
    profile["syscalls"].append(
        {"names": RUNTIME_DEFAULT_DENIES, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
    )
    path = shipped_pod["tmp"] / "runtime-default-like.json"
    path.write_text(json.dumps(profile))
    path.chmod(0o644)
    argv = as_pod(pod, [str(BIN), "doctor", "--preflight", "--json"], profile=path, masked=True)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd="/tmp")
    assert done.stdout.startswith("["), done.stderr
    checks = {c["name"]: c for c in json.loads(done.stdout)}
    assert done.returncode == 0, done.stdout
    assert checks["sandbox.bwrap"]["status"] == "warn"
    assert checks["sandbox.bwrap"]["detail"].startswith("not available")
    assert checks["sandbox.rlimits"]["status"] == "warn"
    assert checks["sandbox.rlimits"]["detail"].startswith("available (in use)")
    assert "sandbox" not in checks, "QUARTERDECK_SANDBOX_ALLOW_WEAK=true accepted it"


# ------------------------------------------------------- a claude-code run across the two pods
CLAUDE = Path(sys.prefix) / "claude-code" / "node_modules" / ".bin" / "claude"  # make deps
MODEL = "claude-sonnet-4-5"
# What the tool call writes: how the pod's kernel sees the command the CLI ran in bubblewrap.
SHOW_THE_COMMAND = "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status > pod.txt"


def scripted_model(model: str, payload: Any) -> Reply:
    """Turn 1 runs SHOW_THE_COMMAND, turn 2 ends; turn ``t`` bills 100t in and 10t out."""
    turn = 1 + sum(1 for m in payload.get("messages", []) if m.get("role") == "assistant")
    blocks = [tool_use("Bash", {"command": SHOW_THE_COMMAND})] if turn == 1 else [text("Done.")]
    usage = make_usage(input_tokens=100 * turn, output_tokens=10 * turn)
    return message(*blocks, usage=usage, model=model)


def test_a_claude_code_run_submitted_to_the_api_pod_runs_in_the_worker_pod(
    pods: dict[str, Any], upstream: MessagesAPIServer
) -> None:
    """The real claude CLI, started by `worker` as the shipped worker pod (uid 10001, the Localhost
    seccomp profile, bubblewrap), reaches the gateway of `serve` as the API pod through the
    manifest's QUARTERDECK_AGENT_GATEWAY_URL (the API Service's name, resolved as in the
    cluster): the run succeeds, metered and billed by the API pod's gateway."""
    if not CLAUDE.exists():
        pytest.skip("Claude Code CLI not installed (make deps installs it)")
    url, values = pods["url"], pods["values"]
    upstream.conversation = scripted_model  # type: ignore[assignment]  # any (model, payload)
    sent_before = len(upstream.requests)
    made = httpx.post(
        f"{url}/v1/admin/keys",
        json={"name": "pod submitter", "role": "submitter", "tenant": "acme"},
        headers={"authorization": f"Bearer {values['admin_api_key']}"},
        timeout=10,
    )
    assert made.status_code == 201, made.text
    key = {"x-api-key": made.json()["api_key"]}
    body = {"prompt": "Show how you run.", "agent_type": "claude-code", "model": MODEL}
    submitted = httpx.post(f"{url}/v1/runs", json=body, headers=key, timeout=10)
    assert submitted.status_code == 202, submitted.text
    run_id = submitted.json()["id"]
    waited = httpx.get(
        f"{url}/v1/runs/{run_id}/wait", params={"timeout": 60}, headers=key, timeout=70
    )
    run = waited.json()
    assert run["status"] == "succeeded", (run, pods["worker"].log_tail(), pods["api"].log_tail())
    assert run["result"] == "Done." and run["changed_files"] == ["pod.txt"]
    diff = httpx.get(f"{url}/v1/runs/{run_id}/diff", headers=key, timeout=10).text
    # The command ran under the pod's seccomp filter (inherited through bubblewrap and the CLI;
    # this test's own process has none).
    assert "+NoNewPrivs:\t1" in diff and "+Seccomp:\t2" in diff, diff
    # Both model calls went through the API pod's gateway, metered for this run, and upstream
    # with the gateway's key from its file: the run's own token never left Quarterdeck.
    sent = upstream.requests[sent_before:]
    assert len(sent) == 2
    for request in sent:
        assert request.headers["x-api-key"] == values["gateway_upstream_api_key"]
        assert "qd_run_" not in str(dict(request.headers))
    assert run["turns"] == 2 and (run["input_tokens"], run["output_tokens"]) == (300, 30)
    assert Decimal(str(run["cost_usd"])) == (Decimal(3) * 300 + Decimal(15) * 30) / 10**6
