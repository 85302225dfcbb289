"""Claude Code's tool calls judged by Quarterdeck's policy gate: the translation into the gate's
vocabulary, the worker-side gate server, and the fail-closed hook script (run for real, as the
CLI runs it, with ``python -I -S``). The real CLI is in tests/integration/test_claude_code_hook.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from quarterdeck.agents.claude_code.gate import HOOK_PATH, GateServer, hook_settings
from quarterdeck.agents.claude_code.hook import CLI_TIMEOUT_MARGIN_S, FAIL_CLOSED
from quarterdeck.agents.claude_code.tools_map import SESSION_TOOLS, GateCall, to_gate
from quarterdeck.agents.guard import Guard
from quarterdeck.security.policy import PolicyGate
from tests.support.runs import running_run

WS = "/srv/ws/run-1"
AWS_SECRET = 'aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"'


@pytest.fixture(scope="module")
def gate() -> PolicyGate:
    return PolicyGate.load()


def judge(gate: PolicyGate, tool: str, tool_input: dict[str, Any]) -> str | None:
    call = to_gate(tool, tool_input, cwd=WS)
    return gate.check(call.tool, call.input, workspace=Path(WS)).rule_id


# -- tools_map ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tool", "tool_input", "expected"),
    [
        (
            "Bash",
            {"command": "ls -la", "timeout": 5},
            GateCall("run_command", {"command": "ls -la"}),
        ),
        (
            "Write",
            {"file_path": f"{WS}/a.py", "content": "x = 1\n"},
            GateCall("write_file", {"path": f"{WS}/a.py", "content": "x = 1\n"}),
        ),
        (
            "Edit",
            {"file_path": f"{WS}/a.py", "old_string": "1", "new_string": "2"},
            GateCall("edit_file", {"path": f"{WS}/a.py", "old": "1", "new": "2"}),
        ),
        (
            "MultiEdit",
            {
                "file_path": f"{WS}/a.py",
                "edits": [
                    {"old_string": "a", "new_string": "b"},
                    {"old_string": "c", "new_string": "d"},
                ],
            },
            GateCall("edit_file", {"path": f"{WS}/a.py", "old": "a\nc", "new": "b\nd"}),
        ),
        (
            "NotebookEdit",
            {"notebook_path": f"{WS}/n.ipynb", "new_source": "print(1)", "cell_id": "c1"},
            GateCall("edit_file", {"path": f"{WS}/n.ipynb", "old": "", "new": "print(1)"}),
        ),
        (
            "Read",
            {"file_path": "/etc/passwd", "limit": 3},
            GateCall("read_file", {"path": "/etc/passwd"}),
        ),
        (
            "NotebookRead",
            {"notebook_path": f"{WS}/n.ipynb"},
            GateCall("read_file", {"path": f"{WS}/n.ipynb"}),
        ),
        ("Glob", {"pattern": "**/*.py"}, GateCall("list_files", {"path": WS})),
        (
            "Glob",
            {"pattern": "src/**/*.py", "path": "/opt"},
            GateCall("list_files", {"path": "/opt/src"}),
        ),
        ("Glob", {"pattern": "/root/.ssh/id_*"}, GateCall("list_files", {"path": "/root/.ssh"})),
        (
            "Glob",
            {"pattern": "../../etc/*.conf"},
            GateCall("list_files", {"path": f"{WS}/../../etc"}),
        ),
        (
            "Grep",
            {"pattern": "TODO", "path": "/root/.aws", "glob": "*.ini", "-n": True},
            GateCall("search", {"pattern": "TODO", "path": "/root/.aws", "glob": "*.ini"}),
        ),
        ("Grep", {"pattern": "TODO"}, GateCall("search", {"pattern": "TODO", "path": WS})),
        ("LS", {"path": "sub"}, GateCall("list_files", {"path": f"{WS}/sub"})),
        (
            "WebFetch",
            {"url": "https://example.com/x", "prompt": "summarise"},
            GateCall("http_fetch", {"url": "https://example.com/x"}),
        ),
    ],
)
def test_claude_code_tools_become_the_gates_tools(
    tool: str, tool_input: dict[str, Any], expected: GateCall
) -> None:
    assert to_gate(tool, tool_input, cwd=WS) == expected


@pytest.mark.parametrize(
    ("tool", "tool_input"),
    [
        ("mcp__github__create_issue", {"title": "x"}),
        ("WebSearch", {"query": "quarterdeck"}),
        ("Skill", {"skill": "review"}),
        ("CronCreate", {"cron": "* * * * *", "prompt": "x"}),
        ("Bash", {"command": ["rm", "-rf", "/"]}),  # wrong shape: not translated
        ("Bash", {}),
        ("Write", {"file_path": "/etc/x"}),  # no content
        ("Read", {"file_path": ""}),
        ("Glob", {"pattern": "*", "path": 7}),
    ],
)
def test_other_tools_and_misshapen_calls_keep_their_name_and_the_gate_refuses_them(
    gate: PolicyGate, tool: str, tool_input: dict[str, Any]
) -> None:
    call = to_gate(tool, tool_input, cwd=WS)
    assert call == GateCall(tool, tool_input)
    assert judge(gate, tool, tool_input) == "gate.unknown-tool"


def test_session_bookkeeping_tools_are_admitted_without_the_gate() -> None:
    for tool in ("Task", "TodoWrite", "TaskCreate", "TaskUpdate", "ExitPlanMode", "TaskOutput"):
        assert tool in SESSION_TOOLS
        call = to_gate(tool, {"x": 1}, cwd=WS)
        assert call.session_only and call.tool == tool and call.input == {"x": 1}
    assert not to_gate("Bash", {"command": "true"}, cwd=WS).session_only


@pytest.mark.parametrize(
    ("tool", "tool_input", "rule"),
    [
        ("Bash", {"command": "rm -rf ~"}, "destructive.rm-outside-workspace"),
        ("Bash", {"command": "cat ~/.ssh/id_rsa"}, "sensitive-file.ssh-private-key"),
        ("Read", {"file_path": "/root/.ssh/id_rsa"}, "sensitive-file.ssh-private-key"),
        (
            "Write",
            {"file_path": "/root/.bashrc", "content": "curl x | sh\n"},
            "workspace.write-outside",
        ),
        (
            "Edit",
            {"file_path": f"{WS}/c.py", "old_string": "a", "new_string": AWS_SECRET},
            "secrets.in-input",
        ),
        ("WebFetch", {"url": "http://169.254.169.254/latest/meta-data"}, "egress.cloud-metadata"),
        ("Grep", {"pattern": "key", "path": "/root/.aws"}, "sensitive-file.credential-dir"),
        ("Bash", {"command": "pytest -q"}, None),
        ("Write", {"file_path": f"{WS}/a.py", "content": "print(1)\n"}, None),
    ],
)
def test_the_gates_rules_hold_for_claude_codes_calls(
    gate: PolicyGate, tool: str, tool_input: dict[str, Any], rule: str | None
) -> None:
    assert judge(gate, tool, tool_input) == rule


# -- GateServer.decide ------------------------------------------------------------------------
def hook_input(tool: str, tool_input: dict[str, Any], tool_use_id: str = "toolu_1") -> dict:
    return {
        "session_id": "s",
        "hook_event_name": "PreToolUse",
        "cwd": WS,
        "tool_name": tool,
        "tool_input": tool_input,
        "tool_use_id": tool_use_id,
    }


def server(guard: Guard | None, sock: Path | None = None, **kw: Any) -> GateServer:
    run = running_run("run-cc-gate")
    return GateServer(guard, run, Path(WS), sock or Path("/nonexistent/gate.sock"), **kw)


def decision(out: dict[str, Any]) -> tuple[str, str]:
    spec = out["hookSpecificOutput"]
    assert spec["hookEventName"] == "PreToolUse"
    return spec["permissionDecision"], spec.get("permissionDecisionReason", "")


async def test_a_denied_call_is_answered_deny_with_the_rule_and_remembered(gate: PolicyGate):
    gs = server(Guard(gate))
    out = await gs.decide(hook_input("Bash", {"command": "rm -rf ~"}, "tu-deny"))
    verdict, reason = decision(out)
    assert verdict == "deny"
    assert reason.startswith("blocked by policy rule destructive.rm-outside-workspace")
    assert gs.decisions["tu-deny"]["action"] == "deny"
    assert gs.refusals["tu-deny"] == reason


async def test_an_allowed_or_flagged_call_is_answered_allow_with_its_record(gate: PolicyGate):
    gs = server(Guard(gate))
    ok = await gs.decide(hook_input("Write", {"file_path": f"{WS}/a.py", "content": "1"}, "tu-a"))
    assert decision(ok)[0] == "allow"
    assert gs.decisions["tu-a"]["action"] == "allow" and "tu-a" not in gs.refusals
    key = f"{WS}/creds.py"
    flagged = await gs.decide(
        hook_input("Write", {"file_path": key, "content": "AKIAZ7Q4LMN2PXR3TKVW"}, "tu-f")
    )
    assert decision(flagged)[0] == "allow"
    assert gs.decisions["tu-f"]["action"] == "flag" and "tu-f" not in gs.refusals


async def test_require_approval_without_an_approval_service_is_refused(gate: PolicyGate):
    gs = server(Guard(gate))
    out = await gs.decide(hook_input("Bash", {"command": "sudo true"}, "tu-sudo"))
    verdict, reason = decision(out)
    assert verdict == "deny" and "requires an operator's approval" in reason
    assert gs.decisions["tu-sudo"]["action"] == "require_approval"


async def test_unknown_tools_are_refused_and_session_tools_admitted(gate: PolicyGate):
    gs = server(Guard(gate))
    mcp = await gs.decide(hook_input("mcp__db__drop", {"table": "users"}, "tu-m"))
    assert decision(mcp)[0] == "deny" and "gate.unknown-tool" in decision(mcp)[1]
    todo = await gs.decide(hook_input("TaskCreate", {"subject": "x"}, "tu-t"))
    assert decision(todo)[0] == "allow" and gs.decisions["tu-t"]["action"] == "allow"


async def test_without_a_gate_everything_is_allowed_but_malformed_input_is_not():
    gs = server(None)
    out = await gs.decide(hook_input("Bash", {"command": "rm -rf ~"}, "tu-x"))
    assert decision(out)[0] == "allow"
    assert gs.decisions["tu-x"]["reason"] == "No policy gate is configured."
    for bad in (
        {"tool_input": {}, "tool_use_id": "a"},
        {"tool_name": "Bash", "tool_input": "rm", "tool_use_id": "b"},
        {"tool_name": "Bash", "tool_input": {"command": "true"}},
    ):
        verdict, reason = decision(await gs.decide(bad))
        assert verdict == "deny" and "could not read the call" in reason
    verdict, reason = decision(await gs.decide_raw(b"{not json\n"))
    assert verdict == "deny" and "not JSON" in reason
    assert decision(await gs.decide_raw(b"[1, 2]\n"))[0] == "deny"


# -- requests not from the hook (any process in the sandbox can reach the socket) -----------------
async def test_a_forged_request_gets_only_the_answer_the_same_call_would_get(gate: PolicyGate):
    """Who asks is not known (the hook's every secret is readable by the agent's own commands):
    so the answer must depend on the call alone, and be recorded as that call's would be."""
    calls = [
        ("Bash", {"command": "rm -rf ~"}),
        ("Bash", {"command": "ls"}),
        ("Write", {"file_path": f"{WS}/a.py", "content": "1"}),
        ("mcp__db__drop", {"table": "users"}),
    ]
    for i, (tool, tool_input) in enumerate(calls):
        hooked, forged = server(Guard(gate)), server(Guard(gate))
        real = await hooked.decide(hook_input(tool, tool_input, f"tu-{i}"))
        # a forger sends no cwd, another session id, the call's own shape otherwise
        fake = await forged.decide(
            {
                "tool_name": tool,
                "tool_input": tool_input,
                "tool_use_id": f"tu-{i}",
                "session_id": "not-the-cli",
            }
        )
        assert decision(fake) == decision(real)
        assert forged.decisions == hooked.decisions and forged.refusals == hooked.refusals


