"""When each API key was last used: noted in memory per request, written in batches.

Operators retire keys by asking "which keys has nobody used for months?", so every key shows
``last_used_at``. Writing it on every request would put a Postgres round trip (and a row
rewrite) on every authenticated call, the gateway's relay included, where a millisecond is the
whole overhead budget. So authenticating only stores ``key id -> now`` in a dict (a few hundred
nanoseconds), and a background task writes the newest time per key every ``interval_s``
(default 30 s) in one statement; stopping the process writes what is left. The column is
therefore exact to within the interval, and a process killed outright loses at most that much
recency, never a key's existence or anything a decision depends on. ``greatest`` in the SQL
means replicas writing out of order never move a key's time backwards.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime

import structlog

from quarterdeck.kit.clock import utcnow
from quarterdeck.security.auth import repository as repo
from quarterdeck.store.pool import Database

log = structlog.get_logger(__name__)

DEFAULT_INTERVAL_S = 30.0


class KeyUsage:
    """Each key's last use, held until the next batch write (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.interval_s = interval_s
        self._clock = clock
        self._seen: dict[str, datetime] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def touch(self, key_id: str) -> None:
        """Note a use of ``key_id`` now; the writer starts with the first use in a loop."""
        self._seen[key_id] = self._clock()
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def flush(self) -> int:
        """Write what was noted since the last write; the number of keys written.

        On a failed write the times are put back (unless a newer use replaced them), so the
        next round tries again."""
        if not self._seen:
            return 0
        batch, self._seen = self._seen, {}
        try:
            async with self.db.acquire() as conn:
                await repo.note_key_use(conn, list(batch), list(batch.values()))
        except Exception:
            for key_id, at in batch.items():
                self._seen.setdefault(key_id, at)
            raise
        return len(batch)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.flush()
            except Exception as exc:  # the next round retries; a use is never worth a crash
                log.warning("auth.key_use_write_failed", error=str(exc), keys=len(self._seen))

    async def aclose(self) -> None:
        """Stop the writer and write what is left (best effort: the database may be gone)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.flush()
        except Exception as exc:
            log.warning("auth.key_use_write_failed", error=str(exc), keys=len(self._seen))
