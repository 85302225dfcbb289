"""The real ``quarterdeck`` console script, driven as subprocesses.

One ``quarterdeck up`` (embedded Postgres in a temp data dir, free ports) serves the whole module;
the client commands reach it through ``QUARTERDECK_URL``. Commands that manage their own database
(``doctor``, ``db upgrade``) get a fresh, world-readable data dir each, because the embedded
Postgres runs as its own OS user. Functional checks only: no timing assertions.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from quarterdeck.kit.ids import new_id
from tests.conftest import free_port, world_readable_tmpdir
from tests.e2e.conftest import BIN, Deployment

TERMINAL = {"succeeded", "failed", "cancelled", "timed_out", "max_turns", "budget_exceeded"}
GUIDE_VARS = ("POSTGRES_URL", "REDIS_URL", "ANTHROPIC_API_KEY", "LOG_LEVEL")


def _clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment minus any Quarterdeck/guide settings, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("QUARTERDECK_") and k not in GUIDE_VARS
    }
    env.update(extra)
    return env


def qd(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _flat(text: str) -> str:
    """Collapse whitespace so assertions survive rich wrapping long lines at 80 columns."""
    return " ".join(text.split())


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def server() -> Iterator[Deployment]:
    dep = Deployment(world_readable_tmpdir("qd-cli-"))
    # A small simulated latency keeps runs alive long enough for `logs --follow` to stream.
    try:
        dep.start("up", QUARTERDECK_SIMULATED_LATENCY="50ms")
        yield dep
    finally:
        for proc in reversed(dep.procs):
            proc.stop()  # SIGTERM, then wait for a clean drain
        shutil.rmtree(dep.root, ignore_errors=True)


@pytest.fixture(scope="module")
def client_env(server: Deployment) -> dict[str, str]:
    return _clean_env(QUARTERDECK_URL=server.url)


@pytest.fixture(scope="module")
def finished_run(client_env: dict[str, str]) -> dict[str, Any]:
    """One run submitted with --wait, shared by the read-only tests."""
    result = _ok(
        qd("run", "submit", "Add a README section on retries", "--wait", "--json", env=client_env)
    )
    return json.loads(result.stdout)


@pytest.fixture
def fresh_env() -> Iterator[dict[str, str]]:
    """Settings for a command that starts its own embedded Postgres in a brand-new data dir."""
    root = world_readable_tmpdir("qd-cli-fresh-")  # chmod 0o755: Postgres runs as its own user
    yield _clean_env(
        QUARTERDECK_DATA_DIR=str(root / "data"),
        QUARTERDECK_HTTP_PORT=str(free_port()),
        QUARTERDECK_METRICS_PORT=str(free_port()),
    )
    shutil.rmtree(root, ignore_errors=True)


# -- run submit -------------------------------------------------------------------------------


def test_submit_json_returns_the_new_run(client_env: dict[str, str]):
    result = _ok(qd("run", "submit", "Fix the flaky scheduler test", "--json", env=client_env))
    run = json.loads(result.stdout)
    assert run["id"].startswith("run_")
    assert run["status"] in {"queued", "running", *TERMINAL}
    assert run["operation"] == "task"


def test_submit_without_json_prints_the_id(client_env: dict[str, str]):
    result = _ok(qd("run", "submit", "Rename a variable", env=client_env))
    assert "submitted" in result.stdout
    assert "run_" in result.stdout


def test_submit_wait_json_ends_succeeded(finished_run: dict[str, Any]):
    assert finished_run["status"] == "succeeded"
    assert finished_run["finished_at"] is not None
    assert finished_run["turns"] >= 1


def test_submit_wait_prints_a_summary_without_json(client_env: dict[str, str]):
    result = _ok(qd("run", "submit", "Tidy imports", "--wait", env=client_env))
    assert "succeeded" in result.stdout


def test_submit_with_idempotency_key_replays_the_same_run(client_env: dict[str, str]):
    key = new_id("idem")
    args = ("run", "submit", "Same request twice", "--idempotency-key", key, "--json")
    first = json.loads(_ok(qd(*args, env=client_env)).stdout)
    second = json.loads(_ok(qd(*args, env=client_env)).stdout)
    assert first["id"] == second["id"]


# -- run list / show / wait -------------------------------------------------------------------


def test_list_json_filtered_by_status(client_env: dict[str, str], finished_run: dict[str, Any]):
    result = _ok(
        qd("run", "list", "--status", "succeeded", "--limit", "500", "--json", env=client_env)
    )
    page = json.loads(result.stdout)
    assert page["items"], page
    assert {r["status"] for r in page["items"]} == {"succeeded"}
    assert finished_run["id"] in {r["id"] for r in page["items"]}


def test_list_json_with_a_status_nothing_has(client_env: dict[str, str]):
    result = _ok(qd("run", "list", "--status", "budget_exceeded", "--json", env=client_env))
    assert json.loads(result.stdout)["items"] == []


def test_list_table_shows_runs(client_env: dict[str, str], finished_run: dict[str, Any]):
    result = _ok(qd("run", "list", "--limit", "500", env=client_env))
    assert "succeeded" in result.stdout


def test_list_rejects_an_unknown_status(client_env: dict[str, str]):
    result = qd("run", "list", "--status", "bogus", "--json", env=client_env)
    assert result.returncode != 0
    assert "422" in result.stderr


def test_show_json(client_env: dict[str, str], finished_run: dict[str, Any]):
    result = _ok(qd("run", "show", finished_run["id"], "--json", env=client_env))
    run = json.loads(result.stdout)
    assert run["id"] == finished_run["id"]
    assert run["status"] == "succeeded"


def test_show_table(client_env: dict[str, str], finished_run: dict[str, Any]):
    result = _ok(qd("run", "show", finished_run["id"], env=client_env))
    assert finished_run["id"] in result.stdout
    assert "succeeded" in result.stdout


def test_wait_on_a_finished_run_returns_it(
    client_env: dict[str, str], finished_run: dict[str, Any]
):
    result = _ok(qd("run", "wait", finished_run["id"], "--json", env=client_env))
    assert json.loads(result.stdout)["status"] == "succeeded"


# -- run logs ---------------------------------------------------------------------------------


def test_logs_json_has_status_events(client_env: dict[str, str], finished_run: dict[str, Any]):
    result = _ok(qd("run", "logs", finished_run["id"], "--json", env=client_env))
    events = json.loads(result.stdout)
    assert events
    statuses = [e["data"]["status"] for e in events if e["type"] == "status"]
    assert statuses, [e["type"] for e in events]
    assert statuses[-1] == "succeeded"
    ids = [e["id"] for e in events]
    assert ids == sorted(ids)


def test_logs_text_timeline(client_env: dict[str, str], finished_run: dict[str, Any]):
    result = _ok(qd("run", "logs", finished_run["id"], env=client_env))
    assert "status" in result.stdout


def test_logs_follow_ends_when_the_run_ends(client_env: dict[str, str]):
    run = json.loads(_ok(qd("run", "submit", "Follow me", "--json", env=client_env)).stdout)
    result = _ok(qd("run", "logs", run["id"], "--follow", "--json", env=client_env))
    events = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    statuses = [e["data"]["status"] for e in events if e["type"] == "status"]
    assert statuses and statuses[-1] in TERMINAL
    # Streaming a finished run again replays the same history and still ends.
    again = _ok(qd("run", "logs", run["id"], "-f", "--json", env=client_env))
    assert [json.loads(x)["id"] for x in again.stdout.splitlines() if x.strip()] == [
        e["id"] for e in events
    ]


# -- run cancel -------------------------------------------------------------------------------


def test_cancel_a_finished_run_fails_clearly(
    client_env: dict[str, str], finished_run: dict[str, Any]
):
    result = qd("run", "cancel", finished_run["id"], env=client_env)
    assert result.returncode != 0
    message = _flat(result.stderr)
    assert "409" in message
    assert "already succeeded" in message
    assert "Traceback" not in result.stderr


def test_cancel_a_fresh_run_ends_it_cancelled_or_finished(client_env: dict[str, str]):
    run = json.loads(_ok(qd("run", "submit", "Cancel me", "--json", env=client_env)).stdout)
    result = qd("run", "cancel", run["id"], "--json", env=client_env)
    if result.returncode != 0:  # it finished before the cancel arrived
        assert "409" in result.stderr
        return
    assert json.loads(result.stdout)["status"] in {"cancelled", "running"}
    final = json.loads(_ok(qd("run", "wait", run["id"], "--json", env=client_env)).stdout)
    assert final["status"] in TERMINAL


# -- unknown ids ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["show"],
        ["cancel"],
        ["wait", "--timeout", "1"],
        ["logs"],
        ["logs", "--follow"],
    ],
    ids=lambda c: " ".join(c),
)
def test_unknown_run_id_exits_non_zero_with_404(client_env: dict[str, str], command: list[str]):
    run_id = new_id("run")
    result = qd("run", command[0], run_id, *command[1:], env=client_env)
    assert result.returncode != 0
    message = _flat(result.stderr)
    assert "404" in message
    assert run_id in message
    assert "Traceback" not in result.stderr


def test_malformed_run_id_is_rejected(client_env: dict[str, str]):
    result = qd("run", "show", "not-a-run-id", env=client_env)
    assert result.returncode != 0
    assert "422" in result.stderr
    assert "malformed" in result.stderr


# -- help -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["up"],
        ["serve"],
        ["worker"],
        ["doctor"],
        ["version"],
        ["db"],
        ["db", "upgrade"],
        ["run"],
        ["run", "submit"],
        ["run", "list"],
        ["run", "show"],
        ["run", "cancel"],
        ["run", "wait"],
        ["run", "logs"],
    ],
    ids=lambda c: " ".join(c) or "quarterdeck",
)
def test_help_exits_zero(command: list[str]):
    result = qd(*command, "--help", env=_clean_env(), timeout=60)
    _ok(result)
    assert "Usage" in result.stdout


def test_version_prints_something():
    assert _ok(qd("version", env=_clean_env())).stdout.strip()


# -- doctor, keys --direct and db upgrade ------------------------------------------------------


def test_doctor_checks_the_running_server_not_its_own_ports(server: Deployment):
    """Pointed at a live `up`, doctor reports what /health and /ready say, and finds both of the
    server's ports held by Quarterdeck (the API and its metrics listener): no port warning."""
    replica = server.procs[0]
    env = _clean_env(
        QUARTERDECK_URL=server.url,
        QUARTERDECK_HTTP_PORT=str(replica.http_port),
        QUARTERDECK_METRICS_PORT=str(replica.metrics_port),
    )
    result = qd("doctor", "--json", env=env)
    checks = json.loads(result.stdout)
    by_name = {c["name"]: c for c in checks}
    for check in checks:
        assert check["status"] in {"ok", "warn", "fail"}
        assert set(check) >= {"name", "status", "detail", "fix"}
    for name in ("config", "server", "ready", "migrations", "draining", "postgres", "redis"):
        assert by_name[name]["status"] == "ok", by_name[name]
    assert by_name["provider"]["status"] == "warn"  # simulated
    assert "http_port" not in by_name and "metrics_port" not in by_name
    assert result.returncode == 0, result.stderr