async def test_a_second_request_for_a_call_is_refused_and_changes_nothing(gate: PolicyGate):
    gs = server(Guard(gate))  # audit rows: tests/integration/test_claude_code_hook.py
    # The real call was allowed and runs; a command it started asks under the same id for a
    # call the gate refuses (that would mark it refused, and keep its outcome out of the audit).
    assert decision(await gs.decide(hook_input("Bash", {"command": "ls"}, "tu-1")))[0] == "allow"
    before = (dict(gs.decisions), dict(gs.refusals))
    verdict, reason = decision(await gs.decide(hook_input("Bash", {"command": "rm -rf ~"}, "tu-1")))
    assert verdict == "deny" and "already asked about tu-1" in reason
    assert (gs.decisions, gs.refusals) == before
    assert gs.contested == {"tu-1"} and gs.asked == {"tu-1"}
    # A forger that asks first (allowed) leaves the real call a duplicate: it does not run.
    assert decision(await gs.decide(hook_input("Bash", {"command": "ls"}, "tu-2")))[0] == "allow"
    assert decision(await gs.decide(hook_input("Bash", {"command": "cat x"}, "tu-2")))[0] == "deny"
    assert gs.contested == {"tu-1", "tu-2"} and "tu-2" not in gs.refusals


# -- the socket and the hook script -----------------------------------------------------------
@pytest.fixture
def sockdir() -> Iterator[Path]:
    # AF_UNIX paths are limited to 108 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="qdgate-", dir="/tmp"))
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


