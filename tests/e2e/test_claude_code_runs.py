"""Claude Code as a run's agent: the real CLI (2.1.197, pinned in the Makefile) runs headless in
the run's bubblewrap sandbox under ``quarterdeck up`` with authentication on; its model calls go
through Quarterdeck's gateway to the local Messages API stand-in, which plays the model.

The stand-in reads the turn from the request (one more than the model replies it carries)
and the working directory from Claude Code's system prompt, so one scripted "model" serves a run
wherever its workspace is, and a resumed run continues where it was.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from quarterdeck.agents.claude_code.command import session_id
from quarterdeck.chaos.deploy import stop_postgres
from quarterdeck.chaos.fake_http import Reply
from quarterdeck.chaos.messages_api import MessagesAPIServer, make_usage, message, text, tool_use
from tests.conftest import world_readable_tmpdir
from tests.e2e.conftest import Deployment

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]
CLAUDE = ROOT / ".venv" / "claude-code" / "node_modules" / ".bin" / "claude"
ADMIN = "bootstrap-admin-for-the-claude-code-e2e-0123456789"
UPSTREAM_KEY = "sk-upstream-only-quarterdeck-knows"
MODEL = "claude-sonnet-4-5"
RULES = """
rules:
  - id: test.keep-the-keepsake
    description: Deleting files is not allowed in this test deployment.
    match: {macro: shell, command: {name: rm}}
    decision: deny
    severity: high
  - id: test.touch-needs-a-person
    description: Creating marker files needs an operator in this test deployment.
    match: {macro: shell, command: {name: touch}}
    decision: require_approval
    severity: medium
"""
Step = Callable[[str], list[dict[str, Any]]]

if not CLAUDE.exists() and os.environ.get("CI") is None:
    pytest.skip("Claude Code CLI not installed (make deps installs it)", allow_module_level=True)


def price(turn: int) -> Decimal:
    """Turn ``t`` bills 100t input and 10t output tokens at Sonnet 4.5's $3 / $15 per million."""
    return (Decimal(3) * 100 * turn + Decimal(15) * 10 * turn) / Decimal(1_000_000)


class Model:
    """The scripted model: turn n answers ``steps[n-1](cwd)``; ``hang`` turns wait 60 s the
    first time they are asked (a call in flight when a worker dies)."""

    def __init__(self, steps: list[Step], hang: int | None = None) -> None:
        self.steps, self.hang = steps, hang
        self.asked: Counter[int] = Counter()
        self.requests: list[dict[str, Any]] = []

    @staticmethod
    def answered(msg: dict[str, Any]) -> bool:
        """A model reply, not the placeholder Claude Code writes into a session it resumes
        after an interrupted request ("No response requested.")."""
        return msg.get("role") == "assistant" and "No response requested." not in str(msg)

    def __call__(self, model: str, payload: Any) -> Reply:
        turn = 1 + sum(1 for m in payload.get("messages", []) if self.answered(m))
        system = str(payload.get("system"))
        found = re.search(r"Primary working directory: ([^\s\\]+)", system)
        assert found, "Claude Code's system prompt names its working directory"
        self.asked[turn] += 1
        self.requests.append(payload)
        blocks = self.steps[min(turn, len(self.steps)) - 1](found.group(1))
        delay = 60.0 if turn == self.hang and self.asked[turn] == 1 else 0.0
        usage = make_usage(input_tokens=100 * turn, output_tokens=10 * turn)
        return message(*blocks, usage=usage, model=model, delay=delay)


def bash(command: str) -> Step:
    return lambda cwd: [tool_use("Bash", {"command": command})]


def say(words: str) -> Step:
    return lambda cwd: [text(words)]


@pytest.fixture(scope="module")
def upstream() -> Iterator[MessagesAPIServer]:
    server = MessagesAPIServer().start()
    yield server
    server.stop()


def _start(dep: Deployment, upstream: MessagesAPIServer, **extra: str) -> None:
    rules = dep.root / "rules.yaml"
    rules.write_text(RULES)
    dep.start(
        "up",
        QUARTERDECK_AUTH_ENABLED="true",
        QUARTERDECK_ADMIN_API_KEY=ADMIN,
        QUARTERDECK_GATEWAY_UPSTREAM_URL=upstream.base_url,
        QUARTERDECK_GATEWAY_UPSTREAM_API_KEY=UPSTREAM_KEY,
        QUARTERDECK_POLICY_RULES_FILE=str(rules),
        QUARTERDECK_WORKER_HEARTBEAT_TIMEOUT="3",
        QUARTERDECK_DRAIN_TIMEOUT="2",
        **extra,
    )


