"""Tampering with the audit log through raw SQL, and verification catching it.

Each test writes a clean chain, seals it with a signed checkpoint, then edits the database the way
someone with direct access would (triggers disabled with ``session_replication_role``, as a
superuser can), and asserts the exact problems ``verify`` reports. The baseline is always checked
first, so a test cannot pass because the chain was already broken.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from quarterdeck.app import install_error_handlers
from quarterdeck.kit.wiring import services
from quarterdeck.metrics import REGISTRY
from quarterdeck.security.audit import AuditEvent, AuditLog, ProblemKind, VerifyReport
from quarterdeck.security.audit import api as audit_api
from quarterdeck.security.audit.chain import link, tenant_json
from quarterdeck.security.audit.repository import PREFIX_SQL
from quarterdeck.store.pool import Database

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def audit(db: Database, make_settings: object) -> AsyncIterator[AuditLog]:
    log = AuditLog.from_settings(make_settings(), db)  # type: ignore[operator]
    await log.start(loops=False)
    for n in range(1, 11):
        await log.record(
            AuditEvent(
                event_type="tool.call",
                tenant="acme",
                actor=f"key:k{n}",
                session_id="run_1",
                timestamp=T0 + timedelta(seconds=n),
                files_modified=[f"src/{n}.py"],
                sensitive={"output": f"out {n}"},
            )
        )
    await log.record(AuditEvent(event_type="run.created", tenant="globex", timestamp=T0))
    tick = await log.checkpoint()
    assert tick.ran and tick.written == 2 and not tick.problems
    baseline = await log.verify()
    assert baseline.ok and baseline.events_checked == 11, baseline.problems
    yield log
    await log.aclose()


async def tamper(db: Database, *statements: str) -> None:
    async with db.transaction() as conn:
        await conn.execute("SET LOCAL session_replication_role = replica")  # triggers off
        for sql in statements:
            await conn.execute(sql)


async def cli(*args: str, db_url: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """``quarterdeck audit ARGS`` in a subprocess (the CLI configures process-wide logging)."""
    env = {**os.environ, "POSTGRES_URL": db_url, "QUARTERDECK_DATA_DIR": str(data_dir)}
    code = "from quarterdeck.security.audit.cli import app; app(prog_name='quarterdeck audit')"
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def kinds(report: VerifyReport) -> list[tuple[str, ProblemKind, int | None]]:
    return [(p.tenant, p.kind, p.seq) for p in report.problems]


async def test_an_edited_event_is_detected(audit: AuditLog, db: Database) -> None:
    await tamper(
        db, "UPDATE audit_events SET actor = 'key:innocent' WHERE tenant = 'acme' AND seq = 4"
    )
    report = await audit.verify()
    assert kinds(report) == [("acme", ProblemKind.edited, 4)]
    assert report.events_checked == 11 and not report.ok


async def test_an_edited_body_is_detected_even_with_its_hash_recomputed(
    audit: AuditLog, db: Database
) -> None:
    """Rehashing the edited row moves the break to its successor, which embeds the old hash."""
    async with db.acquire() as conn:
        row = await conn.fetchrow(
            f"SELECT e.seq, {PREFIX_SQL} AS pre FROM audit_events e WHERE tenant='acme' AND seq=6"
        )
        prev = await conn.fetchval("SELECT hash FROM audit_events WHERE tenant='acme' AND seq=5")
    forged = bytes(row["pre"]).replace(b'["src/6.py"]', b'["src/harmless.py"]')
    _, new_hash = link(forged, bytes(prev), 6, tenant_json("acme"))
    body = forged[len(b'{"body":') : forged.index(b',"head":')]
    async with db.transaction() as conn:
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(
            "UPDATE audit_events SET body = $1, hash = $2 WHERE tenant = 'acme' AND seq = 6",
            body,
            new_hash,
        )
    assert kinds(await audit.verify()) == [("acme", ProblemKind.edited, 7)]


async def test_a_deleted_event_is_detected(audit: AuditLog, db: Database) -> None:
    await tamper(db, "DELETE FROM audit_events WHERE tenant = 'acme' AND seq = 6")
    report = await audit.verify()
    assert kinds(report) == [("acme", ProblemKind.deleted, 6)]
    assert "6 are missing" in report.problems[0].detail


async def test_reordered_events_are_detected(audit: AuditLog, db: Database) -> None:
    await tamper(
        db,
        "UPDATE audit_events SET seq = 1000 WHERE tenant = 'acme' AND seq = 3",
        "UPDATE audit_events SET seq = 3 WHERE tenant = 'acme' AND seq = 4",
        "UPDATE audit_events SET seq = 4 WHERE tenant = 'acme' AND seq = 1000",
    )
    report = await audit.verify()
    assert kinds(report) == [
        ("acme", ProblemKind.reordered, 3),
        ("acme", ProblemKind.reordered, 4),
    ]
    assert "written as seq 4" in report.problems[0].detail


async def test_a_truncated_tail_is_detected_against_the_checkpoint(
    audit: AuditLog, db: Database
) -> None:
    """A careful attacker also rewinds the chain-head row: the signed checkpoint still knows."""
    await tamper(
        db,
        "DELETE FROM audit_events WHERE tenant = 'acme' AND seq > 7",
        "UPDATE audit_chain_heads h SET seq = 7, hash = e.hash FROM audit_events e "
        "WHERE h.tenant = 'acme' AND e.tenant = 'acme' AND e.seq = 7",
    )
    report = await audit.verify()
    assert kinds(report) == [("acme", ProblemKind.truncated, 8)]
    assert "sealed seq 10" in report.problems[0].detail


async def test_a_forged_checkpoint_is_detected_and_cannot_excuse_a_truncation(
    audit: AuditLog, db: Database
) -> None:
    """Moving the checkpoint back to the new end of the chain breaks its signature."""
    await tamper(
        db,
        "DELETE FROM audit_events WHERE tenant = 'acme' AND seq > 7",
        "UPDATE audit_chain_heads h SET seq = 7, hash = e.hash FROM audit_events e "
        "WHERE h.tenant = 'acme' AND e.tenant = 'acme' AND e.seq = 7",
        "UPDATE audit_checkpoints c SET seq = 7, count = 7, head_hash = e.hash FROM audit_events e "
        "WHERE c.tenant = 'acme' AND e.tenant = 'acme' AND e.seq = 7",
    )
    report = await audit.verify()
    assert kinds(report) == [("acme", ProblemKind.forged_checkpoint, 7)]


async def test_an_invented_checkpoint_is_detected(audit: AuditLog, db: Database) -> None:
    await tamper(
        db,
        "INSERT INTO audit_checkpoints (tenant, seq, head_hash, count, created_at, prev_digest,"
        " key_fingerprint, signature) SELECT tenant, seq, head_hash, 0, now(), prev_digest,"
        " key_fingerprint, decode(repeat('ab', 64), 'hex') FROM audit_checkpoints"
        " WHERE tenant = 'globex'",
    )
    assert kinds(await audit.verify()) == [("globex", ProblemKind.forged_checkpoint, 1)]


async def test_a_consistently_rewritten_chain_is_caught_by_the_checkpoint(
    audit: AuditLog, db: Database
) -> None:
    """Edit seq 2 and recompute every later hash and the head: only the signature knows."""
    async with db.transaction() as conn:
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(
            "UPDATE audit_events SET actor = 'key:innocent' WHERE tenant = 'acme' AND seq = 2"
        )
        rows = await conn.fetch(
            f"SELECT e.seq, {PREFIX_SQL} AS pre FROM audit_events e "
            "WHERE tenant = 'acme' AND seq >= 2 ORDER BY seq"
        )
        prev = bytes(
            await conn.fetchval("SELECT hash FROM audit_events WHERE tenant='acme' AND seq=1")
        )
        for row in rows:
            _, prev = link(bytes(row["pre"]), prev, row["seq"], tenant_json("acme"))
            await conn.execute(
                "UPDATE audit_events SET hash = $1 WHERE tenant = 'acme' AND seq = $2",
                prev,
                row["seq"],
            )
        await conn.execute("UPDATE audit_chain_heads SET hash = $1 WHERE tenant = 'acme'", prev)
    assert kinds(await audit.verify()) == [("acme", ProblemKind.checkpoint_mismatch, 10)]


async def test_the_checkpoint_tick_refuses_to_sign_tampered_events_and_drops_the_gauge(
    audit: AuditLog, db: Database
) -> None:
    await audit.record(AuditEvent(event_type="run.created", tenant="acme", timestamp=T0))
    await tamper(db, "UPDATE audit_events SET event_type = 'run.x' WHERE tenant='acme' AND seq=11")
    tick = await audit.checkpoint()
    assert [(p.kind, p.seq) for p in tick.problems] == [(ProblemKind.edited, 11)]
    assert tick.written == 1  # globex (idle) only; acme's tampered segment is not signed
    assert REGISTRY.get_sample_value("claude_agent_audit_chain_valid", {"tenant": "all"}) == 0
    async with db.acquire() as conn:
        assert (
            await conn.fetchval("SELECT max(seq) FROM audit_checkpoints WHERE tenant = 'acme'")
            == 10
        )


async def test_offsite_checkpoints_catch_a_truncation_that_deleted_checkpoints_too(
    audit: AuditLog, db: Database, data_dir: Path, db_url: str
) -> None:
    exported = data_dir / "checkpoints.jsonl"
    result = await cli(
        "checkpoints", "export", "-o", str(exported), db_url=db_url, data_dir=data_dir
    )
    assert result.returncode == 0, result.stderr
    assert len(exported.read_text().splitlines()) == 2
    await tamper(
        db,
        "DELETE FROM audit_events WHERE tenant = 'acme' AND seq > 7",
        "DELETE FROM audit_checkpoints WHERE tenant = 'acme'",
        "UPDATE audit_chain_heads h SET seq = 7, hash = e.hash FROM audit_events e "
        "WHERE h.tenant = 'acme' AND e.tenant = 'acme' AND e.seq = 7",
    )
    assert (await audit.verify()).ok  # the database alone can no longer tell
    result = await cli("verify", "--against", str(exported), db_url=db_url, data_dir=data_dir)
    assert result.returncode == 1, result.stderr
    assert "truncated" in result.stdout and "off-site checkpoint" in result.stdout


async def test_api_and_cli_report_the_problems(
    audit: AuditLog, db: Database, data_dir: Path, db_url: str
) -> None:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(audit_api.router)
    services(app).add(AuditLog, audit)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://qd") as client:
        assert (await client.get("/v1/audit/verify")).json()["ok"] is True
        await tamper(db, "DELETE FROM audit_events WHERE tenant = 'acme' AND seq = 2")
        body: dict[str, Any] = (await client.get("/v1/audit/verify?tenant=acme")).json()
    assert body["ok"] is False and body["tenants_checked"] == 1
    assert [(p["kind"], p["seq"]) for p in body["problems"]] == [("deleted", 2)]
    result = await cli("verify", db_url=db_url, data_dir=data_dir)
    assert result.returncode == 1, result.stderr
    assert "[acme] seq 2 deleted" in result.stdout and "BROKEN" in result.stdout
    as_json = await cli("verify", "--json", "--tenant", "globex", db_url=db_url, data_dir=data_dir)
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["ok"] is True
