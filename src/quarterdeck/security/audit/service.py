"""``AuditLog``: the one object the rest of Quarterdeck records audit events through.

It owns the batch appender (recording), the checkpoint loop (signing and incremental
verification), and optionally a periodic full verification, and hands reads, verification,
retention and shredding to the module that implements each.

Chain state for the metrics: ``claude_agent_audit_chain_valid`` goes to 0 as soon as any
verification (a checkpoint tick or a full run) finds a problem, and back to 1 only when a *full*
verification passes, so a problem in old events is not hidden by later ticks that only look at
new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

import structlog

from quarterdeck.config import Settings
from quarterdeck.exceptions import StoreError
from quarterdeck.security.audit import event_types, metrics
from quarterdeck.security.audit import repository as repo
from quarterdeck.security.audit.appender import BatchAppender
from quarterdeck.security.audit.checkpointer import Checkpointer, TickResult
from quarterdeck.security.audit.checkpoints import Checkpoint
from quarterdeck.security.audit.keys import AuditKeys
from quarterdeck.security.audit.models import (
    AuditEvent,
    CheckpointOut,
    CheckpointPage,
    EventFilter,
    EventPage,
    VerifyReport,
    check_tenant,
)
from quarterdeck.security.audit.reader import Reader
from quarterdeck.security.audit.retention import PurgeOutcome, Purger
from quarterdeck.security.audit.verify import Verifier
from quarterdeck.security.audit.writer import ChainWriter, prepare
from quarterdeck.store.pool import Database

log = structlog.get_logger(__name__)
SYSTEM_ACTOR = "system:audit"


class AuditLog:
    def __init__(
        self,
        db: Database,
        keys: AuditKeys,
        *,
        checkpoint_interval: float = 60.0,
        default_retention: float = 7 * 31_536_000.0,
        full_verify_interval: float | None = None,
        max_batch: int = 5000,
        max_delay: float = 0.1,
    ) -> None:
        self.db = db
        self.keys = keys
        self.checkpoint_interval = checkpoint_interval
        self.default_retention = default_retention
        self.full_verify_interval = full_verify_interval
        self.writer = ChainWriter(db, keys)
        self.appender = BatchAppender(self.writer.write, max_batch=max_batch, max_delay=max_delay)
        self.verifier = Verifier(db, keys)
        self.checkpointer = Checkpointer(db, keys)
        self.reader = Reader(db, keys)
        self.purger = Purger(db, keys, default_retention)
        self._tasks: list[asyncio.Task[None]] = []
        self._broken = False

    @classmethod
    def from_settings(cls, settings: Settings, db: Database) -> AuditLog:
        """Load (in development: create) the master and signing keys named by ``settings``."""
        return cls(
            db,
            AuditKeys.from_settings(settings),
            checkpoint_interval=settings.audit_checkpoint_interval,
            default_retention=settings.audit_retention,
        )

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self, *, loops: bool = True) -> None:
        """Start the flusher, and (``loops``) the checkpoint and full-verification loops."""
        async with self.db.acquire() as conn:
            encoding = await conn.fetchval("SHOW server_encoding")
        if encoding != "UTF8":  # records are rebuilt in SQL as UTF-8 text
            raise StoreError(f"the audit log needs a UTF8 database, not {encoding}")
        self.appender.start()
        if loops:
            self._tasks.append(asyncio.create_task(self._checkpoint_loop(), name="audit-ckpt"))
            if self.full_verify_interval:
                self._tasks.append(asyncio.create_task(self._verify_loop(), name="audit-verify"))

    async def aclose(self, timeout: float = 30.0) -> None:
        """Write every buffered event, seal them with a last checkpoint, stop the loops.

        The last checkpoint gets at most 10 s: sealing is a courtesy (the next process's first
        tick seals whatever this one could not); writing the events is not.
        """
        await self.appender.aclose(timeout)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._tasks:
            try:
                await asyncio.wait_for(self.checkpoint(), 10.0)
            except Exception as exc:  # includes the timeout
                log.warning("audit_final_checkpoint_skipped", error=str(exc) or type(exc).__name__)
        self._tasks.clear()

    # --- recording ---------------------------------------------------------------------------
    async def record(self, event: AuditEvent) -> None:
        """Append ``event``; durable when this returns. ValueError if it cannot be stored."""
        await self.appender.append(prepare(event))

    def record_nowait(self, event: AuditEvent) -> None:
        """Append ``event`` without waiting: written within ``max_delay`` (and at shutdown)."""
        self.appender.append_nowait(prepare(event))

    async def flush(self) -> None:
        await self.appender.flush()

    # --- integrity ---------------------------------------------------------------------------
    async def verify(
        self, tenant: str | None = None, external: Sequence[Checkpoint] = ()
    ) -> VerifyReport:
        """Full verification (see :mod:`verify`); updates the chain metrics."""
        report = await self.verifier.verify(tenant, external)
        if tenant is None:
            self._broken = not report.ok
        else:
            self._broken = self._broken or not report.ok
        metrics.set_chain_state(not self._broken, len(report.problems))
        return report

    async def checkpoint(self, now: datetime | None = None) -> TickResult:
        """One checkpoint tick: verify new events, sign heads (see :mod:`checkpointer`)."""
        result = await self.checkpointer.tick(now)
        if result.ran:
            self._broken = self._broken or bool(result.problems)
            metrics.set_chain_state(not self._broken, len(result.problems))
            metrics.LAST_CHECKPOINT.set_to_current_time()
        return result

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(self.checkpoint_interval)
            try:
                await self.checkpoint()
            except Exception as exc:  # keep ticking: the next one may work
                log.warning("audit_checkpoint_failed", error=str(exc))

    async def _verify_loop(self) -> None:
        assert self.full_verify_interval
        while True:
            await asyncio.sleep(self.full_verify_interval)
            try:
                report = await self.verify()
                if not report.ok:
                    log.error("audit_verify_failed", problems=[str(p) for p in report.problems])
            except Exception as exc:
                log.warning("audit_verify_error", error=str(exc))

    # --- retention and erasure -----------------------------------------------------------------
    async def purge(self, now: datetime | None = None, tenant: str | None = None) -> PurgeOutcome:
        """Delete sealed segments older than each tenant's retention (see :mod:`retention`)."""
        outcome = await self.purger.purge(now, tenant)
        for r in outcome.purged:
            await self._record_admin(
                r.tenant,
                event_types.AUDIT_PURGED,
                SYSTEM_ACTOR,
                [f"purged events 1..{r.anchor_seq}", f"events_purged={r.events_purged}"],
            )
        return outcome

    async def get_retention(self, tenant: str) -> float:
        async with self.db.acquire() as conn:
            return await repo.retention(conn, check_tenant(tenant)) or self.default_retention

    async def set_retention(self, tenant: str, seconds: float, actor: str = SYSTEM_ACTOR) -> None:
        if seconds <= 0:
            raise ValueError("retention must be greater than zero")
        async with self.db.acquire() as conn:
            await repo.set_retention(conn, check_tenant(tenant), seconds)
        await self._record_admin(
            tenant, event_types.AUDIT_RETENTION_CHANGED, actor, [f"retention_seconds={seconds:g}"]
        )

    async def shred_tenant(self, tenant: str, actor: str = SYSTEM_ACTOR) -> int:
        """Crypto-shred ``tenant``: destroy its data keys. Returns how many were destroyed.

        The events stay and still verify; their sensitive parts read as ``{"shredded": true}``.
        Later events of the tenant are encrypted under a new key.
        """
        check_tenant(tenant)
        await self.appender.flush()  # events recorded before the request are shredded too
        async with self.db.transaction() as conn:
            await repo.lock_heads(conn, [tenant])
            count = await repo.shred(conn, tenant)
        self.writer.forget(tenant)
        try:
            async with self.db.acquire() as conn:
                await repo.vacuum_keys(conn)
        except StoreError as exc:  # the keys are gone for readers already; vacuum is hygiene
            log.warning("audit_vacuum_failed", error=str(exc))
        await self._record_admin(
            tenant, event_types.AUDIT_TENANT_SHREDDED, actor, [f"data_keys_destroyed={count}"]
        )
        return count

    async def _record_admin(
        self, tenant: str, event_type: str, actor: str, operations: list[str]
    ) -> None:
        await self.record(
            AuditEvent(event_type=event_type, tenant=tenant, actor=actor, operations=operations)
        )

    # --- reading -------------------------------------------------------------------------------
    async def search(self, f: EventFilter) -> EventPage:
        return await self.reader.search(f)

    def export(
        self,
        tenant: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> AsyncIterator[dict[str, object]]:
        return self.reader.export(tenant, since, until)

    async def checkpoints(
        self, tenant: str | None = None, after: int = 0, limit: int = 100
    ) -> CheckpointPage:
        async with self.db.acquire() as conn:
            rows = await repo.checkpoints(conn, tenant, after, limit + 1)
        items = [cp.export(self.keys) for cp in rows[:limit]]
        return CheckpointPage(
            items=items, next_cursor=rows[limit - 1].id if len(rows) > limit else None
        )

    async def export_checkpoints(self, tenant: str | None = None) -> AsyncIterator[CheckpointOut]:
        after = 0
        while True:
            page = await self.checkpoints(tenant, after, 1000)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            after = page.next_cursor
