"""Extra worker processes beside ``up`` or ``worker``: one event loop only ever uses one core.

A worker pool is one asyncio loop. A real agent run spends seconds waiting on the model, so one
process holds thousands of runs in flight; but when the model answers fast (a cached or small
model, the simulated provider) the loop is CPU-bound at roughly 1 ms of Python per run, on one
core. ``QUARTERDECK_WORKER_PROCESSES=N`` starts ``N - 1`` more ``quarterdeck worker`` processes
next to this one, all sharing its Postgres (two processes with one data directory share one
embedded server), so a single host can use its cores. In Kubernetes scale the worker
Deployment instead and leave this at 1.

Each child:

- is an ordinary ``quarterdeck worker`` started with ``--supervised``, so it does not spawn
  children of its own and stops (draining its runs) if this process disappears;
- runs no health monitor (this replica already competes for leadership) and serves its metrics
  on ``QUARTERDECK_METRICS_PORT + i``, so every process can be scraped;
- is restarted with backoff when it exits unexpectedly (a crash loses nothing: its runs are
  re-queued by heartbeat expiry, as for any dead worker);
- gets SIGTERM on drain and is waited for up to the drain timeout plus a margin, then killed.

Without Redis, provider rate limits are per process, so each process takes ``1/N`` of them (see
:class:`~quarterdeck.resilience.ratelimit.SharedBucket`'s ``local_share``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field

import structlog

from quarterdeck.config import Settings, cli_config_path
from quarterdeck.kit.backoff import scheduled_delay

log = structlog.get_logger(__name__)

RESTART_SCHEDULE = (1.0, 2.0, 5.0, 15.0, 30.0)
STABLE_AFTER_S = 60.0  # a child that lived this long starts its restart schedule afresh


def child_command(config: str | None, command: str = "worker") -> list[str]:
    """``python -m quarterdeck [--config F] worker --supervised`` (or ``serve``): the same
    interpreter and package as this process, whatever PATH says."""
    root = [sys.executable, "-m", "quarterdeck"]
    return [*root, *(["--config", config] if config else []), command, "--supervised"]


def child_env(settings: Settings, index: int) -> dict[str, str]:
    env = dict(os.environ)
    env["QUARTERDECK_HEALTH_MONITOR_ENABLED"] = "false"
    env["QUARTERDECK_WORKER_PROCESSES"] = str(settings.worker_processes)
    env["QUARTERDECK_METRICS_PORT"] = (
        "0" if settings.metrics_port == 0 else str(settings.metrics_port + index)
    )
    return env


@dataclass
class _Child:
    index: int
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = field(default=0)


class WorkerProcesses:
    """Starts, watches and stops this process's ``worker_processes - 1`` children."""

    def __init__(self, settings: Settings | None, *, api: bool = False) -> None:
        """``settings`` None: a process that starts no children (API only, or a child).
        ``api``: the ``api_processes - 1`` ``serve`` children instead (server.py), numbered
        after the worker children so their metrics ports never collide."""
        self.settings = settings
        self.command = child_command(cli_config_path(), "serve" if api else "worker")
        count = 1
        if settings is not None:
            count = settings.api_processes if api else settings.worker_processes
        first = settings.worker_processes if api and settings is not None else 1
        self.children = [_Child(i) for i in range(first, first + count - 1)]
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for child in self.children:
            await self._spawn(child)
            self._tasks.append(asyncio.create_task(self._watch(child)))
        if self.children:
            log.info(
                "worker_processes_started",
                children=[c.process.pid for c in self.children if c.process],
            )

    async def _spawn(self, child: _Child) -> None:
        assert self.settings is not None
        child.process = await asyncio.create_subprocess_exec(
            *self.command, env=child_env(self.settings, child.index)
        )
        child.started_at = time.monotonic()

    async def _watch(self, child: _Child) -> None:
        while not self._stopping:
            assert child.process is not None
            code = await child.process.wait()
            if self._stopping:
                return
            if time.monotonic() - child.started_at >= STABLE_AFTER_S:
                child.restarts = 0
            child.restarts += 1
            delay = scheduled_delay(child.restarts, RESTART_SCHEDULE)
            log.error(
                "worker_process_exited",
                index=child.index,
                pid=child.process.pid,
                returncode=code,
                restart_in_s=round(delay, 1),
            )
            await asyncio.sleep(delay)
            if not self._stopping:
                await self._spawn(child)

    async def stop(self) -> None:
        """SIGTERM every child (each drains its own runs), then wait; kill the stragglers."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        live = [
            c.process
            for c in self.children
            if c.process is not None and c.process.returncode is None
        ]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        if not live or self.settings is None:
            return
        grace = self.settings.drain_timeout + 15.0
        _, pending = await asyncio.wait(
            [asyncio.ensure_future(p.wait()) for p in live], timeout=grace
        )
        if pending:
            log.error("worker_processes_killed", after_s=grace, count=len(pending))
            for proc in live:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()


async def exit_with_parent(stop: asyncio.Event, interval_s: float = 1.0) -> None:
    """For a ``--supervised`` child: drain and stop once the supervising process is gone
    (this process is then re-parented, so ``getppid`` changes)."""
    parent = os.getppid()
    while not stop.is_set():
        await asyncio.sleep(interval_s)
        if os.getppid() != parent:
            log.warning("worker_parent_gone", parent=parent)
            stop.set()
            return
