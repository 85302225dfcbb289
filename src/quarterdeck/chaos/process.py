"""One way to run a server as a child process: start with an env, wait until ready, log, stop.

The chaos runner, the end-to-end tests, the benchmarks and the Redis fixture all start long-lived
processes (``quarterdeck up``/``serve``/``worker``, ``redis-server``, ``prometheus``) and need the
same four things from them, so they are done once here:

- **start** with an explicit environment, stdout and stderr appended to a log file (the only
  place a crash explains itself), in a new session so the process has a group of its own;
- **wait until ready** with :meth:`Process.wait_ready` and a probe (:func:`http_ok`,
  :func:`port_open`, :func:`redis_ping`), failing at once with the log's tail if the process
  exits instead;
- **stop** politely: SIGTERM, a bounded wait, then SIGKILL to the whole process group (whatever
  it spawned is as stuck as it is) and reap. A process that exits on SIGTERM keeps its children:
  stopping them is its own job, which tests assert, and the embedded Postgres a ``quarterdeck``
  process started may be serving its siblings;
- **kill**: SIGKILL to the process alone, which is what an OOM kill or a lost node looks like.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Self

import httpx

Probe = Callable[[], bool]


def free_port() -> int:
    """A TCP port free on loopback right now (tests and benchmarks use this one too)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_ok(url: str, timeout: float = 2.0) -> Probe:
    """Ready when ``GET url`` answers 200."""

    def probe() -> bool:
        try:
            return httpx.get(url, timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    return probe


def port_open(port: int, host: str = "127.0.0.1") -> Probe:
    """Ready when something accepts TCP connections on ``port``."""

    def probe() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            return False

    return probe


def redis_ping(port: int) -> bool:
    """A raw RESP PING on loopback, so process control needs no Redis client library."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class Process:
    """One child process with its log file; ``start()`` returns it, so it chains."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        log: Path,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        cwd: Path | None = None,
        stop_timeout: float = 30,
    ) -> None:
        self.stop_timeout = stop_timeout  # how long stop() waits after SIGTERM by default
        self.args = [str(a) for a in args]
        self.log = log
        self.env = dict(os.environ if env is None else env)
        self.name = name or Path(self.args[0]).name
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None
        self._handle: IO[bytes] | None = None

    # -- state ---------------------------------------------------------------------------------
    @property
    def popen(self) -> subprocess.Popen[bytes]:
        if self._popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._popen

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> Self:
        """Spawn it (log appended, so restarts keep their history); does not wait."""
        if self.alive:
            return self
        self._close_log()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.log, "ab")  # closed by stop() or kill()
        self._popen = subprocess.Popen(
            self.args,
            env=self.env,
            cwd=self.cwd,
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_ready(self, probe: Probe, timeout: float = 60, interval: float = 0.2) -> Self:
        """Poll ``probe`` until true; raise with the log's tail if the process dies or time's up."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive:
                raise RuntimeError(
                    f"{self.name} exited with {self.returncode} before it was ready:\n"
                    f"{self.log_tail()}"
                )
            if probe():
                return self
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.name} not ready in {timeout:g}s:\n{self.log_tail()}")
            time.sleep(interval)

    def kill(self) -> int:
        """SIGKILL the process alone: no drain, no cleanup; its children are left as they are."""
        if self.alive:
            self.popen.send_signal(signal.SIGKILL)
        code = self.popen.wait(10) if self._popen is not None else 0
        self._close_log()
        return code

    def stop(self, timeout: float | None = None) -> int:
        """SIGTERM and wait ``timeout``; then SIGKILL the whole process group. The exit code."""
        if self._popen is None:
            return 0
        if self.alive:
            self._popen.send_signal(signal.SIGTERM)
            try:
                self._popen.wait(self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self._popen.pid, signal.SIGKILL)
                self._popen.wait(10)
        self._close_log()
        return self._popen.returncode

    def _close_log(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
