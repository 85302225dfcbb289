"""``keys``, ``audit`` and ``compliance`` work against the running server, never a stray database
(issue 16).

Run from a directory with no ``.data``, they used to start a second, empty embedded Postgres
there and make new audit keys. Now they call the API with ``QUARTERDECK_API_KEY`` (a real app
served by uvicorn in the test's loop, on the test's real Postgres), and with ``--direct`` they
refuse to create a database: each test checks that the directory stays empty.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from quarterdeck.app import create_app
from quarterdeck.cli import app
from quarterdeck.runtime import Runtime
from quarterdeck.security.audit.models import AuditEvent
from quarterdeck.security.auth.permissions import Role
from tests.conftest import free_port
from tests.support.cli_env import forget_settings_env, logs_to_the_real_stderr
from tests.support.live_app import serving

ADMIN_KEY = "remote-cli-bootstrap-admin-key-0123456789abcdef"
runner = CliRunner()


@pytest.fixture(autouse=True)
def cwd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """An empty working directory, no settings from the caller's environment, logs to the real
    stderr (see test_auth_cli)."""
    forget_settings_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    with logs_to_the_real_stderr(monkeypatch):
        yield tmp_path
    assert os.listdir(tmp_path) == [], "a command created files where it ran"


def _flat(text: str) -> str:
    return " ".join(text.split())


async def qd(*args: str, **env: str) -> Any:
    return await asyncio.to_thread(runner.invoke, app, list(args), env=env)


@pytest.fixture
async def server(make_settings: Any) -> AsyncIterator[tuple[Runtime, str]]:
    rt = Runtime(make_settings(auth_enabled=True, admin_api_key=ADMIN_KEY))
    await rt.start()
    try:
        async with serving(rt) as url:
            yield rt, url
    finally:
        await rt.stop()


# -- no server, no database: a clear refusal, nothing created ----------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["keys", "list"],
        ["keys", "create", "--name", "x", "--role", "admin", "--tenant", "*"],
        ["audit", "verify"],
        ["audit", "retention", "acme"],
        ["compliance", "report", "--from", "2026-01-01", "--to", "2026-02-01"],
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_without_a_server_they_say_so(command: list[str]) -> None:
    port = free_port()
    result = runner.invoke(app, command, env={"QUARTERDECK_URL": f"http://127.0.0.1:{port}"})
    assert result.exit_code == 1, result.output
    assert "cannot reach Quarterdeck" in _flat(result.output)


@pytest.mark.parametrize(
    "command",
    [
        ["keys", "list", "--direct"],
        ["keys", "create", "--direct", "--name", "x", "--role", "admin", "--tenant", "*"],
        ["audit", "verify", "--direct"],
        ["audit", "export", "--database"],
        ["compliance", "report", "--from", "2026-01-01", "--to", "2026-02-01", "--direct"],
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_direct_access_never_creates_a_database(command: list[str]) -> None:
    result = runner.invoke(app, command)
    assert result.exit_code == 1, result.output
    message = _flat(result.output)
    assert "no Quarterdeck data dir at ./.data" in message
    assert "quarterdeck up" in message and "POSTGRES_URL" in message


def test_direct_audit_access_never_makes_new_audit_keys(db_url: str, data_dir: Path) -> None:
    """With POSTGRES_URL but none of the server's audit keys here, generating keys would make
    every payload unreadable and every checkpoint look forged: refused."""
    result = runner.invoke(app, ["audit", "verify"], env={"POSTGRES_URL": db_url})
    assert result.exit_code == 1, result.output
    assert "no audit master key" in _flat(result.output)


# -- through the API ---------------------------------------------------------------------------


async def test_keys_through_the_api_with_an_admin_key(server: tuple[Runtime, str]) -> None:
    rt, url = server
    env = {"QUARTERDECK_URL": url, "QUARTERDECK_API_KEY": ADMIN_KEY}
    created = await qd(
        "keys", "create", "--name", "ci", "--role", "submitter", "--tenant", "acme", "--json", **env
    )
    assert created.exit_code == 0, created.output
    key = json.loads(created.stdout)
    assert key["api_key"] and key["tenant"] == "acme" and key["created_by"] == "key:bootstrap"

    listed = await qd("keys", "list", "--tenant", "acme", "--json", **env)
    assert [k["id"] for k in json.loads(listed.stdout)] == [key["id"]]
    assert json.loads(listed.stdout)[0]["last_used_at"] is None
    table = await qd("keys", "list", "--tenant", "acme", **env)
    assert "never" in table.stdout, table.stdout
    # One request with the key, the usage writer's round (every 30 s; here at once): last used.
    async with httpx.AsyncClient(base_url=url) as client:
        me = await client.get("/v1/me", headers={"Authorization": f"Bearer {key['api_key']}"})
    assert me.status_code == 200, me.text
    assert await rt.auth.usage.flush() == 1  # the bootstrap admin key is not a stored key
    listed = await qd("keys", "list", "--tenant", "acme", "--json", **env)
    used = datetime.fromisoformat(json.loads(listed.stdout)[0]["last_used_at"])
    assert abs((datetime.now(UTC) - used).total_seconds()) < 60, used
    idle = await qd("keys", "list", "--tenant", "acme", "--unused-for", "1d", **env)
    assert idle.exit_code == 0 and "No active keys of tenant acme unused for 1d" in _flat(
        idle.stdout
    ), idle.stdout
    for option, command in (("--unused-for", "list"), ("--expires-in", "create")):
        for value in ("soon", "99999999999d"):  # not a duration; past datetime's range
            args = ["keys", command, option, value]
            if command == "create":
                args += ["--name", "x", "--role", "submitter", "--tenant", "acme"]
            bad = await qd(*args, **env)
            assert bad.exit_code == 2 and option in bad.output, (value, bad.output)
    updated = await qd("keys", "update", key["id"], "--gateway-fallback", "off", "--json", **env)
    assert json.loads(updated.stdout)["gateway_fallback"] == []
    revoked = await qd("keys", "revoke", key["id"], **env)
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout

    empty = await qd("keys", "list", "--tenant", "acme", **env)
    assert empty.exit_code == 0
    assert _flat(empty.stdout) == (
        "No active keys of tenant acme (--all also lists revoked and expired keys)."
    )
    assert "┏" not in empty.stdout  # a sentence, not an empty table

    # the created key works against the same server, and is not an admin
    denied = await qd("keys", "list", QUARTERDECK_URL=url, QUARTERDECK_API_KEY=key["api_key"])
    assert denied.exit_code == 1 and "401" in denied.output  # revoked


async def test_keys_without_a_key_or_with_auth_off_explain_the_bootstrap(
    server: tuple[Runtime, str], runtime: Runtime
) -> None:
    _, url = server
    no_key = await qd("keys", "list", QUARTERDECK_URL=url)
    assert no_key.exit_code == 1
    assert "set QUARTERDECK_API_KEY" in _flat(no_key.output)
    async with serving(runtime) as off_url:  # authentication off: refused over HTTP
        off = await qd("keys", "list", QUARTERDECK_URL=off_url)
    assert off.exit_code == 1
    message = _flat(off.output)
    assert "409" in message and "authentication is off" in message
    assert "keys create --direct --name admin --role admin --tenant '*'" in message


async def test_audit_through_the_api(server: tuple[Runtime, str], cwd: Path) -> None:
    rt, url = server
    for i in range(3):
        await rt.audit.record(
            AuditEvent(
                event_type="run.created",
                tenant="acme",
                actor="key:t",
                session_id=f"r{i}",
                sensitive={"prompt": f"secret {i}"},
            )
        )
    await rt.audit.checkpoint()
    env = {"QUARTERDECK_URL": url, "QUARTERDECK_API_KEY": ADMIN_KEY}

    verified = await qd("audit", "verify", "--json", **env)
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.stdout)["ok"] is True

    exported = await qd("audit", "export", "--tenant", "acme", **env)
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [e["session_id"] for e in lines if e["event_type"] == "run.created"] == [
        "r0",
        "r1",
        "r2",
    ]
    assert all("record" in e and "prev_hash" in e for e in lines)
    assert "secret 0" in exported.stdout  # decrypted with the server's own key

    checkpoints = await qd("audit", "checkpoints", "export", "--tenant", "acme", **env)
    assert checkpoints.exit_code == 0
    assert checkpoints.stdout.count("\n") >= 1
    against = Path(tempfile.mkdtemp()) / "checkpoints.jsonl"  # not in cwd: it must stay empty
    against.write_text(checkpoints.stdout)
    checked = await qd("audit", "verify", "--against", str(against), "--json", **env)
    shutil.rmtree(against.parent)
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.stdout)["ok"] is True

    retention = await qd("audit", "retention", "acme", "400d", **env)
    assert retention.exit_code == 0 and "400 days" in retention.stdout
    shown = await qd("audit", "retention", "acme", **env)
    assert "400 days" in shown.stdout
    purged = await qd("audit", "purge", "--json", **env)
    assert purged.exit_code == 0, purged.output
    assert json.loads(purged.stdout) == {"purged": [], "problems": []}
    refused = await qd("audit", "shred", "acme", **env)
    assert refused.exit_code == 2  # no --yes
    shredded = await qd("audit", "shred", "acme", "--yes", **env)
    assert shredded.exit_code == 0 and "destroyed 1 data key" in shredded.stdout


async def test_compliance_report_through_the_api(server: tuple[Runtime, str]) -> None:
    rt, url = server
    auditor = await rt.auth.create("auditor", Role.auditor, "*")
    tenant_auditor = await rt.auth.create("acme-auditor", Role.auditor, "acme")
    now = datetime.now(UTC)
    period = ["--from", (now - timedelta(days=1)).isoformat(), "--to", now.isoformat()]
    as_json = await qd(
        "compliance",
        "report",
        *period,
        "--format",
        "json",
        QUARTERDECK_URL=url,
        QUARTERDECK_API_KEY=auditor.api_key,
    )
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.stdout)
    controls = {c["id"]: c for c in report["controls"]}
    assert controls["CC6.1/CC6.3"]["evidence"]["keys_by_role"]  # the keys made above
    markdown = await qd(
        "compliance", "report", *period, QUARTERDECK_URL=url, QUARTERDECK_API_KEY=auditor.api_key
    )
    assert markdown.exit_code == 0 and "CC6.1" in markdown.stdout
    refused = await qd(
        "compliance",
        "report",
        *period,
        QUARTERDECK_URL=url,
        QUARTERDECK_API_KEY=tenant_auditor.api_key,
    )
    assert refused.exit_code == 1
    assert "403" in refused.output and "tenant '*'" in _flat(refused.output)


# -- the new endpoints refuse bad input with problem+json naming the field ----------------------


@pytest.fixture
async def api(make_settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    rt = Runtime(make_settings(auth_enabled=True, admin_api_key=ADMIN_KEY))
    await rt.start()
    transport = httpx.ASGITransport(app=create_app(rt.settings, rt))
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://qd", headers=headers) as c:
        c.runtime = rt  # type: ignore[attr-defined]
        yield c
    await rt.stop()


def _field(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/problem+json")
    return str(response.json()["errors"][0]["field"])


async def test_bad_input_is_a_422_naming_the_field(api: httpx.AsyncClient) -> None:
    naive = await api.get("/v1/audit/export", params={"since": "2026-01-01T00:00:00"})
    assert naive.status_code == 422 and _field(naive) == "since"
    bad = {
        "id": 1,
        "tenant": "acme",
        "seq": 1,
        "head_hash": "zz",
        "count": 1,
        "created_at": "2026-01-01T00:00:00Z",
        "prev": "00",
        "key_fingerprint": "x",
        "public_key": "",
        "payload": "",
        "signature": "AA==",
    }
    forged = await api.post("/v1/audit/verify", json={"checkpoints": [bad]})
    assert forged.status_code == 422 and _field(forged) == "checkpoints.0.head_hash"
    lax = await api.post("/v1/audit/verify", json={"checkpoints": [{**bad, "id": False}]})
    assert lax.status_code == 422 and "checkpoints.0.id" in lax.text
    epoch = await api.post("/v1/audit/verify", json={"checkpoints": [{**bad, "created_at": 0}]})
    assert epoch.status_code == 422 and "checkpoints.0.created_at" in epoch.text
    bad["head_hash"] = "00"
    huge = await api.post("/v1/audit/verify", json={"checkpoints": [{**bad, "seq": 2**63}]})
    assert huge.status_code == 422 and _field(huge) == "checkpoints.0.seq"
    nul = await api.post("/v1/audit/verify", json={"checkpoints": [{**bad, "tenant": "a\x00"}]})
    assert nul.status_code == 422 and _field(nul) == "checkpoints.0.tenant"
    early = await api.get("/v1/audit/export", params={"since": "0001-01-01T00:00:00+01:00"})
    assert early.status_code == 422 and _field(early) == "since"
    widest = await api.get(
        "/v1/compliance/report",
        params={"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T23:59:59Z", "verify": "false"},
    )
    assert widest.status_code == 200, widest.text
    backwards = await api.get(
        "/v1/compliance/report",
        params={"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
    )
    assert backwards.status_code == 422 and _field(backwards) == "to"
    missing = await api.get("/v1/compliance/report")
    assert missing.status_code == 422


async def test_a_tenant_auditor_exports_only_its_own_tenant(api: httpx.AsyncClient) -> None:
    rt: Runtime = api.runtime  # type: ignore[attr-defined]
    for tenant in ("acme", "globex"):
        await rt.audit.record(AuditEvent(event_type="run.created", tenant=tenant, actor="key:t"))
    await rt.audit.flush()
    auditor = await rt.auth.create("acme-auditor", Role.auditor, "acme")
    headers = {"Authorization": f"Bearer {auditor.api_key}"}
    own = await api.get("/v1/audit/export", headers=headers)
    assert own.status_code == 200
    assert own.headers["content-type"].startswith("application/x-ndjson")
    tenants = {json.loads(line)["tenant"] for line in own.text.splitlines()}
    assert tenants == {"acme"}
    other = await api.get("/v1/audit/export", params={"tenant": "globex"}, headers=headers)
    assert other.status_code == 404
    purge = await api.post("/v1/audit/purge", headers=headers)
    assert purge.status_code == 403  # audit:manage is platform-only
