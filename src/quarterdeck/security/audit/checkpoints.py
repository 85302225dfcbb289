"""Signed checkpoints and purge anchors: the statements verification trusts, and why it may.

A hash chain alone proves only that the rows agree with each other: whoever can write the table
can rewrite a whole tail consistently. A checkpoint is an Ed25519-signed statement of a tenant's
chain head (seq and hash) at a time; rewriting anything at or before it then needs the private
key. Truncation is caught the same way: a checkpoint says the chain reached seq N.

The signed bytes are rebuilt from the stored columns on every check (never stored themselves),
so a changed column is a bad signature. Checkpoints chain too: ``prev`` is the digest of the
previous *sealing* checkpoint (one that covered new events), so deleting one from the middle is
seen. Idle checkpoints (no new events) carry the previous one's ``prev`` and only the newest is
kept, so an idle tenant costs one row, not one per interval.

An anchor is where a tenant's chain starts after a retention purge: the head of the checkpoint
the purge cut at, signed again so that nobody can invent one to excuse deleted events.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from quarterdeck.security.audit import canonical
from quarterdeck.security.audit.keys import AuditKeys, raw_public
from quarterdeck.security.audit.models import CheckpointOut, Problem, ProblemKind

CHECKPOINT_TYPE = "quarterdeck.audit.checkpoint"
ANCHOR_TYPE = "quarterdeck.audit.anchor"
NO_PREV = bytes(32)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    id: int
    tenant: str
    seq: int
    head_hash: bytes
    count: int
    created_at: datetime
    prev: bytes
    key_fingerprint: str
    signature: bytes

    @staticmethod
    def payload_of(
        tenant: str,
        seq: int,
        head_hash: bytes,
        count: int,
        created_at: datetime,
        prev: bytes,
        key_fingerprint: str,
    ) -> bytes:
        return canonical.dumps(
            {
                "count": count,
                "created_at": canonical.timestamp(created_at),
                "head_hash": head_hash.hex(),
                "key": key_fingerprint,
                "prev": prev.hex(),
                "seq": seq,
                "tenant": tenant,
                "type": CHECKPOINT_TYPE,
                "v": 1,
            }
        )

    @property
    def payload(self) -> bytes:
        return self.payload_of(
            self.tenant,
            self.seq,
            self.head_hash,
            self.count,
            self.created_at,
            self.prev,
            self.key_fingerprint,
        )

    @property
    def link(self) -> bytes:
        """What the next checkpoint's ``prev`` must be."""
        return hashlib.sha256(self.payload).digest() if self.count > 0 else self.prev

    @classmethod
    def from_row(cls, row: Any) -> Checkpoint:
        return cls(
            id=row["id"],
            tenant=row["tenant"],
            seq=row["seq"],
            head_hash=bytes(row["head_hash"]),
            count=row["count"],
            created_at=row["created_at"],
            prev=bytes(row["prev_digest"]),
            key_fingerprint=row["key_fingerprint"],
            signature=bytes(row["signature"]),
        )

    def export(self, keys: AuditKeys) -> CheckpointOut:
        return CheckpointOut(
            id=self.id,
            tenant=self.tenant,
            seq=self.seq,
            head_hash=self.head_hash.hex(),
            count=self.count,
            created_at=self.created_at,
            prev=self.prev.hex(),
            key_fingerprint=self.key_fingerprint,
            public_key=base64.b64encode(raw_public(keys.public_key)).decode(),
            payload=self.payload.decode("utf-8"),
            signature=base64.b64encode(self.signature).decode(),
        )


@dataclass(frozen=True, slots=True)
class Anchor:
    tenant: str
    seq: int
    head_hash: bytes
    checkpoint_id: int
    purged: int
    created_at: datetime
    key_fingerprint: str
    signature: bytes

    @staticmethod
    def payload_of(
        tenant: str,
        seq: int,
        head_hash: bytes,
        checkpoint_id: int,
        purged: int,
        created_at: datetime,
        key_fingerprint: str,
    ) -> bytes:
        return canonical.dumps(
            {
                "checkpoint_id": checkpoint_id,
                "created_at": canonical.timestamp(created_at),
                "head_hash": head_hash.hex(),
                "key": key_fingerprint,
                "purged": purged,
                "seq": seq,
                "tenant": tenant,
                "type": ANCHOR_TYPE,
                "v": 1,
            }
        )

    @property
    def payload(self) -> bytes:
        return self.payload_of(
            self.tenant,
            self.seq,
            self.head_hash,
            self.checkpoint_id,
            self.purged,
            self.created_at,
            self.key_fingerprint,
        )

    @classmethod
    def from_row(cls, row: Any) -> Anchor:
        return cls(
            row["tenant"],
            row["seq"],
            bytes(row["head_hash"]),
            row["checkpoint_id"],
            row["purged"],
            row["created_at"],
            row["key_fingerprint"],
            bytes(row["signature"]),
        )


@dataclass(slots=True)
class CheckedCheckpoints:
    """The outcome of checking one tenant's checkpoints: the trustworthy ones and the problems."""

    valid: list[Checkpoint]
    problems: list[Problem]

    @property
    def heads(self) -> dict[int, bytes]:
        return {cp.seq: cp.head_hash for cp in self.valid}

    @property
    def latest(self) -> Checkpoint | None:
        return max(self.valid, key=lambda cp: cp.seq, default=None)


def check_checkpoints(
    keys: AuditKeys, checkpoints: Sequence[Checkpoint], *, first_prev: bytes | None
) -> CheckedCheckpoints:
    """Authenticate one tenant's checkpoints (given in id order) and check their ``prev`` chain.

    Authentication runs newest first: the newest checkpoint needs a valid signature; an older
    sealing checkpoint whose digest is the ``prev`` of an authenticated successor is itself
    authenticated (the successor's signature commits to it), so a full verification costs one
    hash per checkpoint and a signature check only where the chain breaks.

    ``first_prev`` is what the first checkpoint's ``prev`` must be: ``NO_PREV`` for a chain
    without purges, ``None`` (unchecked) when a purge deleted its predecessors.
    """
    trusted = [False] * len(checkpoints)
    problems: list[Problem] = []
    committed: bytes | None = None
    for i in range(len(checkpoints) - 1, -1, -1):
        cp = checkpoints[i]
        payload = cp.payload
        if cp.count > 0 and committed is not None and hashlib.sha256(payload).digest() == committed:
            trusted[i] = True
        else:
            trusted[i] = keys.verify(cp.key_fingerprint, payload, cp.signature)
        if trusted[i]:
            committed = cp.prev
        else:
            problems.append(
                Problem(
                    tenant=cp.tenant,
                    kind=ProblemKind.forged_checkpoint,
                    seq=cp.seq,
                    detail=f"checkpoint #{cp.id} does not carry a valid signature by this "
                    "deployment's signing key: it was forged or altered",
                )
            )
    valid = [cp for cp, ok in zip(checkpoints, trusted, strict=True) if ok]
    expected = first_prev
    for cp, ok in zip(checkpoints, trusted, strict=True):
        if not ok:
            expected = None  # the forged one is reported; what followed it cannot be checked
            continue
        if expected is not None and cp.prev != expected:
            problems.append(
                Problem(
                    tenant=cp.tenant,
                    kind=ProblemKind.missing_checkpoint,
                    seq=cp.seq,
                    detail=f"checkpoint #{cp.id} does not follow the checkpoint before it: "
                    "a checkpoint was deleted",
                )
            )
        expected = cp.link
    problems.sort(key=lambda p: p.seq or 0)
    return CheckedCheckpoints(valid, problems)