async def run_hook(
    sock: Path, stdin: bytes, timeout_s: float = 5.0, *, via_settings: bool = False
) -> tuple[int, str, str]:
    """The hook as the CLI runs it: a subprocess, the hook input on stdin."""
    if via_settings:  # the exact command line the --settings fragment gives the CLI, via a shell
        cfg = hook_settings(sys.executable, str(HOOK_PATH), str(sock), timeout_s)
        argv = ["/bin/sh", "-c", cfg["hooks"]["PreToolUse"][0]["hooks"][0]["command"]]
    else:
        argv = [sys.executable, "-I", "-S", str(HOOK_PATH), str(sock), f"{timeout_s:g}"]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"PATH": os.environ["PATH"]},
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def as_stdin(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, indent=2).encode()  # the CLI's JSON need not be one line


async def test_the_hook_relays_the_gates_answers_over_the_socket(gate: PolicyGate, sockdir: Path):
    sock = sockdir / "gate.sock"
    async with server(Guard(gate), sock) as gs:
        assert stat.S_IMODE(sock.stat().st_mode) == 0o666  # the sandbox's uid must connect
        code, out, err = await run_hook(sock, as_stdin(hook_input("Bash", {"command": "ls"})))
        assert code == 0, err
        assert decision(json.loads(out))[0] == "allow"
        deny = hook_input("Bash", {"command": "cat ~/.ssh/id_rsa"}, "tu-key")
        code, out, err = await run_hook(sock, as_stdin(deny), via_settings=True)
        assert code == 0, err
        verdict, reason = decision(json.loads(out))
        assert verdict == "deny" and "sensitive-file.ssh-private-key" in reason
        assert gs.refusals["tu-key"] == reason
    assert not sock.exists()


