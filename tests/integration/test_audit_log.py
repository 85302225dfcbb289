"""The audit log against a real Postgres: recording, chaining, encryption, search, export,
shredding, and two writers appending to one chain concurrently."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from quarterdeck.security.audit import AuditEvent, AuditLog, EventFilter
from quarterdeck.security.audit.chain import head_bytes, prefix
from quarterdeck.security.audit.repository import PREFIX_SQL
from quarterdeck.store.pool import Database

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def audit(db: Database, make_settings: object) -> AsyncIterator[AuditLog]:
    log = AuditLog.from_settings(make_settings(), db)  # type: ignore[operator]
    await log.start(loops=False)
    yield log
    await log.aclose()


def event(n: int, tenant: str = "acme", **extra: object) -> AuditEvent:
    values: dict[str, object] = {
        "event_type": "tool.call",
        "tenant": tenant,
        "actor": "key:abc123",
        "timestamp": T0 + timedelta(seconds=n),
        "session_id": f"run_{n % 3}",
        "agent_id": "coder",
        "operations": ["write_file"],
        "files_modified": [f"src/f{n}.py"],
        "network_connections": [{"host": "pypi.org", "port": 443, "allowed": True}],
        "permissions": ["fs.write"],
        "duration_ms": 12,
        "sensitive": {"prompt": f"secret prompt {n}", "output": "tool output"},
    }
    values.update(extra)
    return AuditEvent(**values)  # type: ignore[arg-type]


async def test_events_chain_per_tenant_and_read_back_decrypted(
    audit: AuditLog, db: Database
) -> None:
    for n in range(5):
        await audit.record(event(n))
    await audit.record(event(9, tenant="globex"))
    async with db.acquire() as conn:
        rows = await conn.fetch("SELECT tenant, seq FROM audit_events ORDER BY tenant, seq")
        body = await conn.fetchval("SELECT body FROM audit_events WHERE seq = 1 LIMIT 1")
    assert [(r["tenant"], r["seq"]) for r in rows] == [("acme", s) for s in range(1, 6)] + [
        ("globex", 1)
    ]
    assert b"secret prompt" not in bytes(body)  # encrypted at rest
    page = await audit.search(EventFilter(tenant="acme", limit=10))
    assert [e.seq for e in page.items] == [5, 4, 3, 2, 1]
    first = page.items[-1]
    assert first.sensitive == {"prompt": "secret prompt 0", "output": "tool output"}
    assert first.network_connections == [{"allowed": True, "host": "pypi.org", "port": 443}]
    assert first.files_modified == ["src/f0.py"] and first.agent_id == "coder"
    assert (await audit.verify()).ok


async def test_sql_rebuilds_exactly_the_bytes_python_hashed(audit: AuditLog, db: Database) -> None:
    """PREFIX_SQL must agree with chain.prefix on every string, or verify would cry wolf."""
    nasty = 'q"uote \\back\\slash \n\r\t\b\f \x01\x1f\x7f é 漢字 🚀 \u2028 </script>'
    await audit.record(event(1, actor=nasty, session_id=nasty, event_type="config.changed"))
    async with db.acquire() as conn:
        row = await conn.fetchrow(f"SELECT e.*, {PREFIX_SQL} AS pre FROM audit_events e")
    expected = prefix(
        bytes(row["body"]),
        head_bytes(nasty, "config.changed", nasty, None, 1_772_366_401_000_000),
    )
    assert bytes(row["pre"]) == expected
    report = await audit.verify()
    assert report.ok, report.problems


async def test_search_filters_anomalies_and_pagination(audit: AuditLog) -> None:
    for n in range(7):
        await audit.record(event(n))
    await audit.record(
        event(
            20,
            event_type="policy.decision",
            actor="key:zzz",
            anomaly={
                "rule_id": "egress.block",
                "severity": "high",
                "decision": "deny",
                "tags": ["network"],
                "description": "blocked egress to paste site",
            },
        )
    )
    await audit.record(
        event(21, anomaly={"rule_id": "secrets", "severity": "low", "decision": "flag"})
    )
    high = await audit.search(EventFilter(anomalies=True, severities=["high"]))
    assert [e.event_type for e in high.items] == ["policy.decision"]
    assert high.items[0].anomaly == {
        "rule_id": "egress.block",
        "severity": "high",
        "decision": "deny",
        "tags": ["network"],
        "description": "blocked egress to paste site",
    }
    assert len((await audit.search(EventFilter(anomalies=True))).items) == 2
    assert [e.seq for e in (await audit.search(EventFilter(actor="key:zzz"))).items] == [8]
    by_run = await audit.search(EventFilter(session_id="run_1"))
    assert {e.session_id for e in by_run.items} == {"run_1"} and len(by_run.items) == 2
    window = await audit.search(
        EventFilter(since=T0 + timedelta(seconds=2), until=T0 + timedelta(seconds=4))
    )
    assert [e.seq for e in window.items] == [4, 3]
    seen: list[int] = []
    cursor = None
    while True:
        page = await audit.search(EventFilter(tenant="acme", limit=4, cursor=cursor))
        seen += [e.seq for e in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == list(range(9, 0, -1))


async def test_record_nowait_is_written_by_the_flusher_and_at_shutdown(
    db: Database, make_settings: object
) -> None:
    log = AuditLog.from_settings(make_settings(), db)  # type: ignore[operator]
    await log.start(loops=False)
    log.record_nowait(event(1))
    for _ in range(200):  # flushed on its own within max_delay (0.1 s)
        async with db.acquire() as conn:
            if await conn.fetchval("SELECT count(*) FROM audit_events") == 1:
                break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("a buffered event was not flushed")
    for n in range(2, 302):
        log.record_nowait(event(n))
    await log.aclose()  # clean shutdown writes everything still buffered
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM audit_events") == 301


async def test_two_writers_share_one_chain_without_forking(
    db_url: str, make_settings: object
) -> None:
    """Two processes' worth of appenders (separate pools) on one tenant: seq stays contiguous."""
    settings = make_settings()  # type: ignore[operator]
    dbs = [Database(db_url, min_size=1, max_size=4) for _ in range(2)]
    logs = []
    for d in dbs:
        await d.open()
        log = AuditLog.from_settings(settings, d)
        await log.start(loops=False)
        logs.append(log)

    async def burst(log: AuditLog, base: int) -> None:
        for n in range(base, base + 300):
            log.record_nowait(event(n, sensitive={"n": n}))
            if n % 50 == 0:
                await log.record(event(n + 10_000))

    await asyncio.gather(burst(logs[0], 0), burst(logs[1], 1000))
    for log in logs:
        await log.aclose()
    async with dbs[0].acquire() as conn:
        seqs = [r["seq"] for r in await conn.fetch("SELECT seq FROM audit_events ORDER BY seq")]
    assert seqs == list(range(1, 613))
    report = await logs[0].verify()
    assert report.ok and report.events_checked == 612
    for d in dbs:
        await d.close()


