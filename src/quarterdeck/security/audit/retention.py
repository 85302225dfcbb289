"""Retention: deleting old events without breaking the chain.

Deleting the start of a hash chain would leave the first remaining event pointing at a hash
nobody can check. So a purge only removes a whole *sealed segment*: every event up to a signed
checkpoint written before the tenant's retention cutoff (never anything newer than that
checkpoint). It then stores a signed anchor holding that checkpoint's head (seq and hash), and
verification starts from the anchor instead of genesis.

Before deleting, the segment is verified against the checkpoint: a purge never destroys the
evidence of tampering (that tenant is skipped and the problems returned). Purge and verification
do not race: verification reads one snapshot, and a purge is one transaction, serialised across
processes by an advisory lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog

from quarterdeck.security.audit import repository as repo
from quarterdeck.security.audit.chain import GENESIS, Position, SegmentVerifier
from quarterdeck.security.audit.checkpoints import Anchor
from quarterdeck.security.audit.keys import AuditKeys
from quarterdeck.security.audit.models import Problem, ProblemKind, PurgeResult
from quarterdeck.security.audit.verify import stream
from quarterdeck.store import locks
from quarterdeck.store.pool import Database

log = structlog.get_logger(__name__)
PURGE_LOCK = locks.AUDIT_PURGE


@dataclass(slots=True)
class PurgeOutcome:
    purged: list[PurgeResult] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


class Purger:
    def __init__(self, db: Database, keys: AuditKeys, default_retention: float) -> None:
        self.db = db
        self.keys = keys
        self.default_retention = default_retention

    async def purge(self, now: datetime | None = None, tenant: str | None = None) -> PurgeOutcome:
        now = now or datetime.now(UTC)
        outcome = PurgeOutcome()
        async with self.db.acquire() as conn:
            names = [tenant] if tenant is not None else await repo.tenants(conn)
        for name in names:
            await self._tenant(name, now, outcome)
        return outcome

    async def _tenant(self, tenant: str, now: datetime, outcome: PurgeOutcome) -> None:
        async with self.db.transaction() as conn:
            if not await repo.try_lock(conn, PURGE_LOCK):
                return
            seconds = await repo.retention(conn, tenant) or self.default_retention
            cutoff = now - timedelta(seconds=seconds)
            anchor = await repo.latest_anchor(conn, tenant)
            start = Position(0, GENESIS)
            if anchor is not None:
                if not self.keys.verify(anchor.key_fingerprint, anchor.payload, anchor.signature):
                    outcome.problems.append(
                        Problem(
                            tenant=tenant,
                            kind=ProblemKind.forged_anchor,
                            seq=anchor.seq,
                            detail="purge skipped: the current anchor is not validly signed",
                        )
                    )
                    return
                start = Position(anchor.seq, anchor.head_hash)
            cp = await repo.purge_candidate(conn, tenant, cutoff, start.seq)
            if cp is None:
                return
            if not self.keys.verify(cp.key_fingerprint, cp.payload, cp.signature):
                outcome.problems.append(
                    Problem(
                        tenant=tenant,
                        kind=ProblemKind.forged_checkpoint,
                        seq=cp.seq,
                        detail=f"purge skipped: checkpoint #{cp.id} is not validly signed",
                    )
                )
                return
            seg = SegmentVerifier(tenant, start, {cp.seq: cp.head_hash})
            await stream(conn, seg, cp.seq)
            problems = seg.finish()
            if seg.last.seq != cp.seq and not problems:
                problems.append(
                    Problem(
                        tenant=tenant,
                        kind=ProblemKind.truncated,
                        seq=seg.last.seq + 1,
                        detail=f"the segment ends at seq {seg.last.seq}, before the "
                        f"checkpoint at {cp.seq}",
                    )
                )
            if problems:
                log.error("audit_purge_refused", tenant=tenant, problems=len(problems))
                outcome.problems += problems
                return
            created = datetime.now(UTC)
            fp = self.keys.key_fingerprint
            count = cp.seq - start.seq
            payload = Anchor.payload_of(tenant, cp.seq, cp.head_hash, cp.id, count, created, fp)
            new_anchor = Anchor(
                tenant, cp.seq, cp.head_hash, cp.id, count, created, fp, self.keys.sign(payload)
            )
            deleted = await repo.purge(conn, new_anchor)
        log.info("audit_purged", tenant=tenant, events=deleted, anchor_seq=cp.seq)
        outcome.purged.append(PurgeResult(tenant=tenant, events_purged=deleted, anchor_seq=cp.seq))
