"""Live fan-out of run events inside one process, by polling only the runs someone watches.

SSE streams and ``wait`` calls subscribe to a run; while anyone is subscribed, one query every
``interval`` seconds reads the newest event id of each watched run and wakes the subscribers of
runs that moved. Readers then read the events themselves, so Postgres stays the only source of
truth, any replica's writes are seen, and a missed wake-up costs latency, never data.

Why not LISTEN/NOTIFY: Postgres serialises the commits of every transaction that sends a
NOTIFY behind one database-wide lock held through the commit's WAL flush. With a notification
in each run statement that lock capped the whole system at one commit per fsync (~250 runs/s on
the reference box). Polling costs one indexed query per interval, only while someone watches.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterator

import asyncpg
import structlog

from quarterdeck.runs.read_repository import latest_event_ids
from quarterdeck.store.pool import connect_once

log = structlog.get_logger(__name__)


class RunEventHub:
    def __init__(self, url: str, *, interval: float = 0.1) -> None:
        self.url = url
        self.interval = interval
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._seen: dict[str, int] = {}
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._wanted = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._poll_forever())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._disconnect()

    async def _disconnect(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            with contextlib.suppress(Exception):
                await self._conn.close()
        self._conn = None

    async def _poll_forever(self) -> None:
        while True:
            if not self._waiters:
                self._wanted.clear()
                await self._wanted.wait()
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect on any failure; readers re-poll meanwhile
                log.warning("event_poll_failed", error=str(exc))
                await self._disconnect()
                self._wake_all()
                await asyncio.sleep(1.0)
            await asyncio.sleep(self.interval)

    async def poll_once(self) -> None:
        """Wake the subscribers of every watched run that has a newer event than last time."""
        run_ids = list(self._waiters)
        if not run_ids:
            return
        if self._conn is None or self._conn.is_closed():
            self._conn = await connect_once(self.url)
        latest = await latest_event_ids(self._conn, run_ids)
        for run_id, event_id in latest.items():
            if self._seen.get(run_id) != event_id:
                self._seen[run_id] = event_id
                for event in self._waiters.get(run_id, ()):
                    event.set()

    def _wake_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()

    @contextlib.contextmanager
    def subscribe(self, run_id: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiters[run_id].add(event)
        self._wanted.set()
        try:
            yield event
        finally:
            self._waiters[run_id].discard(event)
            if not self._waiters[run_id]:
                del self._waiters[run_id]
                self._seen.pop(run_id, None)
