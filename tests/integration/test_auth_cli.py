"""``quarterdeck keys create|list|revoke`` on a real Postgres, through typer's CliRunner."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import pytest
import typer
from typer.testing import CliRunner

from quarterdeck.security.auth import keys
from quarterdeck.security.auth.cli import app as keys_app
from tests.support.cli_env import logs_to_the_real_stderr

runner = CliRunner()


@pytest.fixture(autouse=True)
def _logs_to_the_real_stderr(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with logs_to_the_real_stderr(monkeypatch):
        yield


@pytest.fixture
def env(db_url: str, data_dir: Path) -> dict[str, str]:
    return {"POSTGRES_URL": db_url, "QUARTERDECK_DATA_DIR": str(data_dir)}


def run(env: dict[str, str], *args: str, app: typer.Typer = keys_app) -> Any:
    return runner.invoke(app, list(args), env=env)


def ok_json(env: dict[str, str], *args: str) -> Any:
    result = run(env, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def fetch(url: str, sql: str, *args: Any) -> Any:
    async def go() -> Any:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(go())


def test_create_list_revoke(env: dict[str, str], db_url: str):
    created = ok_json(env, "create", "--name", "ci", "--role", "submitter", "--tenant", "acme")
    key_id, key = created["id"], created["api_key"]
    assert keys.parse(key) is not None and created["created_by"].startswith("cli")
    (row,) = fetch(db_url, "SELECT digest FROM api_keys WHERE id = $1", key_id)
    assert bytes(row["digest"]) == keys.digest(key)

    listed = ok_json(env, "list")
    assert [k["id"] for k in listed] == [key_id] and "api_key" not in listed[0]

    revoked = ok_json(env, "revoke", key_id)
    assert revoked["status"] == "revoked" and revoked["revoked_by"].startswith("cli")
    assert ok_json(env, "list") == []
    assert [k["status"] for k in ok_json(env, "list", "--all")] == ["revoked"]


def test_create_prints_the_key_once_with_a_warning(env: dict[str, str]):
    result = run(env, "create", "--name", "ops", "--role", "operator", "--tenant", "*")
    assert result.exit_code == 0, result.output
    printed = [line for line in result.stdout.splitlines() if line.startswith("qd_dev_")]
    assert len(printed) == 1 and keys.parse(printed[0]) is not None
    assert "only now" in result.stdout
    table = run(env, "list")
    assert table.exit_code == 0 and printed[0] not in table.stdout
    assert printed[0][: len("qd_dev_") + 8] in table.stdout  # the prefix is shown


def test_list_filters_by_tenant(env: dict[str, str]):
    ok_json(env, "create", "--name", "a", "--role", "submitter", "--tenant", "acme")
    ok_json(env, "create", "--name", "g", "--role", "auditor", "--tenant", "globex")
    assert [k["name"] for k in ok_json(env, "list", "--tenant", "globex")] == ["g"]


def test_expires_in_sets_an_expiry(env: dict[str, str]):
    created = ok_json(
        env,
        "create",
        "--name",
        "t",
        "--role",
        "submitter",
        "--tenant",
        "acme",
        "--expires-in",
        "2h",
    )
    expires = datetime.fromisoformat(created["expires_at"])
    assert timedelta(hours=1, minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=2)


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--role", "root", "--tenant", "*"], 2, "root"),
        (["--role", "admin", "--tenant", "acme"], 1, "all tenants"),
        (["--role", "submitter", "--tenant", "*"], 1, "one tenant"),
        (["--role", "submitter", "--tenant", "acme", "--expires-in", "soon"], 2, "duration"),
    ],
)
def test_bad_keys_are_refused_with_the_reason(
    env: dict[str, str], args: list[str], code: int, says: str
):
    result = run(env, "create", "--name", "x", *args)
    assert result.exit_code == code, result.output
    assert says in " ".join(result.output.split())


def test_revoking_an_unknown_key_fails(env: dict[str, str]):
    result = run(env, "revoke", "zzzzzzzz")
    assert result.exit_code == 1 and "not found" in result.output


def test_an_old_schema_asks_for_db_upgrade(env: dict[str, str], db_url: str):
    fetch(db_url, "DELETE FROM quarterdeck_migrations WHERE version >= 7")
    result = run(env, "list")
    assert result.exit_code == 1 and "db upgrade" in " ".join(result.output.split())


def test_settings_come_from_the_root_commands_config_file(db_url: str, tmp_path: Path):
    root = typer.Typer()

    @root.callback()
    def _root(config: Annotated[Path | None, typer.Option("--config")] = None) -> None:
        pass

    root.add_typer(keys_app, name="keys")
    config = tmp_path / "quarterdeck.yaml"
    config.write_text(f"postgres_url: {db_url}\n")
    result = runner.invoke(
        root,
        [
            "--config",
            str(config),
            "keys",
            "create",
            "--name",
            "y",
            "--role",
            "operator",
            "--tenant",
            "*",
            "--json",
        ],
        env={"POSTGRES_URL": None, "QUARTERDECK_CONFIG": None},
    )
    assert result.exit_code == 0, result.output
    (row,) = fetch(db_url, "SELECT name FROM api_keys")
    assert row["name"] == "y"