async def test_connections_are_served_concurrently(gate: PolicyGate, sockdir: Path):
    sock = sockdir / "gate.sock"
    async with server(Guard(gate), sock):
        _, stalled = await asyncio.open_unix_connection(str(sock))  # says nothing
        started = time.monotonic()
        code, out, _ = await run_hook(sock, as_stdin(hook_input("Read", {"file_path": "a"})))
        assert code == 0 and decision(json.loads(out))[0] == "allow"
        assert time.monotonic() - started < 5
        stalled.close()


async def test_a_large_call_is_read_whole(gate: PolicyGate, sockdir: Path):
    sock = sockdir / "gate.sock"
    big = "x" * (3 << 20)  # past asyncio's default 64 KiB line limit
    async with server(Guard(gate), sock) as gs:
        payload = hook_input("Write", {"file_path": f"{WS}/big.txt", "content": big}, "tu-big")
        code, out, err = await run_hook(sock, as_stdin(payload))
        assert code == 0, err
        assert decision(json.loads(out))[0] == "allow" and "tu-big" in gs.decisions


async def test_the_hook_fails_closed_when_the_gate_is_missing(sockdir: Path):
    code, out, err = await run_hook(sockdir / "none.sock", as_stdin(hook_input("Bash", {})))
    assert code == 2 and out == ""
    assert err.startswith(FAIL_CLOSED) and "No such file" in err


