"""What the running system writes to the audit log: run lifecycle, tool calls with their policy
decisions, key changes, approvals and config changes; and the chain still verifies."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from quarterdeck.agents.guard import Guard, GuardedTools
from quarterdeck.agents.tools import WorkspaceTools
from quarterdeck.agents.workspace import Workspace
from quarterdeck.app import create_app
from quarterdeck.chaos.messages_api import MessagesAPIServer, message, text, tool_use
from quarterdeck.providers.types import ToolUseBlock
from quarterdeck.runs.models import Run
from quarterdeck.runtime import Runtime
from quarterdeck.security.audit import AuditLog
from quarterdeck.security.audit.models import EventFilter
from quarterdeck.security.policy import PolicyGate
from quarterdeck.security.trail import AuditTrail
from quarterdeck.store.pool import Database
from tests.support.runs import running_run

pytest_plugins = ["tests.support.fixtures"]
pytestmark = pytest.mark.asyncio
ADMIN = "qd-admin-" + "x" * 40


async def _events(rt: Runtime, **f) -> list:
    await rt.audit.flush()
    return (await rt.audit.search(EventFilter(limit=500, **f))).items


async def test_the_system_audits_what_it_does_and_the_chain_verifies(
    make_settings, messages_api: MessagesAPIServer
):
    messages_api.script(
        [
            message(
                tool_use("write_file", {"path": "a.py", "content": "print(1)\n"}),
                tool_use("run_command", {"command": "cat /etc/shadow"}),
            ),
            message(text("done")),
        ]
    )
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
    app = create_app(settings, rt)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://qd"
        ) as client:
            created = (
                await client.post(
                    "/v1/admin/keys",
                    headers=admin,
                    json={"name": "ci", "role": "submitter", "tenant": "acme"},
                )
            ).json()
            key = {"Authorization": f"Bearer {created['api_key']}", "X-Request-Id": "req-42"}
            run = (
                await client.post(
                    "/v1/runs",
                    headers=key,
                    json={"prompt": "secret plan", "workspace": {"type": "empty"}},
                )
            ).json()
            done = (
                await client.get(f"/v1/runs/{run['id']}/wait", headers=key, params={"timeout": 60})
            ).json()
            assert done["status"] == "succeeded"
            r = await client.put("/v1/tenants/acme/budget", headers=admin, json={"daily_usd": 5})
            assert r.status_code == 200
            await client.delete(f"/v1/admin/keys/{created['id']}", headers=admin)
        await asyncio.sleep(0)

        acme = await _events(rt, tenant="acme")
        kinds = [e.event_type for e in acme]
        for expected in (
            "key.created",
            "run.created",
            "tool.call",
            "run.completed",
            "config.changed",
            "key.revoked",
        ):
            assert expected in kinds, (expected, kinds)
        completed = next(e for e in acme if e.event_type == "run.completed")
        assert completed.actor.startswith("worker:") and completed.outcome == "succeeded"
        assert completed.data_accessed[1]["attempts"] == 1
        created_ev = next(e for e in acme if e.event_type == "run.created")
        assert created_ev.session_id == run["id"] and created_ev.request_id == "req-42"
        assert created_ev.actor == f"key:{created['id']}"
        assert created_ev.sensitive == {"prompt": "secret plan"}, "decrypted on read"
        tools = [e for e in acme if e.event_type == "tool.call"]
        write = next(e for e in tools if e.operations == ["write_file"])
        assert write.files_modified and write.anomaly is None
        shadow = next(e for e in tools if e.operations == ["run_command"])
        assert shadow.outcome == "error"
        assert shadow.anomaly["decision"] == "deny" and shadow.anomaly["severity"] in (
            "high",
            "critical",
        )
        # The call that ran has its intent, written before its outcome and linked to it by the
        # model's tool-use id; the refused one never ran, so it has no intent.
        intents = [e for e in acme if e.event_type == "tool.intent"]
        assert [e.operations for e in intents] == [["write_file"]]
        (intent,) = intents
        assert intent.request_id == write.request_id and intent.request_id
        assert intent.seq < write.seq and intent.outcome == "intended"
        assert intent.sensitive == {"input": {"path": "a.py", "content": "print(1)\n"}}
        assert shadow.request_id not in {e.request_id for e in intents}
        flagged = await _events(rt, tenant="acme", anomalies=True)
        assert [e.seq for e in flagged] == [shadow.seq]

        report = await rt.audit.verify()
        assert report.ok, report.problems
        assert report.events_checked >= len(acme)
    finally:
        await rt.stop()


def _run_record(run_id: str) -> Run:
    return running_run(run_id, agent_type="general")


async def test_a_tool_call_whose_intent_cannot_be_recorded_does_not_run(db_url: str, make_settings):
    """The guard writes ``tool.intent`` durably before the tool runs; when the audit log cannot
    take it (here: its database pool is closed) the call is refused and has no effect."""
    settings = make_settings()
    db = Database(db_url, min_size=1, max_size=2)
    await db.open()
    audit = AuditLog.from_settings(settings, db)
    await audit.start(loops=False)
    guard = Guard(PolicyGate.from_settings(settings), trail=AuditTrail(audit))
    tools = GuardedTools(WorkspaceTools(settings), guard, workspace=None)
    write = {"path": "a.py", "content": "print(1)\n"}
    try:
        ok_run = _run_record("run-intent-ok")
        result, _ = await tools.run(ok_run, ToolUseBlock("tu-1", "write_file", write))
        assert not result.is_error, result.content
        assert (Workspace(settings.data_dir, ok_run.id).path / "a.py").exists()
        await audit.flush()
        page = await audit.search(EventFilter(tenant="acme", session_id=ok_run.id))
        assert sorted(e.event_type for e in page.items) == ["tool.call", "tool.intent"]

        await db.close()  # from here on, no audit write can succeed
        lost_run = _run_record("run-intent-lost")
        result, event = await tools.run(lost_run, ToolUseBlock("tu-2", "write_file", write))
        assert result.is_error and "audit log could not record the call" in result.content
        assert event["is_error"] and event["policy"]["action"] == "allow"
        assert not (Workspace(settings.data_dir, lost_run.id).path / "a.py").exists()
    finally:
        await audit.aclose(timeout=1)
        await db.close()
