"""Live fan-out of run events inside one process, by polling only the runs someone watches.

SSE streams and ``wait`` calls subscribe to a run; while anyone is subscribed, one query every
``interval`` seconds reads the newest event id of each watched run and wakes the subscribers of
runs that moved. Readers then read the events themselves, so Postgres stays the only source of
truth, any replica's writes are seen, and a missed wake-up costs latency, never data.

Why not LISTEN/NOTIFY: Postgres serialises the commits of every transaction that sends a
NOTIFY behind one database-wide lock held through the commit's WAL flush. With a notification
in each run statement that lock capped the whole system at one commit per fsync (~250 runs/s on
the reference box). Polling costs one indexed query per interval, only while someone watches.

Pages that list many runs (the dashboard's) do not watch each run: ``subscribe_all`` wakes them
when a run of their tenant (or any run, for a viewer of every tenant) has a new event. The same
loop reads, at most every ``all_interval`` seconds and only while someone subscribes, the events
newer than the last ones it saw with their runs' tenants: one range scan of the events' primary
key, however many pages are open. It looks back :data:`LOOKBACK` ids, not only past the newest
it saw, because ids are drawn at insert and committed in any order: an event of a transaction
that commits after a later one would otherwise never be seen. A tenant's page so learns nothing
of another tenant's activity, not even its timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator

import asyncpg
import structlog

from quarterdeck.runs.read_repository import event_tenants_after, latest_event_id, latest_event_ids
from quarterdeck.store.pool import connect_once

log = structlog.get_logger(__name__)

LOOKBACK = 2_000
"""How many event ids below the newest seen are read again, for events committed late."""
BATCH = 20_000
"""The most events one all-runs poll reads; more than that wakes every subscriber."""


class RunEventHub:
    def __init__(self, url: str, *, interval: float = 0.1, all_interval: float = 1.0) -> None:
        self.url = url
        self.interval = interval
        self.all_interval = all_interval
        self._all: dict[asyncio.Event, str | None] = {}
        """All-runs subscribers, each with its tenant (None: every tenant's runs)."""
        self._all_floor: int | None = None
        """Events above this id are the ones the next all-runs poll reads (None: no poll yet)."""
        self._all_seen: set[int] = set()
        self._all_polled = 0.0
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
            if not self._waiters and not self._all:
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
        """Wake the subscribers of every watched run that has a newer event than last time, and
        (every ``all_interval``) the all-runs subscribers when any run has one."""
        if self._all and time.monotonic() - self._all_polled >= self.all_interval:
            await self._poll_all()
        run_ids = list(self._waiters)
        if not run_ids:
            return
        latest = await latest_event_ids(await self._connection(), run_ids)
        for run_id, event_id in latest.items():
            if self._seen.get(run_id) != event_id:
                self._seen[run_id] = event_id
                for event in self._waiters.get(run_id, ()):
                    event.set()

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await connect_once(self.url)
        return self._conn

    async def _poll_all(self) -> None:
        self._all_polled = time.monotonic()
        conn = await self._connection()
        first = self._all_floor is None
        if self._all_floor is None:
            self._all_floor = max(0, await latest_event_id(conn) - LOOKBACK)
        rows = await event_tenants_after(conn, self._all_floor, BATCH)
        new = [(event_id, tenant) for event_id, tenant in rows if event_id not in self._all_seen]
        if first or len(rows) == BATCH:
            # No reference yet (subscribers came since the last poll: a run may have moved
            # between their subscribing and now), or too much to read: wake them all, which at
            # worst is spurious, as ``poll_once`` does for a newly watched run.
            self._wake(None)
        elif new:
            self._wake({tenant for _, tenant in new})
        newest = max((event_id for event_id, _ in rows), default=self._all_floor + LOOKBACK)
        self._all_floor = max(self._all_floor, newest - LOOKBACK)
        self._all_seen = {i for i in self._all_seen | {i for i, _ in new} if i > self._all_floor}

    def _wake(self, tenants: set[str] | None) -> None:
        """Wake the all-runs subscribers who may see runs of ``tenants`` (None: all of them)."""
        for event, reach in self._all.items():
            if tenants is None or reach is None or reach in tenants:
                event.set()

    def _wake_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()
        self._wake(None)

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

    @contextlib.contextmanager
    def subscribe_all(self, tenant: str | None = None) -> Iterator[asyncio.Event]:
        """An event set whenever a run of ``tenant`` (None: any run) has a new event (a run
        submitted, moved, finished), seen within ``all_interval``. The subscriber clears it; a
        wake-up may be spurious (after a failed poll), never lost while subscribed.

        It starts set: what the subscriber shows was read before it subscribed, and a change in
        between is in no poll's difference; one refresh at the start closes that gap."""
        event = asyncio.Event()
        event.set()
        self._all[event] = tenant
        self._wanted.set()
        try:
            yield event
        finally:
            self._all.pop(event, None)
            if not self._all:
                self._all_floor = None  # a later first subscriber starts from then, not now
                self._all_seen = set()
