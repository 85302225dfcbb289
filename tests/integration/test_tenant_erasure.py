"""Tenant erasure and run-data retention, end to end on the real system.

Two tenants run real agent runs (the anthropic SDK against the local Messages API stand-in,
real workspace tools), each with its own marker string in the prompt, an uploaded archive, a
file the agent writes, a command's output and a refused command. Erasing tenant A must leave
A's marker in no column of any table and no file of the data dir, leave B's intact, and keep
the audit chain verifying.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import secrets
import subprocess
import sys
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
import typer

from quarterdeck.app import create_app
from quarterdeck.chaos.messages_api import MessagesAPIServer, message, text, tool_use
from quarterdeck.exceptions import InvalidState, ValidationFailed
from quarterdeck.incidents import build_incident_service
from quarterdeck.runs.models import RunFilter, RunStatus
from quarterdeck.runs.store import Finish, PostgresRunStore
from quarterdeck.runtime import Runtime
from quarterdeck.security.audit import AuditLog
from quarterdeck.security.audit.models import EventFilter
from quarterdeck.security.compliance.report import RunRetention, build_report
from quarterdeck.store.pool import Database
from quarterdeck.tenants import cli as tenants_cli
from quarterdeck.tenants.maintenance import AUDIT_PURGE, AUDIT_VERIFY, RUNS_PURGE, Maintenance
from quarterdeck.tenants.retention import DAY
from quarterdeck.tenants.service import TenantData
from tests.conftest import eventually
from tests.unit.test_run_store import row

pytest_plugins = ["tests.support.fixtures"]
pytestmark = pytest.mark.asyncio
ADMIN = "qd-admin-" + "e" * 40
SEARCHED_TYPES = ("text", "character varying", "character", "json", "jsonb", "ARRAY", "bytea")


def _tar(files: dict[str, str]) -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in files.items():
            data = content.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(buffer.getvalue()).decode()


def _script(marker: str) -> list:
    return [
        message(
            tool_use("write_file", {"path": "notes.txt", "content": f"notes {marker}\n"}),
            tool_use("read_file", {"path": "seed.txt"}),
            tool_use("run_command", {"command": "cat notes.txt seed.txt"}),
            tool_use("run_command", {"command": f"cat /etc/shadow # {marker}"}),
        ),
        message(text(f"finished {marker}")),
    ]


async def where_marker(conn: asyncpg.Connection, marker: str) -> list[str]:
    """Every ``table.column`` of the database holding ``marker``: text and JSON cast to text,
    bytea searched as bytes (its text form is hex, which would never match)."""
    columns = await conn.fetch(
        "SELECT table_schema, table_name, column_name, data_type"
        " FROM information_schema.columns c JOIN information_schema.tables t"
        " USING (table_schema, table_name)"
        " WHERE t.table_type = 'BASE TABLE'"
        " AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        " AND data_type = ANY($1::text[])",
        list(SEARCHED_TYPES),
    )
    assert len(columns) > 50  # every domain's tables are searched, not a handful
    found = []
    for c in columns:
        name = f'"{c["table_schema"]}"."{c["table_name"]}"'
        col = f'"{c["column_name"]}"'
        if c["data_type"] == "bytea":
            sql = f"SELECT count(*) FROM {name} WHERE position($1::bytea IN {col}) > 0"
            arg: object = marker.encode()
        else:
            sql = f"SELECT count(*) FROM {name} WHERE {col}::text ILIKE '%' || $1 || '%'"
            arg = marker
        if await conn.fetchval(sql, arg):
            found.append(f"{c['table_name']}.{c['column_name']}")
    return sorted(found)


async def _count(conn: asyncpg.Connection, table: str, tenant: str) -> int:
    """Rows of ``table`` belonging to ``tenant`` (incidents name it in their components)."""
    if table == "incidents":
        sql = "SELECT count(*) FROM incidents WHERE affected_components ? ('tenant:' || $1)"
    else:
        sql = f"SELECT count(*) FROM {table} WHERE tenant = $1"
    return int(await conn.fetchval(sql, tenant))


def files_with(root: Path, marker: str) -> list[str]:
    needle = marker.encode()
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
            found.append(str(path.relative_to(root)))
    return sorted(found)


async def test_erasing_a_tenant_removes_every_plaintext_copy_and_the_chain_verifies(
    make_settings, messages_api: MessagesAPIServer, data_dir: Path, db_url: str
):
    mark_a, mark_b = f"mk-alpha-{secrets.token_hex(6)}", f"mk-bravo-{secrets.token_hex(6)}"
    settings = make_settings(
        provider="anthropic",
        anthropic_api_key="sk-ant-test",
        anthropic_base_url=messages_api.base_url,
        default_model="claude-sonnet-4-5",
        auth_enabled=True,
        admin_api_key=ADMIN,
    )
    rt = Runtime(settings)
    await rt.start()
    assert rt.maintenance is not None  # `up` schedules the purges and verification
    admin = {"Authorization": f"Bearer {ADMIN}"}
    conn = await asyncpg.connect(db_url)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(settings, rt)), base_url="http://qd"
        ) as client:
            keys, runs = {}, {}
            for tenant, mark in (("tenant-a", mark_a), ("tenant-b", mark_b)):
                made = await client.post(
                    "/v1/admin/keys",
                    headers=admin,
                    json={"name": f"ci-{tenant}", "role": "submitter", "tenant": tenant},
                )
                keys[tenant] = {"Authorization": f"Bearer {made.json()['api_key']}"}
                messages_api.script(_script(mark))
                body = {
                    "prompt": f"do the thing {mark}",
                    "workspace": {"type": "tar", "value": _tar({"seed.txt": f"seed {mark}\n"})},
                }
                run = (await client.post("/v1/runs", headers=keys[tenant], json=body)).json()
                done = await rt.runs.wait(run["id"], 60, tenant)
                assert done.status == RunStatus.succeeded, done.error
                runs[tenant] = run["id"]
            outputs = [e.data for e in await rt.runs.events(runs["tenant-a"], tenant="tenant-a")]
            assert any(mark_a in str(d.get("output", "")) for d in outputs)
            cmd = next(d for d in outputs if d.get("tool") == "run_command")
            assert cmd["exit_code"] == 0 and f"notes {mark_a}" in cmd["output"], cmd

            # Before: the search finds A's marker where a run keeps it, on disk and in tables.
            # A gateway call of A's, its session id carrying the marker (ids may name people).
            messages_api.script([message(text("hi"))])
            r = await client.post(
                "/v1/messages",
                headers={**keys["tenant-a"], "x-claude-code-session-id": f"sess-{mark_a}"},
                json={
                    "model": "claude-sonnet-4-5",
                    "max_tokens": 16,
                    "messages": [{"role": "user", "content": "hello"}],
                },
            )
            assert r.status_code == 200, r.text
            await eventually(lambda: _count(conn, "gateway_calls", "tenant-a"))
            assert await _count(conn, "incidents", "tenant-a") == 1  # the refused command's

            before = await where_marker(conn, mark_a)
            for column in (
                "runs.prompt",
                "runs.diff",
                "runs.result",
                "run_events.data",
                "run_turns.messages",
                "gateway_calls.session_id",
            ):
                assert column in before, before
            assert "run_archives.archive" not in before  # gzip: compressed, not plaintext
            assert any(p.startswith("workspaces/") for p in files_with(data_dir, mark_a))
            assert await _count(conn, "workspace_blobs", "tenant-a") > 0  # its checkpoints

            # Who may erase, and bad input.
            r = await client.post("/v1/tenants/tenant-a/erase", headers=keys["tenant-b"])
            assert r.status_code == 403, r.text
            r = await client.post("/v1/tenants/bad%20name!/erase", headers=admin)
            assert r.status_code == 422, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            r = await client.post("/v1/tenants/nobody-here/erase", headers=admin)
            assert r.status_code == 404, r.text

            r = await client.post("/v1/tenants/tenant-a/erase", headers=admin)
            assert r.status_code == 200, r.text
            result = r.json()
            assert result["runs"] == 1 and result["api_keys_revoked"] == 1
            assert result["workspaces"] == 1 and result["audit_keys_destroyed"] >= 1
            assert result["rows"]["run_events"] > 0 and result["rows"]["run_turns"] == 2
            assert result["rows"]["run_archives"] == 1

            # A's key no longer works; B's does, and B's run is untouched.
            r = await client.get(f"/v1/runs/{runs['tenant-a']}", headers=keys["tenant-a"])
            assert r.status_code == 401
            r = await client.get(f"/v1/runs/{runs['tenant-b']}", headers=keys["tenant-b"])
            assert r.status_code == 200

        await rt.audit.flush()
        assert await where_marker(conn, mark_a) == []
        assert files_with(data_dir, mark_a) == []
        still_b = await where_marker(conn, mark_b)
        assert {"runs.prompt", "run_events.data", "run_turns.messages"} <= set(still_b)
        assert any(p.startswith("workspaces/") for p in files_with(data_dir, mark_b))
        gone = data_dir / "workspaces" / runs["tenant-a"]
        assert not gone.exists() and not gone.with_name(gone.name + ".git").exists()
        for table in ("incidents", "gateway_calls", "runs", "workspace_blobs", "run_workspaces"):
            assert await _count(conn, table, "tenant-a") == 0, table
        assert await _count(conn, "workspace_blobs", "tenant-b") > 0
        assert await _count(conn, "incidents", "tenant-b") == 1
        assert await _count(conn, "runs", "tenant-b") == 1

        # Audited: the request before, the outcome (counts, no content) after.
        events = (await rt.audit.search(EventFilter(tenant="tenant-a", limit=500))).items
        types = [e.event_type for e in events]
        assert "tenant.erasure_requested" in types and "tenant.erased" in types
        erased = next(e for e in events if e.event_type == "tenant.erased")
        assert "runs=1" in erased.operations and erased.sensitive is None
        created = next(e for e in events if e.event_type == "run.created")
        assert created.sensitive == {"shredded": True}
        b_created = (
            await rt.audit.search(EventFilter(tenant="tenant-b", event_types=["run.created"]))
        ).items[0]
        assert b_created.sensitive == {"prompt": f"do the thing {mark_b}"}

        await rt.audit.checkpoint()
        report = await rt.audit.verify()
        assert report.ok, report.problems

        # The compliance report's Art. 17 is computed from this: one request, completed.
        now = datetime.now(UTC)
        built = await build_report(
            rt.db,
            now - timedelta(hours=1),
            now + timedelta(hours=1),
            report,
            RunRetention(90 * 86_400.0, 3600.0),
        )
        art17 = next(c for c in built.controls if c.id == "Art. 17")
        (request,) = art17.evidence["erasure_requests"]
        assert request["tenant"] == "tenant-a" and request["completed"] is True
        assert "1 of 1 tenant erasure requests completed" in art17.summary
        assert art17.status == "attention"  # the run-data purge never ran in this test
        assert "the run-data purge has never run" in art17.summary
    finally:
        await conn.close()
        await rt.stop()


async def _art17_requests(db: Database, around: datetime) -> list[dict]:
    built = await build_report(db, around - timedelta(hours=1), around + timedelta(hours=1))
    return next(c for c in built.controls if c.id == "Art. 17").evidence["erasure_requests"]


async def _finished_run(store: PostgresRunStore, run_id: str, tenant: str) -> None:
    await store.create([(row(run_id, tenant=tenant), None)])
    await store.claim(run_id, "w")
    await store.finish(Finish(run_id, RunStatus.succeeded, result="ok"))


async def test_retention_purges_finished_runs_per_tenant_and_the_schedule_keeps_it(
    db: Database, make_settings, data_dir: Path
):
    settings = make_settings()
    audit = AuditLog.from_settings(settings, db)
    await audit.start(loops=False)
    store = PostgresRunStore(db)
    incidents = build_incident_service(settings, db)
    data = TenantData(db, store, audit, data_dir, default_retention_s=90 * DAY)
    try:
        await _finished_run(store, "run_short", "t-short")
        await _finished_run(store, "run_dflt", "t-default")
        await _finished_run(store, "run_long", "t-long")
        await store.create([(row("run_queued", tenant="t-default"), None)])  # never finished
        tree = data_dir / "workspaces" / "run_short"
        tree.mkdir(parents=True)
        (tree / "f.txt").write_text("x")
        (data_dir / "workspaces" / "run_short.git").mkdir()
        await data.set_retention("t-short", 10 * DAY, actor="test")
        await data.set_retention("t-long", 400 * DAY, actor="test")
        with pytest.raises(ValidationFailed):
            await data.set_retention("t-long", 0, actor="test")
        assert (await data.get_retention("t-default")).overridden is False

        async def left() -> list[str]:
            return sorted(r.id for r in await store.list_runs(None, RunFilter()))

        start = datetime.now(UTC)
        report = await data.purge(start + timedelta(days=5))
        assert report.runs == 0 and len(await left()) == 4
        report = await data.purge(start + timedelta(days=20))
        assert report.by_tenant == {"t-short": 1} and report.workspaces == 1
        assert not tree.exists() and not (data_dir / "workspaces" / "run_short.git").exists()
        assert await left() == ["run_dflt", "run_long", "run_queued"]
        report = await data.purge(start + timedelta(days=100))
        assert report.by_tenant == {"t-default": 1}
        assert await left() == ["run_long", "run_queued"]
        await data.purge(start + timedelta(days=401))
        assert await left() == ["run_queued"]
        purged = await audit.search(EventFilter(event_types=["runs.purged"]))
        assert sorted(e.tenant for e in purged.items) == ["t-default", "t-long", "t-short"]
        assert all(e.sensitive is None and "runs=1" in e.operations for e in purged.items)

        # A run still running: the erasure asks it to stop, waits, and deletes nothing (409).
        await store.create([(row("run_busy", tenant="t-busy"), None)])
        await store.claim("run_busy", "w")
        busy = TenantData(db, store, audit, data_dir, erase_wait_s=0.3)
        with pytest.raises(InvalidState) as refused:
            await busy.erase("t-busy")
        assert refused.value.status == 409
        assert "cancel_requested" in [e.type for e in await store.events("run_busy")]
        requests = await _art17_requests(db, start)
        assert [(r["tenant"], r["completed"]) for r in requests] == [("t-busy", False)]
        await store.finish(Finish("run_busy", RunStatus.cancelled))  # its worker stopped
        assert (await busy.erase("t-busy")).runs == 1
        requests = await _art17_requests(db, start)
        assert [(r["tenant"], r["completed"]) for r in requests] == [("t-busy", True)]

        # The schedule: everything is due once, then only what its interval says.
        m = Maintenance(
            db,
            data,
            audit,
            incidents=incidents,
            run_purge_s=3600,
            audit_purge_s=DAY,
            audit_verify_s=DAY,
        )
        t0 = start + timedelta(days=500)
        ran = await m.tick(t0)
        assert set(ran) == {RUNS_PURGE, AUDIT_PURGE, AUDIT_VERIFY}
        assert all(ok for ok, _ in ran.values()), ran
        assert await m.tick(t0 + timedelta(minutes=5)) == {}
        assert set(await m.tick(t0 + timedelta(hours=1))) == {RUNS_PURGE}

        built = await build_report(
            db,
            t0 - timedelta(days=1),
            t0 + timedelta(days=1),
            None,
            RunRetention(90 * DAY, 3600.0),
            now=t0 + timedelta(hours=1),
        )
        art17 = next(c for c in built.controls if c.id == "Art. 17")
        assert art17.status == "evidence", art17.summary
        assert art17.evidence["runs_past_retention"] == 0
        built = await build_report(  # a day later the purge has not run for 24 intervals
            db,
            t0 - timedelta(days=1),
            t0 + timedelta(days=3),
            None,
            RunRetention(90 * DAY, 3600.0),
            now=t0 + timedelta(days=2),
        )
        art17 = next(c for c in built.controls if c.id == "Art. 17")
        assert art17.status == "attention" and "purge last ran" in art17.summary

        # A chain that no longer verifies: the scheduled verification fails and pages.
        async with db.transaction() as conn:
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(
                "UPDATE audit_events SET actor = 'someone-else' WHERE tenant = 't-long' AND seq = 1"
            )
        ran = await m.tick(t0 + timedelta(days=2))
        assert ran[AUDIT_VERIFY][0] is False and ran[AUDIT_VERIFY][1]["problems"] >= 1
        page = await incidents.list()
        assert [i.title for i in page.items] == ["Audit log verification failed"]
    finally:
        await incidents.aclose()
        await store.aclose()
        await audit.aclose()


async def test_the_cli_erases_a_tenant_and_the_audit_cli_still_verifies(
    db: Database, db_url: str, make_settings, data_dir: Path
):
    store = PostgresRunStore(db)
    try:
        await _finished_run(store, "run_cli", "t-cli")
    finally:
        await store.aclose()
    (data_dir / "workspaces" / "run_cli").mkdir(parents=True)
    env = {**os.environ, "POSTGRES_URL": db_url, "QUARTERDECK_DATA_DIR": str(data_dir)}
    code = "from quarterdeck.cli import app; app(prog_name='quarterdeck')"

    def qd(*args: str) -> subprocess.CompletedProcess[str]:
        """The mounted ``quarterdeck`` command in its own process: in-process, the CLI's
        logging setup would bind this test process's loggers to a captured, closed stream."""
        return subprocess.run(
            [sys.executable, "-c", code, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    with pytest.raises(typer.Exit) as refused:  # before anything connects: no --yes
        tenants_cli.erase("t-cli", yes=False)
    assert refused.value.exit_code == 2
    erased = await asyncio.to_thread(qd, "tenants", "erase", "t-cli", "--yes", "--json")
    assert erased.returncode == 0, erased.stderr
    out = json.loads(erased.stdout)
    assert out["runs"] == 1 and out["workspaces"] == 1 and out["rows"]["runs"] == 1
    assert not (data_dir / "workspaces" / "run_cli").exists()
    verified = await asyncio.to_thread(qd, "audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
