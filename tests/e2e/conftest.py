"""Helpers to run ``quarterdeck`` as a real subprocess against an embedded Postgres."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, world_readable_tmpdir

BIN = Path(sys.executable).parent / "quarterdeck"


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.handle = open(log, "ab")
        self.popen = subprocess.Popen(
            [str(BIN), *args], env=env, stdout=self.handle, stderr=subprocess.STDOUT
        )

    def kill(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, timeout: float = 60) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self.handle.close()
        return self.popen.returncode


class Deployment:
    """One data directory (so one embedded Postgres) shared by every process started from it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.http_port = free_port()
        self.procs: list[Proc] = []

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
                "QUARTERDECK_WORKER_DEQUEUE_TIMEOUT": "2s",
                "LOG_LEVEL": "info",
            }
        )
        env.update(extra)
        return env

    def start(self, command: str = "up", wait_ready: bool = True, **extra: str) -> Proc:
        proc = Proc([command], self.env(**extra), self.root / f"{command}-{len(self.procs)}.log")
        self.procs.append(proc)
        if wait_ready and command != "worker":
            self.wait_ready(proc)
        return proc

    def wait_ready(self, proc: Proc, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise AssertionError(f"quarterdeck exited early:\n{proc.log.read_text()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"not ready in {timeout}s:\n{proc.log.read_text()[-4000:]}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@pytest.fixture
def deployment() -> Iterator[Deployment]:
    root = world_readable_tmpdir("qd-e2e-")
    dep = Deployment(root)
    yield dep
    for proc in reversed(dep.procs):
        proc.stop()