def test_doctor_without_a_server_says_so_and_creates_nothing(fresh_env: dict[str, str]):
    result = qd("doctor", "--json", env=fresh_env)
    by_name = {c["name"]: c for c in json.loads(result.stdout)}
    assert by_name["server"]["status"] == "fail"
    assert "not running" in by_name["server"]["detail"]
    assert by_name["data_dir"]["status"] == "ok"
    assert "embedded" in by_name["postgres"]["detail"]
    assert result.returncode == 1
    assert not Path(fresh_env["QUARTERDECK_DATA_DIR"]).exists()  # no embedded Postgres started


def test_the_first_admin_key_is_made_direct_where_the_data_dir_is(server: Deployment):
    env = _clean_env(QUARTERDECK_DATA_DIR=str(server.data_dir))
    args = ("keys", "create", "--direct", "--name", "first-admin", "--role", "admin")
    created = json.loads(_ok(qd(*args, "--tenant", "*", "--json", env=env)).stdout)
    assert created["role"] == "admin" and created["api_key"]

    async def stored() -> str | None:  # in the server's own database, not a new one
        conn = await asyncpg.connect(server.database_url())
        try:
            return await conn.fetchval("SELECT role FROM api_keys WHERE id = $1", created["id"])
        finally:
            await conn.close()

    assert asyncio.run(stored()) == "admin"


