"""Group commit for concurrent callers: many single-item writes become one batched write.

A worker process runs hundreds of runs at once, and each run makes the same few writes (claim,
checkpoint, finish). Sent one by one, every write pays a round trip, a statement and a commit; on
a small machine that overhead, not the work, bounds throughput. A :class:`Coalescer` collects the
items submitted during one event-loop iteration (and while earlier flushes are in flight) and
hands them to ``flush`` together. Each caller still awaits its own item's durable result, so the
semantics of a single write are kept.

If a batch fails for a reason that is not about the connection, the items are retried one by one,
so one bad item (a constraint violation, say) fails only its own caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class Coalescer(Generic[In, Out]):
    def __init__(
        self,
        flush: Callable[[list[In]], Awaitable[Sequence[Out]]],
        *,
        max_batch: int = 200,
        max_in_flight: int = 4,
        fatal: tuple[type[BaseException], ...] = (),
    ) -> None:
        """``flush(items)`` returns one result per item, in order; ``fatal`` errors are not
        retried item by item (e.g. the database being down fails the whole batch at once)."""
        self._flush = flush
        self.max_batch = max_batch
        self._slots = asyncio.Semaphore(max_in_flight)
        self._fatal = fatal
        self._pending: list[tuple[In, asyncio.Future[Out]]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.items = 0

    async def submit(self, item: In) -> Out:
        """Queue ``item`` for the next batch and wait for its result.

        The write happens even if the caller is cancelled meanwhile; the caller just stops
        waiting (the same as a shielded single write).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Out] = loop.create_future()
        future.add_done_callback(_retrieve)
        self._pending.append((item, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._start)
        # Not shielded: a cancelled caller cancels only its own future; the batch it is in
        # still runs (flushes are tasks of their own) and skips settling it.
        return await future

    def _start(self) -> None:
        self._scheduled = False
        task = asyncio.get_running_loop().create_task(self._drain())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        async with self._slots:
            # Items that arrived while we waited for a slot ride along in this batch.
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            if self._pending and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._start)
            if batch:
                await self._run(batch)

    async def _run(self, batch: list[tuple[In, asyncio.Future[Out]]]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            results = await self._flush([item for item, _ in batch])
        except self._fatal as exc:
            for _, future in batch:
                _settle(future, error=exc)
            return
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], error=exc)
                return
            for item, future in batch:  # isolate the bad item: one by one
                try:
                    _settle(future, result=(await self._flush([item]))[0])
                except Exception as one_exc:
                    _settle(future, error=one_exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result=result)

    async def aclose(self) -> None:
        """Wait for batches in flight (used at shutdown so no accepted write is dropped)."""
        while self._tasks or self._pending:
            if self._pending and not self._scheduled:
                self._start()
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _retrieve(future: asyncio.Future[Out]) -> None:
    """Mark the error seen: a caller that stopped waiting must not cause a log warning."""
    if not future.cancelled():
        future.exception()


def _settle(
    future: asyncio.Future[Out], *, result: Out | None = None, error: BaseException | None = None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]
