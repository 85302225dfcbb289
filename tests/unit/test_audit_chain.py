"""The record layout and the chain verifier, on synthetic rows (no database)."""

from __future__ import annotations

import hashlib
import json
import random
from datetime import UTC, datetime, timedelta, timezone

from quarterdeck.security.audit import AuditEvent, canonical
from quarterdeck.security.audit.chain import (
    EPOCH,
    GENESIS,
    Position,
    SegmentVerifier,
    head_bytes,
    link,
    tenant_json,
    timestamp_us,
)
from quarterdeck.security.audit.models import ProblemKind
from quarterdeck.security.audit.writer import prepare

TJS = tenant_json("acme")


def make_chain(n: int, start: Position = Position(0, GENESIS)) -> list[tuple[int, bytes, bytes]]:
    """``(seq, hash, prefix)`` rows linked the way the writer links them."""
    rows, prev = [], start.hash
    for seq in range(start.seq + 1, start.seq + n + 1):
        body = canonical.dumps({"i": seq, "files": [f"f{seq}.py"]})
        pre = (
            b'{"body":'
            + body
            + b',"head":'
            + head_bytes(f"key:{seq}", "tool.call", None, None, seq)
        )
        _, digest = link(pre, prev, seq, TJS)
        rows.append((seq, digest, pre))
        prev = digest
    return rows


def verify(
    rows: list[tuple[int, bytes, bytes]], **kw: object
) -> list[tuple[ProblemKind, int | None]]:
    seg = SegmentVerifier("acme", **kw)  # type: ignore[arg-type]
    seg.feed(rows)
    return [(p.kind, p.seq) for p in seg.finish()]


def test_the_record_is_canonical_json_with_the_chain_fields() -> None:
    event = AuditEvent(
        event_type="tool.call",
        tenant="acme",
        actor='k"ey',
        session_id="run_1",
        timestamp=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        files_modified=["a.py"],
        anomaly={"rule_id": "r", "severity": "high", "decision": "deny"},
        sensitive=None,
    )
    p = prepare(event)
    body = p.body_lo + b"null" + p.body_hi
    record, digest = link(b'{"body":' + body + p.head, GENESIS, 1, TJS)
    parsed = json.loads(record)
    assert canonical.dumps(parsed) == record  # the bytes are exactly the canonical form
    assert parsed["head"] == {
        "actor": 'k"ey',
        "event_type": "tool.call",
        "session_id": "run_1",
        "severity": "high",
        "timestamp_us": timestamp_us(event.timestamp),
    }
    assert parsed["prev_hash"] == "00" * 32 and parsed["seq"] == 1 and parsed["tenant"] == "acme"
    assert parsed["body"]["anomaly"]["rule_id"] == "r" and parsed["body"]["sensitive"] is None
    assert digest == hashlib.sha256(record).digest()
    assert timestamp_us(event.timestamp) == 1_767_323_045_678_901


def test_an_intact_chain_verifies_in_any_batch_split() -> None:
    rows = make_chain(50)
    seg = SegmentVerifier("acme", Position(0, GENESIS), {25: rows[24][1]})
    for i in range(0, 50, 7):
        seg.feed(rows[i : i + 7])
    assert seg.finish() == [] and seg.events == 50 and seg.last == Position(50, rows[-1][1])


def test_a_segment_can_start_from_an_anchor() -> None:
    head = make_chain(10)
    tail = make_chain(5, Position(10, head[-1][1]))
    assert verify(tail, start=Position(10, head[-1][1])) == []
    assert verify(tail, start=Position(10, GENESIS)) == [(ProblemKind.edited, 11)]


def test_edits_deletions_and_moves_are_told_apart() -> None:
    rows = make_chain(40)
    edited = list(rows)
    edited[9] = (10, rows[9][1], rows[9][2].replace(b"key:10", b"key:xx"))
    assert verify(edited, start=Position(0, GENESIS)) == [(ProblemKind.edited, 10)]

    deleted = rows[:19] + rows[21:]
    kinds = verify(deleted, start=Position(0, GENESIS))
    assert kinds == [(ProblemKind.deleted, 20)]

    moved = list(rows)
    moved[4], moved[5] = (5, rows[5][1], rows[5][2]), (6, rows[4][1], rows[4][2])
    assert verify(moved, start=Position(0, GENESIS)) == [
        (ProblemKind.reordered, 5),
        (ProblemKind.reordered, 6),
    ]


