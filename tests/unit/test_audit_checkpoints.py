"""Checkpoint authentication and the checkpoint chain, without a database."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from quarterdeck.security.audit.checkpoints import NO_PREV, Checkpoint, check_checkpoints
from quarterdeck.security.audit.keys import AuditKeys
from quarterdeck.security.audit.models import ProblemKind

KEYS = AuditKeys.generate()
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def signed(cp_id: int, seq: int, count: int, prev: bytes, keys: AuditKeys = KEYS) -> Checkpoint:
    head = hashlib.sha256(b"%d" % seq).digest()
    at = T0 + timedelta(minutes=cp_id)
    payload = Checkpoint.payload_of("acme", seq, head, count, at, prev, keys.key_fingerprint)
    return Checkpoint(
        cp_id, "acme", seq, head, count, at, prev, keys.key_fingerprint, keys.sign(payload)
    )


def chain_of(n: int, idle_last: bool = False) -> list[Checkpoint]:
    cps, prev, seq = [], NO_PREV, 0
    for i in range(1, n + 1):
        seq += 10
        cp = signed(i, seq, 10, prev)
        cps.append(cp)
        prev = cp.link
    if idle_last:
        cps.append(signed(n + 1, seq, 0, prev))
    return cps


def kinds(
    cps: list[Checkpoint], first_prev: bytes | None = NO_PREV
) -> list[tuple[ProblemKind, int | None]]:
    return [(p.kind, p.seq) for p in check_checkpoints(KEYS, cps, first_prev=first_prev).problems]


def test_a_clean_chain_is_all_valid() -> None:
    cps = chain_of(5, idle_last=True)
    checked = check_checkpoints(KEYS, cps, first_prev=NO_PREV)
    assert checked.problems == [] and checked.valid == cps
    assert checked.latest is not None and checked.latest.seq == 50
    assert cps[-1].link == cps[-2].link  # idle checkpoints do not extend the chain


def test_an_altered_or_invented_checkpoint_is_forged() -> None:
    cps = chain_of(4)
    cps[2] = replace(cps[2], seq=25)  # the signed bytes are rebuilt from the columns
    assert kinds(cps) == [(ProblemKind.forged_checkpoint, 25)]
    other = AuditKeys.generate()
    cps = [*chain_of(3), signed(9, 99, 69, chain_of(3)[-1].link, keys=other)]
    assert kinds(cps) == [(ProblemKind.forged_checkpoint, 99)]


def test_a_deleted_checkpoint_breaks_the_chain() -> None:
    cps = chain_of(5)
    assert kinds(cps[:2] + cps[3:]) == [(ProblemKind.missing_checkpoint, 40)]
    assert kinds(cps[2:], first_prev=None) == []  # after a purge the start is unchecked
    assert kinds(cps[2:]) == [(ProblemKind.missing_checkpoint, 30)]


def test_only_the_newest_signature_is_checked_when_the_chain_is_intact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    real = AuditKeys.verify

    def counting(self: AuditKeys, fp: str, payload: bytes, signature: bytes) -> bool:
        calls.append(1)
        return real(self, fp, payload, signature)

    monkeypatch.setattr(AuditKeys, "verify", counting)
    assert kinds(chain_of(200)) == []
    assert len(calls) == 1
