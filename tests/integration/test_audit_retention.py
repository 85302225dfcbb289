"""Retention purges, the checkpoint loop, and the audit HTTP API and CLI, against a real Postgres."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from quarterdeck.app import install_error_handlers
from quarterdeck.kit.wiring import services
from quarterdeck.metrics import REGISTRY
from quarterdeck.security.audit import AuditEvent, AuditLog, ProblemKind
from quarterdeck.security.audit import api as audit_api
from quarterdeck.store.pool import Database
from tests.conftest import eventually

DAY = timedelta(days=1)
T1 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def audit(db: Database, make_settings: object) -> AsyncIterator[AuditLog]:
    log = AuditLog.from_settings(make_settings(audit_retention="30d"), db)  # type: ignore[operator]
    await log.start(loops=False)
    yield log
    await log.aclose()


async def record(log: AuditLog, n: int, tenant: str = "acme") -> None:
    for i in range(n):
        await log.record(
            AuditEvent(event_type="tool.call", tenant=tenant, sensitive={"i": i}, operations=["x"])
        )


async def seqs(db: Database, tenant: str = "acme") -> list[int]:
    async with db.acquire() as conn:
        rows = await conn.fetch(
            "SELECT seq FROM audit_events WHERE tenant = $1 ORDER BY seq", tenant
        )
    return [r["seq"] for r in rows]


async def test_purge_removes_sealed_segments_and_the_chain_still_verifies(
    audit: AuditLog, db: Database
) -> None:
    await audit.set_retention("acme", 86400)  # seq 1: the retention change is audited
    await record(audit, 4)  # seq 2..5
    await audit.checkpoint(now=T1)  # seals 1..5
    await record(audit, 3)  # 6..8
    await audit.checkpoint(now=T1 + 1.5 * DAY)  # seals 6..8
    await record(audit, 2)  # 9..10, not sealed

    first = await audit.purge(now=T1 + 2 * DAY)  # cutoff T1 + 1 day: only the first segment
    assert [(r.tenant, r.events_purged, r.anchor_seq) for r in first.purged] == [("acme", 5, 5)]
    assert await seqs(db) == [6, 7, 8, 9, 10, 11]  # 11: the audit.purged event
    report = await audit.verify()
    assert report.ok, report.problems
    assert report.events_checked == 6

    second = await audit.purge(now=T1 + 400 * DAY)  # everything is past retention now...
    assert [(r.events_purged, r.anchor_seq) for r in second.purged] == [(3, 8)]
    assert await seqs(db) == [9, 10, 11, 12]  # ...but nothing newer than the last checkpoint
    assert (await audit.verify()).ok
    async with db.acquire() as conn:
        anchors = await conn.fetch("SELECT seq, purged FROM audit_anchors WHERE tenant = 'acme'")
    assert [(a["seq"], a["purged"]) for a in anchors] == [(8, 3)]


async def test_purge_never_touches_events_newer_than_the_last_checkpoint(
    audit: AuditLog, db: Database
) -> None:
    await record(audit, 3)
    assert (await audit.purge(now=T1 + 10_000 * DAY)).purged == []  # no checkpoint: no purge
    await audit.checkpoint(now=T1)
    await record(audit, 4)  # 4..7 are after the checkpoint
    outcome = await audit.purge(now=T1 + 10_000 * DAY)
    assert [r.anchor_seq for r in outcome.purged] == [3]
    assert await seqs(db) == [4, 5, 6, 7, 8]
    assert (await audit.verify()).ok


async def test_purge_uses_the_default_retention_and_refuses_tampered_segments(
    audit: AuditLog, db: Database
) -> None:
    await record(audit, 3)
    await record(audit, 2, tenant="globex")
    await audit.checkpoint(now=T1)
    assert (await audit.purge(now=T1 + 29 * DAY)).purged == []  # default retention: 30 days
    async with db.transaction() as conn:
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute("UPDATE audit_events SET actor = 'x' WHERE tenant = 'acme' AND seq = 2")
    outcome = await audit.purge(now=T1 + 31 * DAY)
    assert [r.tenant for r in outcome.purged] == ["globex"]
    assert [(p.tenant, p.kind, p.seq) for p in outcome.problems] == [
        ("acme", ProblemKind.edited, 2)
    ]
    assert await seqs(db) == [1, 2, 3]  # the evidence stays


async def test_a_forged_anchor_is_detected(audit: AuditLog, db: Database) -> None:
    await record(audit, 4)
    await audit.checkpoint(now=T1)
    await audit.purge(now=T1 + 31 * DAY)
    assert (await audit.verify()).ok
    async with db.acquire() as conn:  # pretend more was purged than was
        await conn.execute("UPDATE audit_anchors SET purged = 400 WHERE tenant = 'acme'")
    report = await audit.verify()
    assert [(p.kind, p.seq) for p in report.problems] == [
        (ProblemKind.forged_anchor, 4),
        (ProblemKind.deleted, 1),  # checked from genesis instead
    ]


async def test_the_checkpoint_loop_seals_events_and_stays_small_when_idle(
    db: Database, make_settings: object
) -> None:
    log = AuditLog.from_settings(make_settings(audit_checkpoint_interval=0.2), db)  # type: ignore[operator]
    await log.start()
    try:
        await record(log, 3)

        async def sealed() -> bool:
            async with db.acquire() as conn:
                return bool(
                    await conn.fetchval(
                        "SELECT count(*) FROM audit_checkpoints WHERE count = 0 AND seq = 3"
                    )
                )

        await eventually(sealed, timeout=20)  # a sealing tick, then at least one idle tick
        await asyncio.sleep(0.6)  # several more idle ticks
        async with db.acquire() as conn:
            rows = await conn.fetch("SELECT seq, count FROM audit_checkpoints ORDER BY id")
        assert [(r["seq"], r["count"]) for r in rows] == [(3, 3), (3, 0)]
        assert REGISTRY.get_sample_value("claude_agent_audit_chain_valid", {"tenant": "all"}) == 1
        assert (
            REGISTRY.get_sample_value("claude_agent_audit_last_checkpoint_timestamp_seconds") or 0
        ) > 0
    finally:
        await log.aclose()
    assert (await log.verify()).ok


@pytest.fixture
async def client(audit: AuditLog) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(audit_api.router)
    services(app).add(AuditLog, audit)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://qd") as c:
        yield c


async def test_http_api(audit: AuditLog, client: httpx.AsyncClient) -> None:
    await record(audit, 2)
    await audit.record(
        AuditEvent(
            event_type="policy.decision",
            tenant="acme",
            actor="key:a",
            anomaly={"rule_id": "r1", "severity": "high", "decision": "deny"},
        )
    )
    r = await client.get("/v1/audit/events", params={"anomalies": "true", "severity": "high"})
    assert r.status_code == 200
    assert [(e["seq"], e["anomaly"]["rule_id"]) for e in r.json()["items"]] == [(3, "r1")]
    page = (await client.get("/v1/audit/events", params={"tenant": "acme", "limit": 2})).json()
    assert [e["seq"] for e in page["items"]] == [3, 2] and page["next_cursor"]
    rest = await client.get("/v1/audit/events", params={"cursor": page["next_cursor"]})
    assert [e["seq"] for e in rest.json()["items"]] == [1]
    assert rest.json()["items"][0]["sensitive"] == {"i": 0}
    for bad in ({"severity": "apocalyptic"}, {"cursor": "!!"}, {"since": "2026-01-01T00:00:00"}):
        r = await client.get("/v1/audit/events", params=bad)
        assert r.status_code == 422, bad
        assert r.headers["content-type"].startswith("application/problem+json")

    r = await client.put("/v1/audit/retention/acme", json={"retention": "90d"})
    assert r.json() == {"tenant": "acme", "retention_seconds": 7_776_000}
    assert (await client.get("/v1/audit/retention/acme")).json()["retention_seconds"] == 7_776_000
    assert (await client.get("/v1/audit/retention/globex")).json()["retention_seconds"] == 2_592_000
    assert (
        await client.put("/v1/audit/retention/acme", json={"retention": "0"})
    ).status_code == 422
    assert (await client.put("/v1/audit/retention/a%20b", json={"retention": 5})).status_code == 422

    r = await client.post("/v1/audit/tenants/acme/shred")
    assert r.json() == {"tenant": "acme", "keys_shredded": 1}
    events = (await client.get("/v1/audit/events", params={"tenant": "acme"})).json()["items"]
    assert [e["event_type"] for e in events[:2]] == [
        "audit.tenant_shredded",
        "audit.retention_changed",
    ]
    assert events[0]["actor"] == "key:dev"
    assert {e["seq"]: e["sensitive"] for e in events}[1] == {"shredded": True}

    await audit.checkpoint()
    cps = (await client.get("/v1/audit/checkpoints", params={"tenant": "acme"})).json()
    assert [c["seq"] for c in cps["items"]] == [5] and cps["next_cursor"] is None
    assert (await client.get("/v1/audit/verify")).json()["ok"] is True


async def test_cli_export_purge_and_shred(audit: AuditLog, db_url: str, data_dir: Path) -> None:
    await record(audit, 3)
    await record(audit, 1, tenant="globex")
    env = {**os.environ, "POSTGRES_URL": db_url, "QUARTERDECK_DATA_DIR": str(data_dir)}
    code = "from quarterdeck.security.audit.cli import app; app(prog_name='quarterdeck audit')"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", code, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    out = data_dir / "events.jsonl"
    result = await asyncio.to_thread(cli, "export", "--tenant", "acme", "--output", str(out))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(x["tenant"], x["seq"], x["sensitive"]) for x in lines] == [
        ("acme", 1, {"i": 0}),
        ("acme", 2, {"i": 1}),
        ("acme", 3, {"i": 2}),
    ]
    stdout = await asyncio.to_thread(cli, "export", "--from", "2000-01-01", "--to", "2999-01-01")
    assert len(stdout.stdout.splitlines()) == 4

    refused = await asyncio.to_thread(cli, "shred", "acme")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    shredded = await asyncio.to_thread(cli, "shred", "acme", "--yes")
    assert shredded.returncode == 0 and "destroyed 1 data key" in shredded.stdout
    purge = await asyncio.to_thread(cli, "purge", "--json")
    assert purge.returncode == 0 and json.loads(purge.stdout) == {"purged": [], "problems": []}
    shown = await asyncio.to_thread(cli, "retention", "acme", "7d")
    assert shown.returncode == 0 and "604800 s" in shown.stdout
    assert (await audit.verify()).ok
