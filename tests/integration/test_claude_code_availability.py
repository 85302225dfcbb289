"""A claude-code agent type without its CLI is listed as unavailable and refused at submission
(422 naming ``agent_type``, saying how to install it); with the real pinned CLI it is available.
``/v1/system`` and ``quarterdeck doctor`` (live and ``--preflight``) report the same.

Real runtimes on the real embedded Postgres, the real CLI under the venv, the real sandbox.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from quarterdeck.agents import sandbox
from quarterdeck.agents.claude_code import install
from quarterdeck.agents.claude_code.install import PINNED_VERSION, default_path
from quarterdeck.app import create_app
from quarterdeck.cli import app as cli_app
from quarterdeck.runtime import Runtime
from tests.conftest import free_port
from tests.support.cli_env import forget_settings_env, logs_to_the_real_stderr
from tests.support.live_app import serving


@pytest.fixture(autouse=True)
def _fresh_probe() -> Iterator[None]:
    install.forget()
    sandbox.configure(sandbox.SandboxConfig())
    yield
    install.forget()
    sandbox.configure(sandbox.SandboxConfig())


async def _client(rt: Runtime) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(rt.settings, rt))
    return httpx.AsyncClient(transport=transport, base_url="http://qd")


@pytest.fixture
async def without_cli(make_settings: Any, tmp_path: Path) -> AsyncIterator[Runtime]:
    """API only (no workers: nothing may pick up a run this test submits)."""
    settings = make_settings(claude_code_path=str(tmp_path / "missing" / "claude"))
    rt = Runtime(settings, with_workers=False)
    await rt.start()
    yield rt
    await rt.stop()


@pytest.fixture
async def with_cli(make_settings: Any) -> AsyncIterator[Runtime]:
    rt = Runtime(make_settings(), with_workers=False)
    await rt.start()
    yield rt
    await rt.stop()


async def test_without_the_cli_the_type_is_unavailable_and_runs_are_refused(
    without_cli: Runtime, tmp_path: Path
) -> None:
    async with await _client(without_cli) as client:
        types = {t["name"]: t for t in (await client.get("/v1/agent-types")).json()}
        cc = types["claude-code"]
        assert cc["runner"] == "claude-code" and cc["available"] is False
        assert str(tmp_path / "missing" / "claude") in cc["unavailable_reason"]
        assert "make deps" in cc["unavailable_reason"]
        assert types["coder"]["available"] is True and types["coder"]["unavailable_reason"] is None
        assert types["coder"]["runner"] == "native" and "write_file" in types["coder"]["tools"]

        refused = await client.post("/v1/runs", json={"prompt": "x", "agent_type": "claude-code"})
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        problem = refused.json()
        assert problem["errors"][0]["field"] == "agent_type"
        assert "unavailable" in problem["detail"] and "make deps" in problem["detail"]
        assert "QUARTERDECK_CLAUDE_CODE_PATH" in problem["detail"]

        batch = await client.post(
            "/v1/runs/batch",
            json={"runs": [{"prompt": "a"}, {"prompt": "b", "agent_type": "claude-code"}]},
        )
        assert batch.status_code == 422, batch.text
        assert batch.json()["errors"][0]["field"] == "runs.1.agent_type"
        listed = (await client.get("/v1/runs")).json()
        assert listed["items"] == []  # nothing of the refused batch was stored

        native = await client.post("/v1/runs", json={"prompt": "x", "agent_type": "coder"})
        assert native.status_code == 202

        system = (await client.get("/v1/system")).json()["claude_code"]
        assert system["available"] is False and system["misconfigured"] is True
        assert system["pinned_version"] == PINNED_VERSION


async def test_with_the_real_cli_the_type_is_available(with_cli: Runtime) -> None:
    async with await _client(with_cli) as client:
        types = {t["name"]: t for t in (await client.get("/v1/agent-types")).json()}
        assert types["claude-code"]["available"] is True
        assert types["claude-code"]["unavailable_reason"] is None
        accepted = await client.post("/v1/runs", json={"prompt": "x", "agent_type": "claude-code"})
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["agent_type"] == "claude-code"
        system = (await client.get("/v1/system")).json()["claude_code"]
        assert system["available"] is True and system["version"] == PINNED_VERSION
        assert system["path"] == str(default_path())


async def test_a_process_that_runs_workers_also_needs_the_bwrap_sandbox(
    make_settings: Any,
) -> None:
    rt = Runtime(make_settings(sandbox_mode="rlimits"))
    await rt.start()
    try:
        reason = await asyncio.to_thread(rt.agent_catalog.unavailable_reason, "claude-code")
        assert reason and "need the bwrap sandbox; this host gives rlimits" in reason
    finally:
        await rt.stop()


# --------------------------------------------------------------------------------- doctor
runner = CliRunner()


@pytest.fixture
def doctor_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    forget_settings_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    with logs_to_the_real_stderr(monkeypatch):
        yield


async def doctor(*args: str, env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    result = await asyncio.to_thread(runner.invoke, cli_app, ["doctor", "--json", *args], env=env)
    try:
        checks = json.loads(result.stdout)
    except ValueError:
        raise AssertionError(result.output) from None
    return result.exit_code, {c["name"]: c for c in checks}


async def test_doctor_preflight_checks_the_cli(doctor_env: None, tmp_path: Path) -> None:
    port = str(free_port())
    _, found = await doctor("--preflight", env={"QUARTERDECK_HTTP_PORT": port})
    check = found["claude-code CLI"]
    assert check["status"] == "ok" and PINNED_VERSION in check["detail"], check

    broken = {"QUARTERDECK_HTTP_PORT": port, "QUARTERDECK_CLAUDE_CODE_PATH": str(tmp_path / "x")}
    code, found = await doctor("--preflight", env=broken)
    check = found["claude-code CLI"]
    assert code == 1 and check["status"] == "fail", check
    assert str(tmp_path / "x") in check["detail"] and "make deps" in check["fix"]


async def test_doctor_asks_the_running_server(doctor_env: None, without_cli: Runtime) -> None:
    async with serving(without_cli) as url:
        _, found = await doctor("--url", url, env={"QUARTERDECK_HTTP_PORT": url.rsplit(":")[-1]})
    check = found["claude-code CLI"]  # the server's probe, not this shell's
    assert check["status"] == "fail" and "missing" in check["detail"], check