def test_db_upgrade_applies_then_reports_current(fresh_env: dict[str, str]):
    first = _ok(qd("db", "upgrade", env=fresh_env))
    assert "applied migrations" in first.stdout
    second = _ok(qd("db", "upgrade", env=fresh_env))
    assert "schema is current" in second.stdout


# -- bad settings and unreachable servers -----------------------------------------------------


def test_up_with_bad_settings_exits_2_naming_every_field(tmp_path: Path):
    env = _clean_env(
        QUARTERDECK_DATA_DIR=str(tmp_path / "data"),
        QUARTERDECK_HTTP_PORT="abc",
        QUARTERDECK_SIMULATED_LATENCY="nope",
    )
    result = qd("up", env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    message = _flat(result.stderr)
    assert "QUARTERDECK_HTTP_PORT" in message
    assert "QUARTERDECK_SIMULATED_LATENCY" in message
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()  # refused before touching anything


def test_missing_config_file_exits_2(tmp_path: Path):
    result = qd("--config", str(tmp_path / "nope.yaml"), "doctor", env=_clean_env(), timeout=60)
    assert result.returncode == 2
    assert "does not exist" in _flat(result.stderr)


@pytest.mark.parametrize(
    "command",
    [
        ["run", "submit", "hello"],
        ["run", "list"],
        ["run", "show", "run_01ARZ3NDEKTSV4RRFFQ69G5FAV"],
        ["run", "cancel", "run_01ARZ3NDEKTSV4RRFFQ69G5FAV"],
        ["run", "logs", "run_01ARZ3NDEKTSV4RRFFQ69G5FAV"],
        ["run", "logs", "run_01ARZ3NDEKTSV4RRFFQ69G5FAV", "--follow"],
    ],
    ids=lambda c: " ".join(c[:2] + c[3:]),
)
def test_client_commands_explain_an_unreachable_server(command: list[str]):
    url = f"http://127.0.0.1:{free_port()}"
    result = qd(*command, env=_clean_env(QUARTERDECK_URL=url), timeout=60)
    assert result.returncode != 0
    message = _flat(result.stderr)
    assert "cannot reach" in message
    assert url in message
    assert "Traceback" not in result.stderr


def test_url_option_beats_the_environment(server: Deployment, finished_run: dict[str, Any]):
    dead = f"http://127.0.0.1:{free_port()}"
    env = _clean_env(QUARTERDECK_URL=dead)
    result = _ok(qd("run", "show", finished_run["id"], "--url", server.url, "--json", env=env))
    assert json.loads(result.stdout)["id"] == finished_run["id"]
