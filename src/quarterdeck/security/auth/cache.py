"""A small in-process cache of key id -> key record, so authenticating costs no round trip.

Entries live ``ttl_s`` seconds (default 5): a key revoked by another process stops working
within that time, and one revoked in this process stops at once (:meth:`KeyCache.invalidate`).
Misses are cached too, so a stream of requests with made-up key ids reaches the database once
per id per TTL, not once per request; that is safe because ids are random and a new key's id
has never been looked up before. Concurrent misses for one id share a single load.

Expiry is *not* cached: the record carries ``expires_at`` and every request compares it with
the clock, so an expiring key stops exactly on time.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from quarterdeck.security.auth.models import KeyRecord

DEFAULT_TTL_S = 5.0
DEFAULT_MAX_ENTRIES = 10_000

Loader = Callable[[str], Awaitable[KeyRecord | None]]


class KeyCache:
    def __init__(
        self,
        ttl_s: float = DEFAULT_TTL_S,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s < 0 or max_entries < 1:
            raise ValueError("ttl_s must be >= 0 and max_entries >= 1")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, KeyRecord | None]] = OrderedDict()
        self._loading: dict[str, asyncio.Future[KeyRecord | None]] = {}
        self._generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key_id: str, load: Loader) -> KeyRecord | None:
        """The record for ``key_id`` (None if there is none), from the cache or ``load``.

        The load runs as its own task, so a caller that goes away (client disconnect) does
        not cancel it for the others waiting on it.
        """
        entry = self._entries.get(key_id)
        if entry is not None and entry[0] > self._clock():
            self._entries.move_to_end(key_id)
            return entry[1]
        task = self._loading.get(key_id)
        if task is None:
            task = asyncio.ensure_future(self._load(key_id, load))
            self._loading[key_id] = task
            task.add_done_callback(lambda done: self._loaded(key_id, done))
        return await asyncio.shield(task)

    async def _load(self, key_id: str, load: Loader) -> KeyRecord | None:
        generation = self._generation
        record = await load(key_id)
        # A load that raced an invalidation may hold the old row: its waiters asked before
        # the change and get it, but it is not kept.
        if generation == self._generation:
            self._put(key_id, record)
        return record

    def _loaded(self, key_id: str, task: asyncio.Future[KeyRecord | None]) -> None:
        if self._loading.get(key_id) is task:
            del self._loading[key_id]
        if not task.cancelled():
            task.exception()  # mark retrieved: the waiters (if any) re-raise it

    def invalidate(self, key_id: str) -> None:
        """Forget ``key_id`` now, including any load already in flight for it."""
        self._entries.pop(key_id, None)
        self._generation += 1

    def clear(self) -> None:
        self._entries.clear()
        self._generation += 1

    def _put(self, key_id: str, record: KeyRecord | None) -> None:
        if self.ttl_s == 0:
            return
        self._entries[key_id] = (self._clock() + self.ttl_s, record)
        self._entries.move_to_end(key_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
