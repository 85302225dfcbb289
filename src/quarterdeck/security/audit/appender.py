"""Group commit for audit events: buffer in process, write in batches, never lose a clean shutdown.

One transaction per event would cap appends at a few thousand per second and hold a chain-head
lock per event. Instead one flusher task drains the buffer: a batch is written as soon as anyone
awaits durability (:meth:`BatchAppender.append`; events recorded while that batch is written form
the next one), when the buffer holds ``max_batch`` events, or ``max_delay`` after the oldest
fire-and-forget event (:meth:`BatchAppender.append_nowait`), whether or not anything else is
ever written: a crash loses at most the last ``max_delay`` of fire-and-forget events.

Failures: an awaiting caller gets the error. Fire-and-forget events go back to the front of the
buffer and are retried with backoff while the database is unavailable; if the database *rejects*
a batch, its events are retried one at a time so a single unstorable event cannot block the rest
(that one is logged and counted as dropped). :meth:`BatchAppender.aclose` writes whatever is
buffered before returning.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeAlias

import structlog

from quarterdeck.exceptions import Unavailable
from quarterdeck.security.audit import metrics
from quarterdeck.security.audit.writer import Prepared

log = structlog.get_logger(__name__)
Write = Callable[[Sequence[Prepared]], Awaitable[None]]
# A buffered entry: a bare event from ``append_nowait``; (event, future) from ``append``
# (durable); (None, future) is a flush marker. Fire-and-forget events, the bulk, are stored bare:
# a pair per event would double the objects that outlive young-generation GC passes while they
# wait, and with them the cost of full collections (tens of thousands buffered).
_Item: TypeAlias = "Prepared | tuple[Prepared | None, asyncio.Future[None]]"


class BatchAppender:
    def __init__(
        self,
        write: Write,
        *,
        max_batch: int = 5000,
        max_delay: float = 0.1,
        max_buffer: int = 500_000,
    ) -> None:
        self._write = write
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.max_buffer = max_buffer
        self._buffer: list[_Item] = []
        self._waiters = 0
        self._oldest = 0.0
        self._wake = asyncio.Event()
        self._idle = True
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        if self._task is None:
            self._closing = False
            self._task = asyncio.create_task(self._run(), name="audit-flusher")

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def append(self, item: Prepared) -> None:
        """Returns once ``item`` is committed; raises what the write raised."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._push((item, future))
        self._waiters += 1
        self._wake.set()
        await future

    def append_nowait(self, item: Prepared) -> None:
        buffer = self._buffer  # once per event: _push, inlined
        size = len(buffer)
        if size >= self.max_buffer:
            metrics.DROPPED.labels(reason="overflow").inc()
            log.error("audit_buffer_full", dropped=item.event_type, tenant=item.tenant)
            return
        if not size:
            self._oldest = asyncio.get_running_loop().time()
        buffer.append(item)
        # The first event into an empty buffer must wake the flusher: idle, it waits for a
        # wake-up with no timeout, and without one the event would sit in memory until an
        # unrelated durable write came along (a SIGKILL then lost it). Later events ride on
        # the deadline timer it then starts, or on a full batch.
        if (not size or size + 1 >= self.max_batch) and not self._wake.is_set():
            self._wake.set()

    async def flush(self) -> None:
        """Wait until everything appended before this call was written (or given up on).

        A marker goes into the buffer behind those events and is resolved once the batches
        before it are done, so a flush under sustained load does not wait for an empty buffer.
        """
        if self._task is None:
            if self._buffer:
                raise RuntimeError("the audit appender is not started")
            return
        if not self._buffer and self._idle:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._push((None, future))
        self._waiters += 1
        self._wake.set()
        await future

    async def aclose(self, timeout: float = 30.0) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        lost = sum(1 for e in self._buffer if not isinstance(e, tuple) or e[0] is not None)
        if self._buffer:
            if lost:
                metrics.DROPPED.labels(reason="shutdown").inc(lost)
                log.error("audit_events_lost_at_shutdown", count=lost)
            for entry in self._buffer:
                if isinstance(entry, tuple) and not entry[1].done():
                    entry[1].set_exception(Unavailable("audit log closed before the write"))
            self._buffer.clear()
        metrics.BUFFERED.set(0)
        self._task = None

    def _push(self, item: _Item) -> None:
        if not self._buffer:
            self._oldest = asyncio.get_running_loop().time()
        self._buffer.append(item)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.05
        while True:
            if not self._buffer:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if not (self._waiters or self._closing or len(self._buffer) >= self.max_batch):
                delay = self._oldest + self.max_delay - loop.time()
                if delay > 0:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), delay)
                    continue
            batch = self._buffer[: self.max_batch]
            del self._buffer[: self.max_batch]
            metrics.BUFFERED.set(len(self._buffer) + len(batch))
            self._waiters -= sum(1 for entry in batch if isinstance(entry, tuple))
            self._idle = False
            try:
                ok = await self._write_batch(batch)
            finally:
                self._idle = True
                metrics.BUFFERED.set(len(self._buffer))
            if ok:
                backoff = 0.05
            else:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _write_batch(self, batch: list[_Item]) -> bool:
        """Write one batch; False when it must be retried later (database unavailable)."""
        prepared: list[Prepared] = []
        durable: list[asyncio.Future[None]] = []
        markers: list[_Item] = []
        for entry in batch:
            if not isinstance(entry, tuple):
                prepared.append(entry)
            elif entry[0] is None:
                markers.append(entry)
            else:
                prepared.append(entry[0])
                durable.append(entry[1])
        try:
            if prepared:
                await self._write(prepared)
        except Exception as exc:
            for future in durable:
                if not future.done():
                    future.set_exception(exc)  # an awaiting caller decides for itself
            retry: list[_Item] = [entry for entry in batch if not isinstance(entry, tuple)]
            if isinstance(exc, Unavailable | OSError):
                log.warning("audit_write_deferred", error=str(exc), events=len(retry))
                self._requeue(retry + markers)
                return False
            log.error("audit_batch_rejected", error=str(exc), events=len(prepared))
            if len(retry) > 1:  # find the unstorable event(s): write the others one by one
                for index, item in enumerate(retry):
                    if not await self._write_batch([item]):  # unavailable: requeued itself
                        self._buffer[1:1] = retry[index + 1 :] + markers
                        return False
            else:
                for p in retry:
                    assert not isinstance(p, tuple)
                    metrics.DROPPED.labels(reason="rejected").inc()
                    log.error(
                        "audit_event_dropped",
                        tenant=p.tenant,
                        event_type=p.event_type,
                        error=str(exc),
                    )
        else:
            for future in durable:
                if not future.done():
                    future.set_result(None)
            _count(prepared)
        for entry in markers:
            if isinstance(entry, tuple) and not entry[1].done():
                entry[1].set_result(None)
        return True

    def _requeue(self, items: list[_Item]) -> None:
        if items:
            self._buffer[:0] = items
            self._oldest = asyncio.get_running_loop().time()


def _count(batch: Sequence[Prepared]) -> None:
    counts: dict[str, int] = {}
    for p in batch:
        counts[p.event_type] = counts.get(p.event_type, 0) + 1
    for event_type, n in counts.items():
        metrics.count_event(event_type, n)