@pytest.fixture(scope="module")
def qd(upstream: MessagesAPIServer) -> Iterator[Deployment]:
    dep = Deployment(world_readable_tmpdir("qd-cc-e2e-"))
    _start(dep, upstream)
    yield dep
    dep.stop_all()


def _key(url: str, tenant: str = "acme", role: str = "submitter") -> str:
    made = httpx.post(
        f"{url}/v1/admin/keys",
        json={"name": f"{role} of {tenant}", "role": role, "tenant": tenant},
        headers={"authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )
    assert made.status_code == 201, made.text
    return str(made.json()["api_key"])


def _submit(url: str, key: str, prompt: str, **extra: Any) -> str:
    body = {"prompt": prompt, "agent_type": "claude-code", "model": MODEL, **extra}
    r = httpx.post(f"{url}/v1/runs", json=body, headers={"x-api-key": key}, timeout=10)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _wait(url: str, key: str, run_id: str, timeout: float = 90) -> dict[str, Any]:
    r = httpx.get(
        f"{url}/v1/runs/{run_id}/wait",
        params={"timeout": timeout},
        headers={"x-api-key": key},
        timeout=timeout + 10,
    )
    assert r.status_code == 200, r.text
    run: dict[str, Any] = r.json()
    assert run["status"] not in ("queued", "running"), run
    return run


def _events(url: str, key: str, run_id: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{url}/v1/runs/{run_id}/events", headers={"x-api-key": key}, timeout=10)
    assert r.status_code == 200, r.text
    return list(r.json())


def _tool_calls(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["type"] == "tool_call"]


def test_a_claude_code_run_writes_and_runs_a_file_billed_exactly(
    qd: Deployment, upstream: MessagesAPIServer
) -> None:
    model = Model(
        [
            lambda cwd: [
                tool_use("Write", {"file_path": f"{cwd}/hello.py", "content": "print('hi')\n"})
            ],
            bash("python3 hello.py > out.txt"),
            say("Wrote hello.py and ran it."),
        ]
    )
    upstream.conversation = model
    key = _key(qd.url)
    # A prompt is the submitter's text, never a flag (read as one, the CLI would print its
    # version and exit without a result).
    run_id = _submit(qd.url, key, "--version: write hello.py and run it.")
    run = _wait(qd.url, key, run_id)

    assert run["status"] == "succeeded", run
    assert run["result"] == "Wrote hello.py and ran it."
    assert sorted(run["changed_files"]) == ["hello.py", "out.txt"]
    diff = httpx.get(f"{qd.url}/v1/runs/{run_id}/diff", headers={"x-api-key": key}).text
    assert "+print('hi')" in diff and "+hi" in diff
    assert ".quarterdeck-agent" not in diff  # the CLI's home and transcript are not the change
    assert run["quality_score"] == 1.0  # scored like a native run's change (ruff: no findings)
    # Cost, tokens and turns are the gateway's metering: the hand-priced usage the stand-in sent.
    assert Decimal(str(run["cost_usd"])) == price(1) + price(2) + price(3)
    assert run["turns"] == 3 and run["input_tokens"] == 600 and run["output_tokens"] == 60
    events = _events(qd.url, key, run_id)
    calls = _tool_calls(events)
    assert [(c["tool"], c["is_error"]) for c in calls] == [("Write", False), ("Bash", False)]
    assert all(c["policy"]["action"] == "allow" for c in calls)
    metered = next(e["data"] for e in events if e["type"] == "metered")
    assert metered["calls"] == 3 and "cli_cost_usd" in metered
    assert not [e for e in events if e["type"] == "cost_mismatch"]
    # Every call went upstream with Quarterdeck's key; the run's token stopped at the gateway.
    assert "--version: write hello.py" in str(model.requests[0]["messages"])
    for sent in upstream.requests[-3:]:
        assert sent.headers["x-api-key"] == UPSTREAM_KEY
        assert "qd_run_" not in str(dict(sent.headers))
        assert sent.headers.get("x-claude-code-session-id") == session_id(run_id)


def test_a_denied_command_does_not_run_and_claude_is_told_why(
    qd: Deployment, upstream: MessagesAPIServer
) -> None:
    model = Model(
        [
            # Two calls in one turn: their results are checkpointed one after the other.
            lambda cwd: [
                tool_use("Bash", {"command": "printf keep > keepsake.txt"}),
                tool_use("Bash", {"command": "printf too > other.txt"}),
            ],
            bash("rm -f keepsake.txt"),
            say("It stays."),
        ]
    )
    upstream.conversation = model
    key = _key(qd.url)
    run_id = _submit(qd.url, key, "Make keepsake.txt, then delete it.")
    run = _wait(qd.url, key, run_id)

    assert run["status"] == "succeeded", run
    assert sorted(run["changed_files"]) == ["keepsake.txt", "other.txt"]  # never deleted
    rm = _tool_calls(_events(qd.url, key, run_id))[2]
    assert rm["tool"] == "Bash" and rm["is_error"] is True
    assert rm["policy"]["action"] == "deny" and rm["policy"]["rule_id"] == "test.keep-the-keepsake"
    # What Claude saw for the refused call names the rule and its reason.
    told = str(model.requests[-1]["messages"][-1])
    assert "Deleting files is not allowed" in told


PROBE = """\
import json, os, urllib.error, urllib.request

def status(path, token):
    request = urllib.request.Request("http://127.0.0.1:8787" + path)
    if token:
        request.add_header("authorization", "Bearer " + token)
    try:
        return urllib.request.urlopen(request, timeout=10).status
    except urllib.error.HTTPError as exc:
        return exc.code

token = os.environ["ANTHROPIC_AUTH_TOKEN"]
seen = {
    "runs_with_token": status("/v1/runs", token),
    "keys_without": status("/v1/admin/keys", None),
    "models_with_token": status("/v1/models", token),
    "env": sorted(os.environ),
}
open("probe.json", "w").write(json.dumps(seen))
"""


def test_what_the_agent_can_reach_is_the_gateway_and_nothing_else(
    qd: Deployment, upstream: MessagesAPIServer
) -> None:
    """Attacked from inside: a command the agent runs probes the one way out."""
    model = Model(
        [
            lambda cwd: [tool_use("Write", {"file_path": f"{cwd}/probe.py", "content": PROBE})],
            bash("python3 probe.py"),
            say("Probed."),
        ]
    )
    upstream.conversation = model
    key = _key(qd.url)
    run_id = _submit(qd.url, key, "Probe.")
    run = _wait(qd.url, key, run_id)
    assert run["status"] == "succeeded", run
    probe = json.loads((qd.data_dir / "workspaces" / run_id / "probe.json").read_text())
    assert probe["runs_with_token"] == 403  # the bridge passes the gateway's routes only
    assert probe["keys_without"] == 403
    assert probe["models_with_token"] == 200
    # Nothing of the worker's environment: no upstream key, no database URL, no settings.
    leaked = [n for n in probe["env"] if n.startswith(("QUARTERDECK_", "POSTGRES", "REDIS"))]
    assert leaked == [] and "ANTHROPIC_API_KEY" not in probe["env"]


def _pending(url: str, run_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(
            f"{url}/v1/approvals", headers={"authorization": f"Bearer {ADMIN}"}, timeout=10
        )
        held = [a for a in r.json() if a["run_id"] == run_id]
        if held:
            return dict(held[0])
        time.sleep(0.2)
    raise AssertionError("no tool call was held for approval")


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_a_held_call_waits_for_an_operator(
    qd: Deployment, upstream: MessagesAPIServer, decision: str
) -> None:
    model = Model([bash("touch approved.txt"), say("Finished.")])
    upstream.conversation = model
    key = _key(qd.url)
    run_id = _submit(qd.url, key, "Create approved.txt.")
    held = _pending(qd.url, run_id)
    assert held["tool"] == "Bash" and "touch approved.txt" in str(held["input"])
    assert len(model.requests) == 1  # Claude is waiting on the gate, not carrying on
    decided = httpx.post(
        f"{qd.url}/v1/approvals/{held['id']}/{decision}",
        json={"note": "checked by the e2e test"},
        headers={"authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )
    assert decided.status_code == 200, decided.text
    run = _wait(qd.url, key, run_id)
    assert run["status"] == "succeeded", run
    call = _tool_calls(_events(qd.url, key, run_id))[0]
    if decision == "approve":
        assert run["changed_files"] == ["approved.txt"] and call["is_error"] is False
    else:
        assert run["changed_files"] in ([], None) and call["is_error"] is True
        assert "rejected" in str(model.requests[-1]["messages"][-1])


def test_a_tiny_budget_ends_the_run_budget_exceeded_after_at_most_one_call(
    qd: Deployment, upstream: MessagesAPIServer
) -> None:
    model = Model([bash("true"), bash("true"), say("done")])
    upstream.conversation = model
    key = _key(qd.url)
    run_id = _submit(qd.url, key, "Spend.", budget_usd=0.001)
    run = _wait(qd.url, key, run_id)
    assert run["status"] == "budget_exceeded", run
    assert len(model.requests) <= 1
    assert Decimal(str(run["cost_usd"])) <= Decimal("0.001")


def _processes(marker: str) -> list[int]:
    """Live processes whose command line holds ``marker``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ")
            state = Path(f"/proc/{entry.name}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state not in (b"Z", b"X"):
            found.append(int(entry.name))
    return found


def test_cancel_stops_the_cli_and_its_commands_within_two_seconds(
    qd: Deployment, upstream: MessagesAPIServer
) -> None:
    model = Model([bash("sleep 31.7"), say("slept")])
    upstream.conversation = model
    key = _key(qd.url)
    run_id = _submit(qd.url, key, "Sleep.")
    session = session_id(run_id)
    deadline = time.monotonic() + 30
    while not _processes("sleep 31.7") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes("sleep 31.7") and _processes(session)
    started = time.monotonic()
    r = httpx.post(f"{qd.url}/v1/runs/{run_id}/cancel", headers={"x-api-key": key}, timeout=10)
    assert r.status_code == 200, r.text
    while (_processes("sleep 31.7") or _processes(session)) and time.monotonic() - started < 10:
        time.sleep(0.05)
    gone_after = time.monotonic() - started
    assert gone_after < 2.0, f"the CLI's processes outlived the cancel by {gone_after:.2f} s"
    run = _wait(qd.url, key, run_id)
    assert run["status"] == "cancelled"
    # What it spent before the cancel (turn 1's call) is on the run, as the gateway metered it.
    assert Decimal(str(run["cost_usd"])) == price(1) and run["turns"] == 1


def test_a_killed_worker_s_run_resumes_on_another_with_workspace_and_transcript(
    upstream: MessagesAPIServer,
) -> None:
    model = Model(
        [
            bash("printf one > first.txt"),
            bash("printf two > second.txt"),
            say("Both files are there."),
        ],
        hang=2,
    )
    upstream.conversation = model
    one = Deployment(world_readable_tmpdir("qd-cc-one-"))
    two = Deployment(world_readable_tmpdir("qd-cc-two-"))
    try:
        _start(one, upstream)
        key = _key(one.url)
        run_id = _submit(one.url, key, "Write first.txt and second.txt.")
        deadline = time.monotonic() + 60
        while model.asked[2] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # turn 1's tool ran and was checkpointed; turn 2's call hangs
        assert model.asked[2] == 1
        socket_dir = (one.pgdata / "postmaster.pid").read_text().splitlines()[4].strip()
        shutil.copytree(one.data_dir / "keys", two.data_dir / "keys")
        _start(two, upstream, POSTGRES_URL=f"postgresql://postgres:@/postgres?host={socket_dir}")
        for proc in one.procs:
            os.killpg(proc.popen.pid, signal.SIGKILL)
        run = _wait(two.url, key, run_id, timeout=120)

        assert run["status"] == "succeeded", run
        assert run["attempts"] == 2
        assert sorted(run["changed_files"]) == ["first.txt", "second.txt"]
        restored = two.data_dir / "workspaces" / run_id
        assert (restored / "first.txt").read_text() == "one"
        events = _events(two.url, key, run_id)
        started = [e["data"] for e in events if e["type"] == "agent_started"]
        assert [s["resumed"] for s in started] == [False, True]
        # The resumed CLI sent turn 1 from its transcript: the model was not asked it again.
        assert (model.asked[1], model.asked[2], model.asked[3]) == (1, 2, 1), dict(model.asked)
        # Billed once per completed call: turn 1 on the first replica, 2 and 3 on the second
        # (the call in flight died with the first replica's gateway, unanswered and unbilled).
        assert Decimal(str(run["cost_usd"])) == price(1) + price(2) + price(3)
    finally:
        two.stop_all()  # first: it is a client of the first one's Postgres
        one.stop_all()
        stop_postgres(one.pgdata)  # started by the killed process, so it outlived it


def test_a_draining_worker_checkpoints_and_releases_the_run_to_resume(
    qd: Deployment, upstream: MessagesAPIServer
) -> None:
    """Last in this module: it stops the shared deployment and starts it again."""
    model = Model([bash("printf a > a.txt"), bash("printf b > b.txt"), say("a and b.")], hang=2)
    upstream.conversation = model
    key = _key(qd.url)
    run_id = _submit(qd.url, key, "Write a.txt and b.txt.")
    deadline = time.monotonic() + 60
    while model.asked[2] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert model.asked[2] == 1
    for replica in list(qd.procs):
        assert replica.stop() == 0  # SIGTERM: drain for QUARTERDECK_DRAIN_TIMEOUT, then release
    qd.replicas.clear()
    _start(qd, upstream)
    run = _wait(qd.url, key, run_id)
    assert run["status"] == "succeeded", run
    assert run["attempts"] == 2 and sorted(run["changed_files"]) == ["a.txt", "b.txt"]
    events = _events(qd.url, key, run_id)
    released = [e for e in events if e["type"] == "status" and e["data"].get("status") == "queued"]
    assert released and "draining" in str(released[-1]["data"])
    assert model.asked[1] == 1  # turn 1 came from the transcript, not from the model again
