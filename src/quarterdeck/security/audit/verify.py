"""Verifying the chains against the database: what ``quarterdeck audit verify`` runs.

Per tenant, inside one read-only REPEATABLE READ transaction (so the anchor, the checkpoints, the
head and the events are one consistent snapshot even while appends, checkpoints and purges go on):

1. The purge anchor, if any, must carry a valid signature; the chain is checked from it (or from
   genesis: seq 0, 32 zero bytes).
2. Checkpoints are authenticated and their own chain checked (:func:`check_checkpoints`).
   Checkpoints exported off-site may be passed in and count as much as stored ones.
3. Events are streamed in ``seq`` order and every link checked (:class:`SegmentVerifier`),
   including the stored hash at every checkpointed seq.
4. The chain must reach the newest valid checkpoint (else its tail was truncated) and agree with
   the chain-head row.

Events are fetched in seq ranges, the next range requested before the current one is hashed, so
Postgres assembles record prefixes on its core while this process hashes on another.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from quarterdeck.security.audit import repository as repo
from quarterdeck.security.audit.chain import GENESIS, Position, SegmentVerifier
from quarterdeck.security.audit.checkpoints import NO_PREV, Checkpoint, check_checkpoints
from quarterdeck.security.audit.keys import AuditKeys
from quarterdeck.security.audit.models import Problem, ProblemKind, VerifyReport
from quarterdeck.store.pool import Database

BATCH = 5_000  # seqs per query (~4 MB of records)
CHUNK = 250  # rows hashed between two reads of the socket


@dataclass(slots=True)
class TenantResult:
    tenant: str
    events: int = 0
    checkpoints: int = 0
    last: Position = field(default_factory=lambda: Position(0, GENESIS))
    problems: list[Problem] = field(default_factory=list)


async def stream(
    conn: asyncpg.Connection, seg: SegmentVerifier, until_seq: int | None = None
) -> None:
    """Feed ``seg`` every event after its current position (up to ``until_seq``).

    Batches are seq ranges; each is requested before the previous one is hashed, and hashing
    yields every ``CHUNK`` rows so the driver keeps reading meanwhile.
    """
    top = await repo.max_seq(conn, seg.tenant)
    if until_seq is not None:
        top = min(top, until_seq)
    starts = range(seg.last.seq, top, BATCH)
    if not starts:
        return

    def fetch(after: int) -> asyncio.Task[list[asyncpg.Record]]:
        return asyncio.create_task(
            repo.chain_rows(conn, seg.tenant, after, min(after + BATCH, top))
        )

    pending = fetch(starts[0])
    try:
        for i in range(len(starts)):
            rows = await pending
            if i + 1 < len(starts):
                pending = fetch(starts[i + 1])
                await asyncio.sleep(0)  # send the next query before hashing this batch
            for j in range(0, len(rows), CHUNK):
                seg.feed(rows[j : j + CHUNK])
                await asyncio.sleep(0)
    finally:
        if not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pending


class Verifier:
    def __init__(self, db: Database, keys: AuditKeys) -> None:
        self.db = db
        self.keys = keys

    async def verify(
        self, tenant: str | None = None, external: Sequence[Checkpoint] = ()
    ) -> VerifyReport:
        started = time.monotonic()
        verified_at = datetime.now(UTC)
        if tenant is not None:
            tenants = [tenant]
        else:
            async with self.db.acquire() as conn:
                tenants = await repo.tenants(conn)
            tenants = sorted(set(tenants) | {cp.tenant for cp in external})
        results = [
            await self.verify_tenant(t, [cp for cp in external if cp.tenant == t]) for t in tenants
        ]
        problems = [p for r in results for p in r.problems]
        return VerifyReport(
            ok=not problems,
            tenants_checked=len(results),
            events_checked=sum(r.events for r in results),
            checkpoints_checked=sum(r.checkpoints for r in results),
            problems=problems,
            verified_at=verified_at,
            duration_s=round(time.monotonic() - started, 3),
        )

    async def verify_tenant(self, tenant: str, external: Sequence[Checkpoint] = ()) -> TenantResult:
        result = TenantResult(tenant)
        async with (
            self.db.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            anchor = await repo.latest_anchor(conn, tenant)
            stored = await repo.checkpoints(conn, tenant)
            head = await repo.head(conn, tenant)
            start = Position(0, GENESIS)
            if anchor is not None:
                if self.keys.verify(anchor.key_fingerprint, anchor.payload, anchor.signature):
                    start = Position(anchor.seq, anchor.head_hash)
                else:
                    result.problems.append(
                        Problem(
                            tenant=tenant,
                            kind=ProblemKind.forged_anchor,
                            seq=anchor.seq,
                            detail="the purge anchor's signature is invalid: the chain is "
                            "checked from genesis instead",
                        )
                    )
            checked = check_checkpoints(
                self.keys, stored, first_prev=None if anchor is not None else NO_PREV
            )
            result.checkpoints = len(stored) + len(external)
            result.problems += checked.problems
            heads = {s: h for s, h in checked.heads.items() if s > start.seq}
            sources = {
                cp.seq: f"checkpoint #{cp.id} ({cp.created_at:%Y-%m-%d %H:%M:%S}Z)"
                for cp in checked.valid
            }
            self._merge_external(tenant, external, start, heads, sources, result)
            seg = SegmentVerifier(tenant, start, heads)
            await stream(conn, seg)
        result.problems += seg.finish()
        result.events, result.last = seg.events, seg.last
        self._check_end(tenant, seg.last, heads, sources, head, result)
        return result

    def _merge_external(
        self,
        tenant: str,
        external: Sequence[Checkpoint],
        start: Position,
        heads: dict[int, bytes],
        sources: dict[int, str],
        result: TenantResult,
    ) -> None:
        for cp in external:
            if not self.keys.verify(cp.key_fingerprint, cp.payload, cp.signature):
                result.problems.append(
                    Problem(
                        tenant=tenant,
                        kind=ProblemKind.forged_checkpoint,
                        seq=cp.seq,
                        detail=f"off-site checkpoint #{cp.id} has an invalid signature",
                    )
                )
                continue
            if cp.seq <= start.seq:
                continue  # sealed a segment that was purged since
            if heads.get(cp.seq, cp.head_hash) != cp.head_hash:
                result.problems.append(
                    Problem(
                        tenant=tenant,
                        kind=ProblemKind.checkpoint_mismatch,
                        seq=cp.seq,
                        detail=f"off-site checkpoint #{cp.id} records a different head than "
                        "the stored checkpoint at the same seq",
                    )
                )
            heads[cp.seq] = cp.head_hash
            sources.setdefault(cp.seq, f"off-site checkpoint #{cp.id}")

    @staticmethod
    def _check_end(
        tenant: str,
        last: Position,
        heads: dict[int, bytes],
        sources: dict[int, str],
        head: asyncpg.Record | None,
        result: TenantResult,
    ) -> None:
        top = max(heads, default=0)
        if top > last.seq:
            result.problems.append(
                Problem(
                    tenant=tenant,
                    kind=ProblemKind.truncated,
                    seq=last.seq + 1,
                    detail=f"the chain ends at seq {last.seq} but {sources[top]} sealed seq "
                    f"{top}: events {last.seq + 1}..{top} were removed",
                )
            )
        if head is None:
            if last.seq > 0:
                result.problems.append(
                    Problem(
                        tenant=tenant,
                        kind=ProblemKind.head_mismatch,
                        detail="the chain-head row is missing",
                    )
                )
            return
        if head["seq"] > last.seq and top <= last.seq:
            result.problems.append(
                Problem(
                    tenant=tenant,
                    kind=ProblemKind.truncated,
                    seq=last.seq + 1,
                    detail=f"the chain ends at seq {last.seq} but its head records seq "
                    f"{head['seq']}: the tail was removed",
                )
            )
        elif head["seq"] < last.seq or (
            head["seq"] == last.seq and bytes(head["hash"]) != last.hash
        ):
            result.problems.append(
                Problem(
                    tenant=tenant,
                    kind=ProblemKind.head_mismatch,
                    seq=head["seq"],
                    detail=f"the chain-head row (seq {head['seq']}) does not match the last "
                    f"event (seq {last.seq})",
                )
            )
