"""A worker frozen with SIGSTOP loses its run; woken, it records nothing and calls no model again.

Each worker process talks to its own Messages API stand-in, so every model call is attributed to
the process that made it without guessing from timing. The frozen worker (A) is stopped while
its turn-2 call is in flight; the other worker (B) picks the job up again and is itself mid-call
on turn 2 when A is woken. Without fencing A would record its turn 2 first (B's is not in yet),
run its tools and call its stand-in for turn 3.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from quarterdeck.chaos.fake_http import Reply
from quarterdeck.chaos.messages_api import (
    Conversation,
    MessagesAPIServer,
    make_usage,
    message,
    text,
    tool_use,
)
from tests.e2e.conftest import Deployment

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Turns(Conversation):
    """Replies by turn (one more than the assistant messages sent): ``{turn: (tokens, delay)}``;
    a turn before ``turns`` asks for a tool, the last one answers."""

    plan: Mapping[int, tuple[int, float]] | None = None

    def __call__(self, model: str, payload: Mapping[str, Any]) -> Reply:
        turn = 1 + sum(1 for m in payload.get("messages", []) if m.get("role") == "assistant")
        tokens, delay = (self.plan or {}).get(turn, (1, 0.0))
        usage = make_usage(input_tokens=tokens, output_tokens=tokens // 10)
        if turn < self.turns:
            blocks = [text(f"turn {turn}"), tool_use("list_files", {"path": "."})]
        else:
            blocks = [text("done")]
        return message(*blocks, model=model, usage=usage, delay=delay)


def _calls(api: MessagesAPIServer) -> int:
    return sum(1 for r in api.requests if r.path == "/v1/messages")


def _until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_frozen_worker_that_lost_its_run_records_nothing_and_makes_no_call(
    deployment: Deployment,
) -> None:
    # A: turn 1 at once, turn 2 answers after 2 s (in flight when frozen). B: turn 2 answers
    # after 4 s (still in flight when A wakes), turn 3 ends the run.
    a = MessagesAPIServer(Turns(turns=3, plan={1: (1000, 0.0), 2: (2000, 2.0)})).start()
    b = MessagesAPIServer(Turns(turns=3, plan={2: (20000, 4.0), 3: (30000, 0.0)})).start()
    common = {
        "QUARTERDECK_PROVIDER": "anthropic",
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "QUARTERDECK_DEFAULT_MODEL": "claude-sonnet-4-5",
        "QUARTERDECK_WORKER_HEARTBEAT_TIMEOUT": "1",
    }
    frozen = None
    try:
        deployment.start("serve", QUARTERDECK_ANTHROPIC_BASE_URL=a.base_url, **common)
        worker_a = deployment.start("worker", QUARTERDECK_ANTHROPIC_BASE_URL=a.base_url, **common)
        client = httpx.Client(base_url=deployment.url, timeout=30)
        run_id = client.post(
            "/v1/runs", json={"prompt": "look around", "workspace": {"type": "empty"}}
        ).json()["id"]

        _until(lambda: _calls(a) == 2, 60, "worker A's turn-2 call")
        os.kill(worker_a.popen.pid, signal.SIGSTOP)
        frozen = worker_a.popen.pid
        deployment.start("worker", QUARTERDECK_ANTHROPIC_BASE_URL=b.base_url, **common)
        _until(lambda: _calls(b) == 1, 60, "worker B picking the run up and calling turn 2")
        os.kill(frozen, signal.SIGCONT)
        frozen = None

        done = client.get(f"/v1/runs/{run_id}/wait", params={"timeout": 60}, timeout=90).json()
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 2 and done["turns"] == 3
        time.sleep(1.0)  # room for a call A should not make

        assert _calls(a) == 2, "worker A called its model after it woke"
        assert _calls(b) == 2  # turns 2 and 3
        events = client.get(f"/v1/runs/{run_id}/events").json()
        assert [e["turn"] for e in events if e["type"] == "turn"] == [1, 2, 3]
        # Turn 1 by attempt 1 (A), turns 2 and 3 by attempt 2 (B); A's turn 2 is not billed.
        assert done["input_tokens"] == 1000 + 20000 + 30000
        discarded = [e for e in events if e["type"] == "discarded_call"]
        assert len(discarded) == 1, events
        assert discarded[0]["turn"] == 2 and discarded[0]["data"]["attempt"] == 1
        assert discarded[0]["data"]["usage"]["input_tokens"] == 2000
        assert discarded[0]["data"]["cost_usd"] > 0
        statuses = [e["data"] for e in events if e["type"] == "status"]
        running = [s for s in statuses if s["status"] == "running"]
        assert [s["attempt"] for s in running] == [1, 2] and running[1]["resumed"] is True
        # The timeline says attempt 1 was superseded: taken over while running (pgqueuer
        # re-picked its job), or requeued first by the health monitor for its silence.
        superseded = running[1].get("superseded")
        requeued = [s for s in statuses if "heartbeat" in (s.get("reason") or "")]
        assert (superseded and superseded["attempt"] == 1) or requeued, statuses
        assert [s["status"] for s in statuses][-1] == "succeeded"
        log = (deployment.root / f"{worker_a.name}.log").read_text()
        assert "run.fenced" in log
    finally:
        if frozen is not None:
            os.kill(frozen, signal.SIGCONT)
        a.stop()
        b.stop()
