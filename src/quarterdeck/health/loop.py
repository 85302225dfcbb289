"""A loop that ticks every interval and acts only while its elector leads.

Why one base: the scaler, the rollout controller and the report scheduler each run on every
API replica, tick on a timer, must survive any failing tick, and, when they own their election,
must stop the elector *before* cancelling it (a cancellation swallowed inside one of its waits
would otherwise keep a lock or Lease held, see ``Runtime.stop``). Getting that shutdown order
right once is the point.

A subclass implements :meth:`tick` (checking ``self.elector.is_leader`` itself: what "not
leading" means differs) and may override :meth:`on_tick_error` (count it) and
:meth:`on_stopped` (drop state held while leading).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from quarterdeck.health.leader import Elector

log = structlog.get_logger(__name__)

__all__ = ["LeaderLoop"]


class LeaderLoop:
    """``run`` ticks every ``interval_s`` until cancelled or :meth:`stop`."""

    name = "loop"  # the log event prefix

    def __init__(self, elector: Elector, *, interval_s: float, own_elector: bool) -> None:
        """``own_elector``: :meth:`run` runs the elector too, and stops it on the way out."""
        self.elector = elector
        self.interval_s = interval_s
        self.own_elector = own_elector
        self._task: asyncio.Task[None] | None = None

    @property
    def is_leader(self) -> bool:
        return self.elector.is_leader

    async def tick(self) -> Any:
        raise NotImplementedError

    def on_tick_error(self) -> None:
        """A tick raised (already logged with its traceback)."""

    async def on_stopped(self) -> None:
        """The loop ended (cancelled or stopped): release what leading held."""

    def log_fields(self) -> dict[str, Any]:
        return {}

    async def run(self) -> None:
        """Tick until cancelled or :meth:`stop`; a failing tick is logged, never fatal."""
        self._task = asyncio.current_task()
        elector_task = asyncio.create_task(self.elector.run()) if self.own_elector else None
        log.info(f"{self.name}.started", interval_s=self.interval_s, **self.log_fields())
        try:
            while True:
                try:
                    await self.tick()
                except Exception:
                    self.on_tick_error()
                    log.exception(f"{self.name}.tick_failed", **self.log_fields())
                await asyncio.sleep(self.interval_s)
        finally:
            with contextlib.suppress(Exception):
                await self.on_stopped()
            if elector_task is not None:
                # Stop before cancelling: the elector must release its lock or Lease.
                with contextlib.suppress(Exception):
                    await self.elector.stop()
                elector_task.cancel()
                await asyncio.wait([elector_task], timeout=5.0)

    async def stop(self) -> None:
        """End :meth:`run` (from another task) and wait for it."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=10.0)