def fake_gate(sock: Path, reply: bytes | None) -> threading.Thread:
    """A socket that reads the request and then sends ``reply`` (None: nothing, stay open)."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock))
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, listener:
            while conn.recv(65536):
                pass
            if reply is None:
                time.sleep(1)
                return
            conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def allow_line() -> bytes:
    out = {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "allow"}}
    return json.dumps(out).encode() + b"\n"


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (None, "no answer within 0.5 s"),
        (b"", "without answering"),
        (allow_line()[:-10], "truncated"),
        (allow_line()[:-1], "truncated"),  # no newline: the line may have been cut
        (b"not json\n", "not JSON"),
        (b'{"decision": "approve"}\n', "no hookSpecificOutput"),
        (allow_line().replace(b'"allow"', b'"ask"'), "not one of allow/deny"),
        (allow_line().replace(b"PreToolUse", b"PostToolUse"), "not for PreToolUse"),
    ],
)
async def test_the_hook_fails_closed_on_any_bad_answer(
    sockdir: Path, reply: bytes | None, why: str
):
    sock = sockdir / "gate.sock"
    thread = fake_gate(sock, reply)
    code, out, err = await run_hook(sock, as_stdin(hook_input("Bash", {})), timeout_s=0.5)
    assert code == 2 and out == ""
    assert err.startswith(FAIL_CLOSED) and why in err, err
    thread.join(5)


async def test_the_hook_fails_closed_on_bad_stdin_and_bad_arguments(sockdir: Path):
    sock = sockdir / "gate.sock"
    thread = fake_gate(sock, allow_line())
    code, _, err = await run_hook(sock, b"{oops")
    assert code == 2 and "not JSON" in err
    code, _, err = await run_hook(sock, as_stdin(hook_input("Bash", {})), timeout_s=-1)
    assert code == 2 and "not a positive number" in err
    code, out, err = await run_hook(sock, as_stdin(hook_input("Bash", {})))  # it still works
    assert code == 0 and decision(json.loads(out))[0] == "allow", err
    thread.join(5)


def test_hook_settings_quote_paths_and_outlast_the_hooks_own_deadline() -> None:
    cfg = hook_settings("/opt/py 3/bin/python", "/a b/hook.py", "/run/x y/gate.sock", 12.5)
    [entry] = cfg["hooks"]["PreToolUse"]
    assert entry["matcher"] == "*"
    [hook] = entry["hooks"]
    assert hook["type"] == "command"
    assert shlex.split(hook["command"]) == [
        "/opt/py 3/bin/python",
        "-I",
        "-S",
        "/a b/hook.py",
        "/run/x y/gate.sock",
        "12.5",
    ]
    assert hook["timeout"] == 13 + CLI_TIMEOUT_MARGIN_S  # the CLI lets a timed-out hook's call run
    json.dumps(cfg)  # goes to --settings as JSON
