"""SIGKILL the worker after turn 3 of a 6-turn agent run: it resumes at turn 4, billed once."""

from __future__ import annotations

import time

import httpx
import pytest

from quarterdeck.chaos.messages_api import MessagesAPIServer
from tests.e2e.conftest import Deployment
from tests.integration.test_agent_runs import scripted_total, six_turn_script

pytest_plugins = ["tests.support.fixtures"]
pytestmark = pytest.mark.e2e


def test_a_killed_agent_run_resumes_at_the_next_turn_without_rebilling(
    deployment: Deployment, messages_api: MessagesAPIServer
):
    messages_api.script(six_turn_script(slow_turn=4))
    real = {
        "QUARTERDECK_PROVIDER": "anthropic",
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "QUARTERDECK_ANTHROPIC_BASE_URL": messages_api.base_url,
        "QUARTERDECK_DEFAULT_MODEL": "claude-sonnet-4-5",
    }
    first = deployment.start("up", **real)
    client = httpx.Client(base_url=deployment.url, timeout=30)
    run = client.post("/v1/runs", json={"prompt": "add calc", "workspace": {"type": "empty"}})
    run_id = run.json()["id"]

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # turn 3 checkpointed and turn 4's call in flight
        turns = client.get(f"/v1/runs/{run_id}").json()["turns"]
        if turns == 3 and len(messages_api.requests) == 4:
            break
        time.sleep(0.05)
    assert turns == 3, "the run never reached turn 3"
    first.kill()

    deployment.start("up", **real)
    # The read timeout outlasts the wait: the resumed run may take longer than the client's 30 s.
    done = client.get(f"/v1/runs/{run_id}/wait", params={"timeout": 120}, timeout=150).json()
    assert done["status"] == "succeeded", done
    assert done["turns"] == 6 and done["attempts"] == 2
    # Billed exactly as an uninterrupted run: turns 1-3 once, turns 4-6 once.
    assert (done["input_tokens"], done["output_tokens"]) == scripted_total()
    events = client.get(f"/v1/runs/{run_id}/events").json()
    assert [e["turn"] for e in events if e["type"] == "turn"] == [1, 2, 3, 4, 5, 6]
    starts = [
        e["data"] for e in events if e["type"] == "status" and e["data"]["status"] == "running"
    ]
    assert [s["resumed"] for s in starts] == [False, True]
    # The resumed turn 4 continued from the checkpoint: same conversation prefix as before.
    sent = [r.json for r in messages_api.requests if r.path == "/v1/messages"]
    assert len(sent) == 7  # turn 4 was asked twice: once by the killed worker
    assert sent[3]["messages"] == sent[4]["messages"]
    # Files written before the kill survived in the workspace and are in the diff.
    assert sorted(done["changed_files"]) == ["calc.py", "test_calc.py"]
