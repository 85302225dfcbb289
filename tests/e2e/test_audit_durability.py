"""SIGKILL `quarterdeck up` just after a run ends and while another run's tool is running: the
audit log has both runs' events anyway.

Run and tool-call outcomes are appended without waiting (the hot path) and must be written by
the audit flusher within ~100 ms *on their own*. Before that was so, they sat in memory until some
unrelated durable write came along, and a SIGKILL after a successful run left no audit record of
it at all. A tool call's intent is written durably before the tool starts, so a call that was
running when the process died is on record although its outcome never was.

One deployment, two processes: run B starts a long command; run A then runs to completion; a few
flush windows later (nothing else durable is written meanwhile: B's command is still sleeping)
the process is SIGKILLed. The second process finds all of A's events, and B's interrupted call
(intent, no outcome) beside its rerun (intent and outcome, same tool-use id).
"""

from __future__ import annotations

import time

import httpx
import pytest

from quarterdeck.chaos.messages_api import MessagesAPIServer, message, text, tool_use
from tests.e2e.conftest import Deployment

pytest_plugins = ["tests.support.fixtures"]
pytestmark = pytest.mark.e2e
WINDOW_S = 0.1  # the documented flush window (the appender's max_delay)
# Long enough to still be running when the process is killed. The rerun sleeps again: a resumed
# run's workspace is rebuilt as of its last checkpoint, so a command cut short leaves no trace.
SLOW_ONCE = "sleep 7"


def _events(client: httpx.Client, run_id: str) -> list[dict[str, object]]:
    page = client.get("/v1/audit/events", params={"session_id": run_id, "limit": 500})
    assert page.status_code == 200, page.text
    return list(page.json()["items"])


def _submit(client: httpx.Client, prompt: str) -> str:
    created = client.post("/v1/runs", json={"prompt": prompt, "workspace": {"type": "empty"}})
    assert created.status_code == 202, created.text
    return str(created.json()["id"])


def test_a_sigkill_loses_no_audit_event_of_a_finished_run_nor_a_running_call(
    deployment: Deployment, messages_api: MessagesAPIServer
) -> None:
    messages_api.script(
        [
            message(tool_use("run_command", {"command": SLOW_ONCE}, id="tu_slow")),  # B
            message(tool_use("write_file", {"path": "a.py", "content": "print(1)\n"})),  # A
            message(tool_use("read_file", {"path": "a.py"})),  # A
            message(text("done")),  # A
            message(text("done")),  # B, resumed by the second process
        ]
    )
    real = {
        "QUARTERDECK_PROVIDER": "anthropic",
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "QUARTERDECK_ANTHROPIC_BASE_URL": messages_api.base_url,
        "QUARTERDECK_DEFAULT_MODEL": "claude-sonnet-4-5",
    }
    first = deployment.start("up", **real)
    client = httpx.Client(base_url=deployment.url, timeout=30)
    slow = _submit(client, "wait")
    deadline = time.monotonic() + 30
    while not any(e["event_type"] == "tool.intent" for e in _events(client, slow)):
        assert time.monotonic() < deadline, "run B's tool.intent was never written"
        time.sleep(0.05)
    quick = _submit(client, "add a")
    done = client.get(f"/v1/runs/{quick}/wait", params={"timeout": 60}, timeout=90).json()
    assert done["status"] == "succeeded", done
    # The worker audits run.completed right after the finish that woke `wait`; allow it a few
    # flush windows, then crash while B's command still sleeps.
    time.sleep(5 * WINDOW_S)
    assert client.get(f"/v1/runs/{slow}").json()["status"] == "running"
    first.kill()

    deployment.start("up", **real)
    events = _events(client, quick)
    kinds = sorted(str(e["event_type"]) for e in events)
    assert kinds == [
        "run.completed",
        "run.created",
        "tool.call",
        "tool.call",
        "tool.intent",
        "tool.intent",
    ], kinds
    completed = next(e for e in events if e["event_type"] == "run.completed")
    assert completed["outcome"] == "succeeded"
    calls = {e["request_id"]: e for e in events if e["event_type"] == "tool.call"}
    intents = {e["request_id"]: e for e in events if e["event_type"] == "tool.intent"}
    assert calls.keys() == intents.keys() and len(calls) == 2
    for tool_use_id, call in calls.items():  # each intent was written before its outcome
        assert int(str(intents[tool_use_id]["seq"])) < int(str(call["seq"]))

    resumed = client.get(f"/v1/runs/{slow}/wait", params={"timeout": 90}, timeout=100).json()
    assert resumed["status"] == "succeeded" and resumed["attempts"] == 2, resumed
    time.sleep(5 * WINDOW_S)
    events = _events(client, slow)
    intents_b = [e["request_id"] for e in events if e["event_type"] == "tool.intent"]
    calls_b = [e["request_id"] for e in events if e["event_type"] == "tool.call"]
    assert intents_b == ["tu_slow", "tu_slow"], events  # the killed call, and its rerun
    assert calls_b == ["tu_slow"], events  # only the rerun had an outcome
    report = client.get("/v1/audit/verify").json()
    assert report["ok"], report
