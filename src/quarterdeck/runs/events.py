"""Live fan-out of run events inside one process.

One LISTEN connection per process receives ``pg_notify`` from any writer (any replica or worker)
and wakes the SSE streams and ``wait`` calls that follow that run. The notification only says
"something changed for run X"; readers then read the events from Postgres, which stays the only
source of truth, so a missed notification costs latency, never data (readers also re-poll).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from typing import Any

import asyncpg
import structlog

from quarterdeck.runs.repository import EVENTS_CHANNEL
from quarterdeck.store.pool import connect_once

log = structlog.get_logger(__name__)


class RunEventHub:
    def __init__(self, url: str) -> None:
        self.url = url
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None and not self._conn.is_closed():
            with contextlib.suppress(Exception):
                await self._conn.close()

    async def _listen_forever(self) -> None:
        while True:
            try:
                self._conn = await connect_once(self.url)
                await self._conn.add_listener(EVENTS_CHANNEL, self._on_notify)
                while not self._conn.is_closed():
                    await asyncio.sleep(1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect on any failure; readers poll meanwhile
                log.warning("event_listener_reconnecting", error=str(exc))
            self._wake_all()
            await asyncio.sleep(1.0)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        for event in self._waiters.get(str(payload), ()):
            event.set()

    def _wake_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()

    @contextlib.contextmanager
    def subscribe(self, run_id: str) -> Any:
        event = asyncio.Event()
        self._waiters[run_id].add(event)
        try:
            yield event
        finally:
            self._waiters[run_id].discard(event)
            if not self._waiters[run_id]:
                del self._waiters[run_id]
