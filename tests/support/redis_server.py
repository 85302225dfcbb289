"""A real ``redis-server`` on a free loopback port, for integration and chaos tests.

Use the fixture::

    from tests.support.redis_server import redis_server  # noqa: F401

    async def test_x(redis_server: RedisServer) -> None:
        ... redis_server.url ...
        redis_server.kill()      # SIGKILL: an abrupt crash, nothing flushed
        redis_server.start()     # same port again, empty (no persistence)

or drive :class:`RedisServer` directly (it is also a context manager). The server runs with
no persistence (``--save '' --appendonly no``), so a restart comes back empty, like a
cache-only production Redis. Tests are skipped when ``redis-server`` is not installed
(``make deps`` installs it from Debian).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from quarterdeck.chaos.deploy import free_port, redis_ping


def redis_server_binary() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )


class RedisServer:
    """One ``redis-server`` process; ``start``/``stop``/``kill``/``restart`` keep the port."""

    def __init__(self, port: int | None = None, binary: str | None = None) -> None:
        found = binary or redis_server_binary()
        if found is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
        self.binary = found
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="qd-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start (or restart) on the same port and wait until it accepts connections."""
        if self.running:
            return
        self.proc = subprocess.Popen(
            [
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
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {err}")
            if self.ping():
                return
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"redis-server did not answer on port {self.port} in {timeout}s")

    def ping(self) -> bool:
        return redis_ping(self.port)

    def kill(self) -> None:
        """SIGKILL: what a crashed or OOM-killed Redis looks like to clients."""
        self._end(kill=True)

    def stop(self) -> None:
        """SIGTERM and wait."""
        self._end(kill=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _end(self, kill: bool) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill() if kill else proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A running, empty ``redis-server`` for one test; stopped afterwards whatever happened."""
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed (make deps installs it)")
    with RedisServer() as server:
        yield server