def test_a_rewritten_chain_only_fails_at_the_checkpoint() -> None:
    """Edit seq 3 and re-link everything after it: every row checks out locally."""
    rows = make_chain(20)
    forged, prev = [], GENESIS
    for seq, _, pre in rows:
        pre = pre.replace(b"key:3", b"key:9") if seq == 3 else pre
        _, digest = link(pre, prev, seq, TJS)
        forged.append((seq, digest, pre))
        prev = digest
    assert verify(forged, start=Position(0, GENESIS)) == []  # locally consistent
    assert verify(forged, start=Position(0, GENESIS), checkpoints={20: rows[-1][1]}) == [
        (ProblemKind.checkpoint_mismatch, 20)
    ]


def test_problems_are_capped() -> None:
    rows = [(seq, b"\x00" * 32, pre) for seq, _, pre in make_chain(30)]
    seg = SegmentVerifier("acme", Position(0, GENESIS), max_problems=5)
    seg.feed(rows)
    problems = seg.finish()
    assert len(problems) == 6 and problems[-1].kind is ProblemKind.too_many
    assert problems[-1].detail == "25 more problem(s) not listed"


def test_prepared_records_are_the_canonical_encoding_of_varied_events() -> None:
    """The writer's shortcuts (head built by hand, body in two halves, timestamps as integer
    microseconds) give exactly ``canonical.dumps`` of the record's fields, whatever the event:
    existing chains and the verifier depend on these bytes."""
    rng = random.Random(11)
    texts = [None, "", "key:k_1", 'q"b\\s\n\t\x01', "é漢🚀", "x" * 256]
    zones = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
    for i in range(400):
        ts = datetime(
            rng.randrange(1700, 2250),
            rng.randrange(1, 13),
            rng.randrange(1, 29),
            rng.randrange(24),
            rng.randrange(60),
            rng.randrange(60),
            rng.randrange(10**6),
            tzinfo=rng.choice(zones),
        )
        anomaly = rng.choice([None, {"rule_id": "r.x", "severity": "high", "tags": ["a", "é"]}])
        event = AuditEvent(
            event_type=rng.choice(["tool.call", "run.created", "policy.decision"]),
            tenant=rng.choice(["acme", "t.1:x-y"]),
            timestamp=ts,
            actor=rng.choice(texts),
            session_id=rng.choice(texts),
            agent_id=rng.choice(texts),
            user_id=rng.choice(texts),
            request_id=rng.choice(texts),
            source_ip=rng.choice(texts),
            operations=[rng.choice(texts[1:]) for _ in range(rng.randrange(3))],
            files_modified=[f"src/m{i}.py"] * rng.randrange(3),
            network_connections=[{"port": 443, "host": "pypi.org", "allowed": True}][: i % 2],
            permissions=[["fs.write", 7, None, 2.5]][: i % 2],
            duration_ms=rng.choice([None, 0, i]),
            anomaly=anomaly,
            sensitive=rng.choice([None, {"prompt": "p" * i, "output": "ok"}]),
        )
        p = prepare(event)
        utc = ts.astimezone(UTC)
        head = {
            "actor": event.actor,
            "event_type": event.event_type,
            "session_id": event.session_id,
            "severity": anomaly and anomaly["severity"],
            "timestamp_us": (utc - EPOCH) // timedelta(microseconds=1),
        }
        assert p.head == b',"head":' + canonical.dumps(head)
        body = {
            "agent_id": event.agent_id,
            "anomaly": event.anomaly_info.public() if event.anomaly_info else None,
            "data_accessed": [],
            "duration_ms": event.duration_ms,
            "files_modified": event.files_modified,
            "network_connections": event.network_connections,
            "operations": event.operations,
            "outcome": "success",
            "permissions": event.permissions,
            "request_id": event.request_id,
            "sensitive": None,
            "source_ip": event.source_ip,
            "user_id": event.user_id,
        }
        assert p.body_lo + b"null" + p.body_hi == canonical.dumps(body)
        assert p.secret == (canonical.dumps(event.sensitive) if event.sensitive else None)
        assert timestamp_us(utc) == head["timestamp_us"]
    for year in (1, 999, 1969, 1970, 2038, 9999):  # the integer form, over the whole range
        ts = datetime(year, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
        assert timestamp_us(ts) == (ts - EPOCH) // timedelta(microseconds=1)
