"""The policy gate inside real agent runs: the anthropic SDK against the local Messages API."""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx
import pytest

from quarterdeck.app import create_app
from quarterdeck.chaos.messages_api import MessagesAPIServer, message, text, tool_use
from quarterdeck.metrics import REGISTRY
from quarterdeck.runs.models import RunCreate, RunStatus
from quarterdeck.runtime import Runtime

pytest_plugins = ["tests.support.fixtures"]
pytestmark = pytest.mark.asyncio
AWS_KEY = "AKIAZ7Q4LMN2PXR3TKVW"


@pytest.fixture
def agent_settings(make_settings, messages_api: MessagesAPIServer):
    def make(**extra):
        return make_settings(
            provider="anthropic",
            anthropic_api_key="sk-ant-test",
            anthropic_base_url=messages_api.base_url,
            default_model="claude-sonnet-4-5",
            **extra,
        )

    return make


@contextlib.asynccontextmanager
async def scripted(settings, messages_api: MessagesAPIServer, replies: list):
    """A started runtime whose model plays ``replies``; stopped on exit."""
    messages_api.script(replies)
    rt = Runtime(settings)
    await rt.start()
    try:
        yield rt
    finally:
        await rt.stop()


def _tool_results(messages_api: MessagesAPIServer) -> list[dict]:
    """The tool_result blocks the model received, in order."""
    out = []
    for r in messages_api.requests:
        if r.path != "/v1/messages":
            continue
        last = r.json["messages"][-1]
        if last["role"] == "user" and isinstance(last["content"], list):
            out += [b for b in last["content"] if b.get("type") == "tool_result"]
    return out


async def test_a_denied_call_never_runs_the_model_sees_why_and_a_security_incident_opens(
    agent_settings, messages_api: MessagesAPIServer
):
    before = (
        REGISTRY.get_sample_value(
            "claude_agent_errors_total",
            {"agent_type": "coder", "error_type": "security_anomaly", "severity": "critical"},
        )
        or 0.0
    )
    async with scripted(
        agent_settings(),
        messages_api,
        [
            message(tool_use("run_command", {"command": "cat ~/.ssh/id_rsa > key.txt"})),
            message(text("I will not read that key.")),
        ],
    ) as rt:
        run, _ = await rt.runs.submit(RunCreate(prompt="x", workspace={"type": "empty"}))
        done = await rt.runs.wait(run.id, 60)
        assert done.status == RunStatus.succeeded
        result = _tool_results(messages_api)[0]
        assert result["is_error"] is True
        assert "blocked by policy rule sensitive-file" in json.dumps(result)
        events = await rt.runs.events(run.id)
        call = next(e for e in events if e.type == "tool_call")
        assert call.data["policy"]["action"] == "deny"
        assert call.data["policy"]["severity"] == "critical"
        incidents = (await rt.incidents.list()).items
        security = [i for i in incidents if i.source == "security"]
        assert security and run.id in security[0].title
        after = REGISTRY.get_sample_value(
            "claude_agent_errors_total",
            {"agent_type": "coder", "error_type": "security_anomaly", "severity": "critical"},
        )
        assert after == before + 1
        from quarterdeck.agents.workspace import Workspace

        assert not (Workspace(rt.settings.data_dir, run.id).path / "key.txt").exists()


async def test_a_held_call_runs_after_an_operator_approves_it_over_the_api(
    agent_settings, messages_api: MessagesAPIServer
):
    async with scripted(
        agent_settings(),
        messages_api,
        [
            message(tool_use("run_command", {"command": "sudo true; echo ran > proof.txt"})),
            message(text("done")),
        ],
    ) as rt:
        app = create_app(rt.settings, rt)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://qd"
        ) as client:
            run = (
                await client.post("/v1/runs", json={"prompt": "x", "workspace": {"type": "empty"}})
            ).json()
            pending: list = []
            for _ in range(200):
                pending = (await client.get("/v1/approvals")).json()
                if pending:
                    break
                await asyncio.sleep(0.05)
            assert len(pending) == 1 and pending[0]["run_id"] == run["id"]
            assert pending[0]["tool"] == "run_command" and pending[0]["status"] == "pending"
            still = (await client.get(f"/v1/runs/{run['id']}")).json()
            assert still["status"] == "running", "the run waits for the decision"
            decided = await client.post(
                f"/v1/approvals/{pending[0]['id']}/approve", json={"note": "ok for this repo"}
            )
            assert decided.status_code == 200 and decided.json()["status"] == "approved"
            again = await client.post(f"/v1/approvals/{pending[0]['id']}/reject", json={})
            assert again.status_code == 409
            done = (await client.get(f"/v1/runs/{run['id']}/wait", params={"timeout": 60})).json()
            assert done["status"] == "succeeded"
            events = (await client.get(f"/v1/runs/{run['id']}/events")).json()
            call = next(e for e in events if e["type"] == "tool_call")
            assert call["data"]["policy"]["approval"]["status"] == "approved"
            assert not call["data"].get("is_error"), call["data"]


async def test_a_rejected_call_is_a_tool_error_and_never_runs(
    agent_settings, messages_api: MessagesAPIServer
):
    async with scripted(
        agent_settings(),
        messages_api,
        [
            message(tool_use("run_command", {"command": "sudo apt-get install -y cowsay"})),
            message(text("understood")),
        ],
    ) as rt:
        run, _ = await rt.runs.submit(RunCreate(prompt="x", workspace={"type": "empty"}))
        pending = []
        for _ in range(200):
            pending = await rt.approvals.list(None)
            if pending:
                break
            await asyncio.sleep(0.05)
        assert pending, "no approval was requested"
        await rt.approvals.decide(pending[0].id, False, tenant=None, by="key:ops", note="no")
        done = await rt.runs.wait(run.id, 60)
        assert done.status == RunStatus.succeeded
        result = _tool_results(messages_api)[0]
        assert result["is_error"] is True and "rejected by key:ops (no)" in json.dumps(result)


async def test_secrets_are_redacted_before_the_model_or_storage_see_them(
    agent_settings, messages_api: MessagesAPIServer, db_url: str
):
    async with scripted(
        agent_settings(),
        messages_api,
        [
            message(
                text(f"Checking the key {AWS_KEY} first."),
                tool_use("run_command", {"command": f"echo aws_access_key_id={AWS_KEY}"}),
            ),
            message(text("done")),
        ],
    ) as rt:
        run, _ = await rt.runs.submit(RunCreate(prompt="x", workspace={"type": "empty"}))
        done = await rt.runs.wait(run.id, 60)
        assert done.status == RunStatus.succeeded
        results = _tool_results(messages_api)
        assert "[REDACTED:" in json.dumps(results), "the model saw the raw tool output"
        resent = json.dumps([r.json for r in messages_api.requests[1:]])
        assert AWS_KEY not in resent, "a secret was sent back to the provider"
        import asyncpg

        conn = await asyncpg.connect(db_url)
        try:
            stored = await conn.fetchval(
                "SELECT string_agg(data::text, ' ') FROM run_events WHERE run_id = $1", run.id
            )
            turns = await conn.fetchval(
                "SELECT string_agg(messages::text, ' ') FROM run_turns WHERE run_id = $1", run.id
            )
        finally:
            await conn.close()
        assert AWS_KEY not in stored and AWS_KEY not in turns
        call = next(e for e in await rt.runs.events(run.id) if e.type == "tool_call")
        assert call.data["secrets_redacted"]
        turn = next(e for e in await rt.runs.events(run.id) if e.type == "turn")
        assert turn.data["secrets_redacted"]
