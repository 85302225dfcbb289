"""Writes gateway calls to Postgres in batches, off the response path, and settles their holds.

The relay hands every finished call to :meth:`CallRecorder.record`, which only appends to a
buffer and counts metrics, so a slow or absent database never adds latency to a client's
response. A background task flushes the buffer every ``flush_interval_s`` (or sooner when
``max_batch`` calls are waiting) in one transaction per batch: the calls are copied into
``gateway_calls`` and the budget holds they settle are deleted, so a call's worst-case hold and
its metered cost are never both counted, nor neither.

Nothing accepted is lost while Postgres is briefly down: a batch stays at the head of the buffer
until a flush of it commits, retried with backoff. The buffer is bounded (``capacity``, sized
for minutes of peak traffic); past it new calls are dropped, counted and logged, because
unbounded memory would take the whole process down instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Sequence

import asyncpg
import structlog
from prometheus_client import Counter

from quarterdeck import metrics
from quarterdeck.budgets import repository as budgets_repository
from quarterdeck.exceptions import QuarterdeckError
from quarterdeck.gateway import repository
from quarterdeck.gateway.models import GatewayCall
from quarterdeck.providers import telemetry
from quarterdeck.store.pool import Database

log = structlog.get_logger(__name__)

DROPPED = Counter(
    "quarterdeck_gateway_calls_dropped_total",
    "Gateway calls not recorded: the buffer was full (Postgres down too long) or a row was "
    "rejected by the database",
    ["reason"],
    registry=metrics.REGISTRY,
)
FLUSH_FAILURES = Counter(
    "quarterdeck_gateway_record_flush_failures_total",
    "Failed writes of a batch of gateway calls (the batch is kept and retried)",
    registry=metrics.REGISTRY,
)
MAX_BACKOFF_S = 5.0
CLOSE_TIMEOUT_S = 10.0
SIMULATED_PREFIX = "simulated"
# A call that can never be stored: the database rejects a value, or a field is not what the
# model says (a relay bug). Retrying would block every call behind it.
_BAD_ROW = (asyncpg.DataError, TypeError, ValueError, AttributeError)


class CallRecorder:
    """A bounded buffer of calls and the task that writes them (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        *,
        flush_interval_s: float = 0.2,
        max_batch: int = 1000,
        capacity: int = 100_000,
    ) -> None:
        self._db = db
        self._interval = flush_interval_s
        self._max_batch = max_batch
        self._capacity = capacity
        self._buffer: deque[GatewayCall] = deque()
        self._wake = asyncio.Event()  # max_batch calls are waiting, or closing
        self._stop = asyncio.Event()  # closing: ends a backoff sleep too
        self._lock = asyncio.Lock()  # one flush at a time: a batch is the buffer's head
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._last_drop_log = 0.0
        self.dropped = 0
        self.written = 0

    @property
    def pending(self) -> int:
        """Calls accepted and not yet written."""
        return len(self._buffer)

    def record(self, call: GatewayCall) -> None:
        """Accept ``call`` for writing and count its metrics. Never blocks and never raises."""
        try:
            self._observe(call)
        except Exception:  # a metrics bug must not lose the billing record
            log.exception("gateway.record_metrics_failed", call_id=call.id)
        if len(self._buffer) >= self._capacity:
            self._drop(1, "buffer_full")
            return
        self._buffer.append(call)
        if len(self._buffer) >= self._max_batch:
            self._wake.set()

    async def start(self) -> None:
        if self._task is None:
            self._closing = False
            self._stop.clear()
            self._task = asyncio.create_task(self._run(), name="gateway-call-recorder")

    async def aclose(self) -> None:
        """Stop the task and write everything accepted (retrying for up to 10 s)."""
        self._closing = True
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        delay = self._interval
        while self._buffer:
            if await self.flush():
                continue
            if time.monotonic() + delay > deadline:
                lost = len(self._buffer)
                self._buffer.clear()
                self._drop(lost, "shutdown")
                log.error("gateway.calls_lost_at_shutdown", calls=lost)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)

    async def flush(self) -> bool:
        """Write every buffered call, batch by batch; False when a batch failed (it is kept)."""
        async with self._lock:
            return await self._flush()

    async def _flush(self) -> bool:
        while self._buffer:
            batch = list(itertools.islice(self._buffer, self._max_batch))
            try:
                await self._write(batch)
            except (QuarterdeckError, asyncpg.PostgresError, OSError) as exc:  # db unavailable
                FLUSH_FAILURES.inc()
                log.warning("gateway.record_flush_failed", calls=len(batch), error=str(exc))
                return False
            except Exception:  # anything else: kept and retried too; the writer must go on
                FLUSH_FAILURES.inc()
                log.exception("gateway.record_flush_crashed", calls=len(batch))
                return False
            for _ in batch:  # record() only appends on the right, so the head is this batch
                self._buffer.popleft()
            self.written += len(batch)
        return True

    async def _run(self) -> None:
        delay = self._interval
        while not self._closing:
            if delay > self._interval:  # backing off: a full buffer must not hammer Postgres
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
            self._wake.clear()
            if self._closing:
                return
            ok = await self.flush()
            delay = self._interval if ok else min(max(delay, 0.05) * 2, MAX_BACKOFF_S)

    async def _write(self, batch: Sequence[GatewayCall]) -> None:
        try:
            await self._transaction(batch, idempotent=False)
        except asyncpg.UniqueViolationError:
            # A retry of a batch whose commit succeeded but whose answer was lost.
            await self._transaction(batch, idempotent=True)
        except _BAD_ROW:
            await self._write_one_by_one(batch)

    async def _transaction(self, batch: Sequence[GatewayCall], *, idempotent: bool) -> None:
        hold_ids = [c.hold_id for c in batch if c.hold_id]
        async with self._db.transaction() as conn:
            await repository.insert_calls(conn, batch, idempotent=idempotent)
            if hold_ids:
                await budgets_repository.delete_holds(conn, hold_ids)

    async def _write_one_by_one(self, batch: Sequence[GatewayCall]) -> None:
        """A batch that cannot be stored as a whole (a NUL byte in a model name, a field of the
        wrong type): write each call in its own savepoint and drop only the ones that cannot be
        stored, their holds still settled, so one bad call never blocks the calls behind it."""
        async with self._db.transaction() as conn:
            for call in batch:
                try:
                    async with conn.transaction():
                        await repository.insert_calls(conn, [call], idempotent=True)
                except _BAD_ROW as exc:
                    self._drop(1, "invalid")
                    log.error("gateway.call_rejected", call_id=call.id, error=str(exc))
            hold_ids = [c.hold_id for c in batch if c.hold_id]
            if hold_ids:
                await budgets_repository.delete_holds(conn, hold_ids)

    def _drop(self, count: int, reason: str) -> None:
        self.dropped += count
        DROPPED.labels(reason=reason).inc(count)
        now = time.monotonic()
        if now - self._last_drop_log > 10.0:  # one line per 10 s, not one per call
            self._last_drop_log = now
            log.error(
                "gateway.calls_dropped",
                reason=reason,
                dropped_total=self.dropped,
                pending=len(self._buffer),
                capacity=self._capacity,
            )

    @staticmethod
    def _observe(call: GatewayCall) -> None:
        """The guide's token, cost and latency metrics, for gateway traffic too."""
        model = call.served_model or call.model
        provider = "simulated" if model.startswith(SIMULATED_PREFIX) else "anthropic"
        telemetry.record_call(
            agent_type="gateway",
            provider=provider,
            model=model,
            usage=call.usage,
            cost=call.cost_usd,
            latency_s=call.duration_ms / 1000,
            ttft_s=call.ttfb_ms / 1000 if call.stream and call.ttfb_ms is not None else None,
        )
