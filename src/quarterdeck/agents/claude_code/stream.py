"""Claude Code's stream-json, read: run events from its messages, and the run's end from its
result. Pure functions, unit-tested on lines the real CLI 2.1.197 printed.

The end is judged by ``is_error``, ``terminal_reason``, ``api_error_status`` and
``permission_denials``, never by ``subtype``: an API failure reports ``subtype: "success"`` with
``is_error: true``. A budget the gateway refused comes back as a 429 whose message is the
gateway's own (``classify`` in gateway/errors.py puts ``quarterdeck: <scope> '<id>' ... budget
exceeded`` there), which is how a spent budget is told from an upstream rate limit.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from quarterdeck.runs.executor import BUDGET_ERRORS
from quarterdeck.runs.models import RunStatus
from quarterdeck.security.policy import redact

TEXT_CHARS = 4_000
"""Assistant text and tool output kept per event (the rest is in the workspace or transcript)."""
_BUDGET = re.compile(r"quarterdeck: (run|tenant|key) '[^']*' (?:\w+ )?budget exceeded")


def parse(line: bytes | str) -> dict[str, Any] | None:
    """One stream-json message; None for a blank or non-JSON line (the CLI prints only JSON
    on stdout in this mode, but a line cut by a kill must not end the run's bookkeeping)."""
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def clip(text: str, limit: int = TEXT_CHARS) -> str:
    cleaned = redact(text).text
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + f"… [{len(cleaned)} chars]"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(b.get("text", ""))
            for b in content
            if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


@dataclass
class Transcript:
    """What the stream said so far: turns, pending tool calls, the final result."""

    turns: int = 0
    message_ids: set[str] = field(default_factory=set)
    pending: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    session: str | None = None
    last_text: str = ""

    def assistant(self, msg: dict[str, Any]) -> tuple[str, int | None, dict[str, Any]] | None:
        """A ``turn`` event for a model reply (one per API message: the CLI prints a message
        once per content block, with the same id)."""
        message = msg.get("message") or {}
        content = message.get("content") or []
        main = msg.get("parent_tool_use_id") is None
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_use":
                given = block.get("input")
                self.pending[str(block.get("id"))] = (
                    str(block.get("name")),
                    given if isinstance(given, dict) else {},
                )
        mid = str(message.get("id") or "")
        text = _text_of(content)
        if main and text:
            self.last_text = text
        if mid in self.message_ids:
            if not text and not any(b.get("type") == "tool_use" for b in content):
                return None
        elif main:
            self.turns += 1
        self.message_ids.add(mid)
        data: dict[str, Any] = {
            "agent": "claude-code",
            "model": message.get("model"),
            "message_id": mid,
            "tool_calls": [b.get("name") for b in content if b.get("type") == "tool_use"],
        }
        if text:
            data["text"] = clip(text)
        if not main:
            data["subagent_of"] = msg.get("parent_tool_use_id")
        return "turn", self.turns, data

    def tool_results(self, msg: dict[str, Any]) -> list[dict[str, Any]]:
        """The ``tool_call`` event data for each tool result in a user message."""
        message = msg.get("message") or {}
        content = message.get("content")
        if not isinstance(content, list):
            return []
        out = []
        for block in content:
            if not isinstance(block, dict) or block.get("type") != "tool_result":
                continue
            use_id = str(block.get("tool_use_id"))
            name, tool_input = self.pending.pop(use_id, ("?", {}))
            output = block.get("content")
            out.append(
                {
                    "tool": name,
                    "input": tool_input,
                    "output": clip(_text_of(output) if not isinstance(output, str) else output),
                    "is_error": bool(block.get("is_error")),
                    "tool_use_id": use_id,
                    "agent": "claude-code",
                }
            )
        return out


def result_event(result: dict[str, Any]) -> dict[str, Any]:
    """The CLI's own account of the run, stored beside the gateway's metering."""
    keep = (
        "subtype",
        "is_error",
        "api_error_status",
        "terminal_reason",
        "stop_reason",
        "num_turns",
        "duration_ms",
        "duration_api_ms",
        "total_cost_usd",
        "session_id",
    )
    data = {k: result.get(k) for k in keep if k in result}
    denials = result.get("permission_denials") or []
    data["permission_denials"] = [
        {"tool": d.get("tool_name"), "tool_use_id": d.get("tool_use_id")}
        for d in denials
        if isinstance(d, dict)
    ]
    if isinstance(result.get("result"), str):
        data["result"] = clip(result["result"])
    return data


@dataclass(frozen=True)
class Verdict:
    status: RunStatus
    result: str | None = None
    error: str | None = None
    error_type: str | None = None


def judge(result: dict[str, Any] | None, returncode: int | None, stderr: str) -> Verdict:
    """How the run ended, from the CLI's result message (None: it printed none)."""
    if result is None:
        tail = " ".join(stderr.split())[-500:]
        return Verdict(
            RunStatus.failed,
            error=f"claude exited with code {returncode} without a result"
            + (f": {tail}" if tail else ""),
            error_type="agent_crashed",
        )
    text = result.get("result") if isinstance(result.get("result"), str) else None
    reason = str(result.get("terminal_reason") or "")
    subtype = str(result.get("subtype") or "")
    if reason == "max_turns" or subtype == "error_max_turns":
        return Verdict(
            RunStatus.max_turns,
            result=text,
            error=f"Claude Code stopped at its turn limit ({result.get('num_turns')} turns)",
            error_type="max_turns",
        )
    if not result.get("is_error"):
        return Verdict(RunStatus.succeeded, result=text)
    message = text or subtype or "unknown error"
    budget = _BUDGET.search(message)
    if result.get("api_error_status") == 429 and budget:
        return Verdict(
            RunStatus.budget_exceeded,
            error=f"the gateway refused a model call: {message}",
            error_type=BUDGET_ERRORS[budget.group(1)],
        )
    if reason == "budget_exhausted" or subtype == "error_max_budget_usd":
        return Verdict(
            RunStatus.budget_exceeded,
            result=text,
            error="Claude Code reached its own --max-budget-usd estimate",
            error_type="budget_exceeded",
        )
    status = result.get("api_error_status")
    return Verdict(
        RunStatus.failed,
        error=f"Claude Code failed ({reason or subtype}"
        + (f", API status {status}" if status else "")
        + f"): {message}",
        error_type=reason or "agent_error",
    )
