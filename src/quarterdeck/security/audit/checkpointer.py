"""The checkpoint tick: verify what was appended since the last checkpoint, then sign the head.

Signing a head vouches for everything before it, so a tick first checks the events between the
tenant's last sealing checkpoint and its current head (an incremental verification, cheap because
it covers one interval). A tenant whose segment does not verify gets no checkpoint, and the
problems are returned: a checkpoint is never signed over tampered data, and the chain-valid gauge
drops within one interval of tampering with recent events.

Ticks run every ``audit_checkpoint_interval`` in every process, but a session advisory lock lets
only one process write at a time (others skip the tick). An idle tenant still gets a checkpoint
each tick, replacing its previous idle one: it refreshes the signed "this is where the chain
ended, at this time" that truncation is measured against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import structlog

from quarterdeck.security.audit import repository as repo
from quarterdeck.security.audit.chain import GENESIS, Position, SegmentVerifier
from quarterdeck.security.audit.checkpoints import NO_PREV, Checkpoint
from quarterdeck.security.audit.keys import AuditKeys
from quarterdeck.security.audit.models import Problem, ProblemKind
from quarterdeck.security.audit.verify import stream
from quarterdeck.store import locks
from quarterdeck.store.pool import Database

log = structlog.get_logger(__name__)
CHECKPOINT_LOCK = locks.AUDIT_CHECKPOINT


@dataclass(slots=True)
class TickResult:
    ran: bool = False
    written: int = 0
    events_checked: int = 0
    problems: list[Problem] = field(default_factory=list)


class Checkpointer:
    def __init__(self, db: Database, keys: AuditKeys) -> None:
        self.db = db
        self.keys = keys

    async def tick(self, now: datetime | None = None) -> TickResult:
        result = TickResult()
        async with self.db.acquire() as conn:
            with repo.errors("taking the checkpoint lock"):
                got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", CHECKPOINT_LOCK)
            if not got:
                return result
            try:
                result.ran = True
                with repo.errors("listing chain heads"):
                    tenants = [
                        r["tenant"]
                        for r in await conn.fetch(
                            "SELECT tenant FROM audit_chain_heads ORDER BY tenant"
                        )
                    ]
                for tenant in tenants:
                    async with conn.transaction():
                        await self._tenant(conn, tenant, now or datetime.now(UTC), result)
            finally:
                with repo.errors("releasing the checkpoint lock"):
                    await conn.execute("SELECT pg_advisory_unlock($1)", CHECKPOINT_LOCK)
        return result

    async def _tenant(
        self, conn: asyncpg.Connection, tenant: str, now: datetime, result: TickResult
    ) -> None:
        head = await repo.head(conn, tenant)
        if head is None:
            return
        last = await repo.latest_checkpoint(conn, tenant)
        sealing = await repo.latest_checkpoint(conn, tenant, sealing=True)
        anchor = await repo.latest_anchor(conn, tenant)
        start = Position(0, GENESIS)
        if anchor is not None:
            start = Position(anchor.seq, anchor.head_hash)
        if sealing is not None and sealing.seq >= start.seq:
            start = Position(sealing.seq, sealing.head_hash)
        for signed in {c.id: c for c in (last, sealing) if c is not None}.values():
            if not self.keys.verify(signed.key_fingerprint, signed.payload, signed.signature):
                return self._refuse(
                    result,
                    tenant,
                    ProblemKind.forged_checkpoint,
                    signed.seq,
                    f"checkpoint #{signed.id} has an invalid signature; not extending it",
                )
        head_pos = Position(head["seq"], bytes(head["hash"]))
        if head_pos.seq < start.seq:
            return self._refuse(
                result,
                tenant,
                ProblemKind.truncated,
                head_pos.seq + 1,
                f"the chain head is at seq {head_pos.seq}, behind the checkpoint at {start.seq}",
            )
        if head_pos.seq > start.seq:
            seg = SegmentVerifier(tenant, start, {})
            await stream(conn, seg, head_pos.seq)
            problems = seg.finish()
            result.events_checked += seg.events
            if problems:
                result.problems += problems
                log.error("audit_chain_broken", tenant=tenant, problems=len(problems))
                return None
            if seg.last != head_pos:
                return self._refuse(
                    result,
                    tenant,
                    ProblemKind.head_mismatch,
                    head_pos.seq,
                    f"events end at seq {seg.last.seq} with another hash than the chain head",
                )
        elif head_pos.hash != start.hash:
            return self._refuse(
                result,
                tenant,
                ProblemKind.head_mismatch,
                head_pos.seq,
                "the chain head's hash differs from the last checkpoint's at the same seq",
            )
        count = head_pos.seq - start.seq
        prev = last.link if last is not None else NO_PREV
        fp = self.keys.key_fingerprint
        payload = Checkpoint.payload_of(tenant, head_pos.seq, head_pos.hash, count, now, prev, fp)
        cp = Checkpoint(
            0, tenant, head_pos.seq, head_pos.hash, count, now, prev, fp, self.keys.sign(payload)
        )
        await repo.insert_checkpoint(conn, cp)
        result.written += 1
        return None

    @staticmethod
    def _refuse(
        result: TickResult, tenant: str, kind: ProblemKind, seq: int | None, detail: str
    ) -> None:
        log.error("audit_checkpoint_refused", tenant=tenant, kind=kind.value, detail=detail)
        result.problems.append(Problem(tenant=tenant, kind=kind, seq=seq, detail=detail))