async def test_shredding_keeps_the_chain_verifiable(audit: AuditLog, db: Database) -> None:
    for n in range(3):
        await audit.record(event(n))
    await audit.record(event(3, tenant="globex"))
    assert await audit.shred_tenant("acme", actor="key:admin") == 1
    await audit.record(event(4, sensitive={"prompt": "after shredding"}))
    page = await audit.search(EventFilter(tenant="acme"))
    by_seq = {e.seq: e for e in page.items}
    assert all(by_seq[s].sensitive == {"shredded": True} for s in (1, 2, 3))
    assert by_seq[4].event_type == "audit.tenant_shredded" and by_seq[4].actor == "key:admin"
    assert by_seq[5].sensitive == {"prompt": "after shredding"}  # a fresh key
    other = await audit.search(EventFilter(tenant="globex"))
    assert other.items[0].sensitive == {"prompt": "secret prompt 3", "output": "tool output"}
    async with db.acquire() as conn:
        keys = await conn.fetch(
            "SELECT key_id, wrapped IS NULL AS gone FROM audit_data_keys WHERE tenant = 'acme' "
            "ORDER BY key_id"
        )
    assert [(k["key_id"], k["gone"]) for k in keys] == [(1, True), (2, False)]
    assert (await audit.verify()).ok


async def test_export_lines_carry_the_hashed_record(audit: AuditLog, data_dir: Path) -> None:
    for n in range(4):
        await audit.record(event(n))
    await audit.checkpoint()
    lines = [line async for line in audit.export("acme")]
    assert [line["seq"] for line in lines] == [1, 2, 3, 4]
    prev = bytes(32).hex()
    for line in lines:
        record = line["record"].encode()
        assert hashlib.sha256(record).hexdigest() == line["hash"]
        assert json.loads(record)["prev_hash"] == prev == line["prev_hash"]
        prev = line["hash"]
    assert lines[0]["sensitive"] == {"prompt": "secret prompt 0", "output": "tool output"}
    cps = [cp async for cp in audit.export_checkpoints("acme")]
    assert len(cps) == 1 and cps[0].seq == 4 and cps[0].head_hash == lines[-1]["hash"]
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(cps[0].public_key))
    public.verify(base64.b64decode(cps[0].signature), cps[0].payload.encode())  # raises if bad
    assert hashlib.sha256(base64.b64decode(cps[0].public_key)).hexdigest() in cps[0].key_fingerprint


async def test_a_bad_event_fails_its_caller_not_the_batch(audit: AuditLog) -> None:
    with pytest.raises(ValueError, match="NaN"):
        await audit.record(event(1, operations=[float("nan")]))
    with pytest.raises(ValueError, match="keys must be strings"):
        audit.record_nowait(event(2, sensitive={1: "x"}))
    await audit.record(event(3))
    assert (await audit.verify()).events_checked == 1
