"""Start Quarterdeck processes for a benchmark, each deployment on its own embedded Postgres."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from quarterdeck.chaos.deploy import free_port

BIN = Path(sys.executable).parent / "quarterdeck"


class Bench:
    def __init__(self, name: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"qd-bench-{name}-", dir="/tmp"))
        self.root.chmod(0o755)
        self.http_port = free_port()
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("QUARTERDECK_")
            and k not in ("POSTGRES_URL", "REDIS_URL", "ANTHROPIC_API_KEY")
        }
        env.update(
            {
                "QUARTERDECK_DATA_DIR": str(self.root / "data"),
                "QUARTERDECK_HTTP_PORT": str(self.http_port),
                "QUARTERDECK_METRICS_PORT": str(free_port()),
                "LOG_LEVEL": "warning",
            }
        )
        env.update(extra)
        return env

    def start(self, command: str, **extra: str) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{command}-{len(self.procs)}.log", "ab")
        proc = subprocess.Popen(
            [str(BIN), command], env=self.env(**extra), stdout=log, stderr=subprocess.STDOUT
        )
        self.procs.append(proc)
        if command != "worker":
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"{command} exited; see {self.root}")
                try:
                    if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()

    def database_url(self) -> str:
        return f"postgresql://postgres:@/postgres?host={self.root / 'data' / 'pg'}"


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]
