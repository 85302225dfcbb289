"""A key's gateway config (``gateway_fallback``) set through the admin API and the CLI, on a real
Postgres: stored, shown, changed on a live key, audited, and refused with the field named when
it makes no sense. What it does to calls is in ``test_gateway_relay.py``
(``test_fallback_is_per_key``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from quarterdeck.app import create_app
from quarterdeck.runtime import Runtime
from quarterdeck.security.audit.models import EventFilter
from quarterdeck.security.auth.cli import app as keys_app
from tests.support.cli_env import logs_to_the_real_stderr

ADMIN = "bootstrap-admin-key-for-key-config-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
runner = CliRunner()


@pytest.fixture
async def api(make_settings: Any) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    settings = make_settings(auth_enabled=True, admin_api_key=ADMIN, health_monitor_enabled=False)
    rt = Runtime(settings, with_workers=False)
    await rt.start()
    transport = httpx.ASGITransport(app=create_app(settings, rt))
    async with httpx.AsyncClient(transport=transport, base_url="http://qd") as client:
        yield rt, client
    await rt.stop()


async def test_the_admin_api_sets_and_changes_a_keys_fallback(
    api: tuple[Runtime, httpx.AsyncClient],
) -> None:
    rt, c = api
    body = {"name": "ci", "role": "submitter", "tenant": "acme"}
    created = await c.post(
        "/v1/admin/keys", json={**body, "gateway_fallback": [" claude-haiku-4-5 "]}, headers=AUTH
    )
    assert created.status_code == 201, created.text
    key_id, key = created.json()["id"], created.json()["api_key"]
    assert created.json()["gateway_fallback"] == ["claude-haiku-4-5"]
    plain = await c.post("/v1/admin/keys", json=body, headers=AUTH)
    assert plain.json()["gateway_fallback"] is None  # the deployment default
    for value in ([], ["*"], None):
        r = await c.patch(
            f"/v1/admin/keys/{key_id}", json={"gateway_fallback": value}, headers=AUTH
        )
        assert r.status_code == 200, r.text
        assert r.json()["gateway_fallback"] == value
        shown = await c.get(f"/v1/admin/keys/{key_id}", headers=AUTH)
        assert shown.json()["gateway_fallback"] == value
    bad = [["*", "claude-haiku-4-5"], [""], [f"m{i}" for i in range(9)], ["tab\tname"]]
    for value in bad:
        r = await c.patch(
            f"/v1/admin/keys/{key_id}", json={"gateway_fallback": value}, headers=AUTH
        )
        assert r.status_code == 422, (value, r.text)
        assert [e["field"] for e in r.json()["errors"]] == ["gateway_fallback"]
    r = await c.patch(f"/v1/admin/keys/{key_id}", json={}, headers=AUTH)  # say what, explicitly
    assert r.status_code == 422
    r = await c.patch("/v1/admin/keys/zzzzzzzz", json={"gateway_fallback": []}, headers=AUTH)
    assert r.status_code == 404
    r = await c.patch(
        f"/v1/admin/keys/{key_id}",
        json={"gateway_fallback": []},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 403
    await rt.audit.flush()
    page = await rt.audit.search(EventFilter(limit=50, tenant="acme"))
    changes = [e.data_accessed[0] for e in page.items if e.event_type == "config.changed"]
    assert sorted(str(c["gateway_fallback"]) for c in changes) == ["None", "['*']", "[]"]
    assert {c["key_id"] for c in changes} == {key_id} and all(
        c["actor"] == "key:bootstrap" for c in changes
    )


@pytest.fixture
def cli_env(
    db_url: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """As in test_auth_cli: logs to the real stderr, not CliRunner's temporary one."""
    with logs_to_the_real_stderr(monkeypatch):
        yield {"POSTGRES_URL": db_url, "QUARTERDECK_DATA_DIR": str(data_dir)}


def _json(env: dict[str, str], *args: str) -> Any:
    result = runner.invoke(keys_app, [*args, "--json"], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_keys_create_and_update_take_gateway_fallback(cli_env: dict[str, str]) -> None:
    base = ("create", "--name", "ci", "--role", "submitter", "--tenant", "acme")
    created = _json(cli_env, *base, "--gateway-fallback", "on")
    assert created["gateway_fallback"] == ["*"]
    assert _json(cli_env, *base)["gateway_fallback"] is None
    key_id = created["id"]
    for text, stored in [
        ("claude-sonnet-4-5, claude-haiku-4-5", ["claude-sonnet-4-5", "claude-haiku-4-5"]),
        ("off", []),
        ("default", None),
    ]:
        updated = _json(cli_env, "update", key_id, "--gateway-fallback", text)
        assert updated["gateway_fallback"] == stored
    shown = runner.invoke(keys_app, ["update", key_id, "--gateway-fallback", "off"], env=cli_env)
    assert shown.exit_code == 0 and "gateway fallback off" in shown.output
    for bad in ("a,,b", "*,claude-haiku-4-5"):
        result = runner.invoke(keys_app, ["update", key_id, "--gateway-fallback", bad], env=cli_env)
        assert result.exit_code != 0 and "gateway" in result.output.lower(), result.output
    missing = runner.invoke(
        keys_app, ["update", "zzzzzzzz", "--gateway-fallback", "off"], env=cli_env
    )
    assert missing.exit_code == 1 and "not found" in missing.output
