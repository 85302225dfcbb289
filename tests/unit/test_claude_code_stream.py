"""Claude Code's stream-json read into run events and a run's end, on lines the real CLI 2.1.197
printed (tests/support/claude_code/*.jsonl, captured against the Messages API stand-in), and the
command line a run gets."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from quarterdeck.agents.claude_code import command, stream
from quarterdeck.budgets.models import BudgetExceeded
from quarterdeck.gateway.errors import classify
from quarterdeck.runs.models import RunStatus

CAPTURED = Path(__file__).parents[1] / "support" / "claude_code"


def lines(name: str) -> list[dict[str, Any]]:
    out = []
    for raw in (CAPTURED / f"{name}.jsonl").read_bytes().splitlines():
        parsed = stream.parse(raw)
        assert parsed is not None
        out.append(parsed)
    return out


def result_of(name: str) -> dict[str, Any]:
    return next(m for m in lines(name) if m["type"] == "result")


def test_a_run_that_wrote_and_ran_a_file_reads_as_turns_and_tool_calls() -> None:
    seen = stream.Transcript()
    turns, calls = [], []
    for msg in lines("success"):
        if msg["type"] == "assistant":
            event = seen.assistant(msg)
            if event is not None:
                turns.append(event)
        elif msg["type"] == "user":
            calls += seen.tool_results(msg)
    assert [t[2]["tool_calls"] for t in turns] == [["Write"], ["Bash"], []]
    assert seen.turns == 3 and len(seen.message_ids) == 3
    assert [(c["tool"], c["is_error"]) for c in calls] == [("Write", False), ("Bash", False)]
    assert calls[1]["input"] == {"command": "python3 a.py > out.txt"}
    assert seen.last_text == "done" and not seen.pending
    verdict = stream.judge(result_of("success"), 0, "")
    assert verdict == stream.Verdict(RunStatus.succeeded, result="done")


def test_a_budget_the_gateway_refused_ends_the_run_budget_exceeded() -> None:
    # The message the gateway really sends for a spent run budget, so a change of its wording
    # that would stop the runner from recognising it fails here.
    refused = BudgetExceeded(
        "acme", "total", Decimal("0.01"), Decimal(0), Decimal("0.48"), scope="run", subject="r1"
    )
    status, _, message, headers = classify(refused)
    assert (status, headers.get("x-should-retry")) == (429, "false")
    result = {**result_of("budget"), "result": f"API Error: Request rejected (429) · {message}"}
    verdict = stream.judge(result, 1, "")
    assert verdict.status is RunStatus.budget_exceeded
    assert verdict.error_type == "budget_exceeded"
    # The captured line itself (a tenant-free run message) reads the same way.
    assert stream.judge(result_of("budget"), 1, "").status is RunStatus.budget_exceeded


def test_an_upstream_rate_limit_is_not_a_budget() -> None:
    result = {**result_of("budget"), "result": "API Error: 429 rate_limit_error: slow down"}
    verdict = stream.judge(result, 1, "")
    assert verdict.status is RunStatus.failed


@pytest.mark.parametrize(
    ("name", "status", "error_type"),
    [
        ("maxturns", RunStatus.max_turns, "max_turns"),
        ("apierr", RunStatus.failed, "prompt_too_long"),
    ],
)
def test_ends_are_judged_by_is_error_and_terminal_reason_not_subtype(
    name: str, status: RunStatus, error_type: str
) -> None:
    result = result_of(name)
    if name == "apierr":
        assert result["subtype"] == "success" and result["is_error"] is True
    verdict = stream.judge(result, 1, "")
    assert (verdict.status, verdict.error_type) == (status, error_type)


def test_no_result_at_all_is_a_crash_with_the_cli_s_last_words() -> None:
    verdict = stream.judge(None, 137, "boom\nkilled")
    assert verdict.status is RunStatus.failed and verdict.error_type == "agent_crashed"
    assert "137" in (verdict.error or "") and "killed" in (verdict.error or "")


def test_secrets_in_tool_output_are_redacted_before_they_become_events() -> None:
    seen = stream.Transcript()
    seen.pending["t1"] = ("Bash", {"command": "env"})
    key = "sk-ant-api03-" + "A" * 93 + "AA"
    msg = {
        "type": "user",
        "message": {
            "content": [{"type": "tool_result", "tool_use_id": "t1", "content": f"KEY={key}"}]
        },
    }
    (call,) = seen.tool_results(msg)
    assert key not in call["output"]


def test_the_command_line_ignores_repository_settings_and_never_prompts() -> None:
    doc = command.settings(python="/py", hook_timeout_s=60, deny=("WebFetch",))
    argv = command.argv(
        "/cli",
        prompt="fix it",
        model="claude-sonnet-4-5",
        session=command.session_id("run_1"),
        resume=False,
        limits=command.Limits(7, 0.5),
        settings_json=json.dumps(doc),
        system_prompt="be careful",
        tools=None,
        mcp_config=None,
    )
    joined = " ".join(argv)
    assert argv[-2:] == ["--", "fix it"]  # a prompt is never read as a flag
    assert argv[argv.index("--setting-sources") + 1] == ""
    assert argv[argv.index("--permission-mode") + 1] == "dontAsk"
    assert argv[argv.index("--max-turns") + 1] == "7"
    assert argv[argv.index("--max-budget-usd") + 1] == "0.5"
    assert "--strict-mcp-config" in argv and "--dangerously-skip-permissions" not in joined
    assert argv[argv.index("--session-id") + 1] == command.session_id("run_1")
    hook = doc["hooks"]["PreToolUse"][0]
    assert hook["matcher"] == "*" and hook["hooks"][0]["type"] == "command"
    # Deny rules only: an allow rule would let a call run when the hook cannot start.
    assert doc["permissions"] == {"deny": ["WebFetch"]}
    resumed = command.argv(
        "/cli",
        prompt=command.RESUME_PROMPT,
        model="m",
        session="s",
        resume=True,
        limits=command.Limits(1, None),
        settings_json="{}",
        system_prompt=None,
        tools=("Bash", "Edit"),
        mcp_config=None,
    )
    assert resumed[resumed.index("--resume") + 1] == "s" and "--session-id" not in resumed
    assert resumed[resumed.index("--tools") + 1] == "Bash,Edit"


def test_the_session_is_the_run_s_on_every_replica() -> None:
    assert command.session_id("run_a") == command.session_id("run_a")
    assert command.session_id("run_a") != command.session_id("run_b")


def test_a_transcript_written_under_another_path_is_moved_to_resume_here(tmp_path: Path) -> None:
    state = tmp_path / "state"
    old = state / "claude" / "projects" / command.project_dir_name("/elsewhere/ws") / "s1.jsonl"
    old.parent.mkdir(parents=True)
    old.write_text("{}\n")
    cwd = tmp_path / "ws"
    assert command.place_transcript(state, "s1", cwd)
    moved = state / "claude" / "projects" / command.project_dir_name(cwd) / "s1.jsonl"
    assert moved.read_text() == "{}\n" and not old.exists()
    assert not command.place_transcript(state, "other", cwd)
    assert command.project_dir_name("/tmp/cc/e2/ws") == "-tmp-cc-e2-ws"  # as the CLI names it


def test_the_attempt_s_trace_context_rides_on_every_model_call(tmp_path: Path) -> None:
    """The CLI sends ANTHROPIC_CUSTOM_HEADERS on each call (verified against the real CLI in
    the research notes); the gateway continues a call's traceparent (test_tracing_gateway.py)."""
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    env = command.environment(state=tmp_path, token="t", traceparent=parent)
    assert env["ANTHROPIC_CUSTOM_HEADERS"] == f"traceparent: {parent}"
    assert "ANTHROPIC_CUSTOM_HEADERS" not in command.environment(state=tmp_path, token="t")
