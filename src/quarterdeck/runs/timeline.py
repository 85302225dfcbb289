"""A run's event timeline as a readable history, for ``quarterdeck run logs``.

The events are the record (``--json`` prints them untouched); a person wants the story: what the
agent said each turn, which tools it called and whether the policy gate let them, what came
back (clipped), how the status moved, and what it all cost, the way Temporal's ``workflow show``
reads. Everything shown from an event passes through :func:`~quarterdeck.kit.console.safe_text`:
prompts, model output and tool output are not ours and must not drive the terminal.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import RenderableType
from rich.padding import Padding
from rich.text import Text

from quarterdeck.kit.console import clip, safe_text

LABEL = 10  # width of the label column ("status", "turn 3", "tool", ...)
STATUS_STYLES = {
    "queued": "dim",
    "running": "cyan",
    "succeeded": "bold green",
    "failed": "bold red",
    "cancelled": "bold yellow",
    "timed_out": "bold red",
    "max_turns": "bold yellow",
    "budget_exceeded": "bold yellow",
}
DECISION_STYLES = {"allow": "green", "deny": "red", "block": "red"}
TERMINAL = {"succeeded", "failed", "cancelled", "timed_out", "max_turns", "budget_exceeded"}


def _plain(value: object) -> str:
    return safe_text(value, markup=False)


def _clock(ts: object) -> str:
    """``HH:MM:SS.mmm`` of an ISO timestamp; anything else as it is."""
    text = str(ts or "")
    if "T" in text:
        text = text.split("T", 1)[1].rstrip("Z")
    return text[:12]


def _tokens(usage: dict[str, Any]) -> int:
    keys = ("input_tokens", "output_tokens", "cache_read_input_tokens")
    total = sum(int(usage.get(k) or 0) for k in keys)
    return total + int(usage.get("cache_creation_input_tokens") or 0)


def _inline(data: object, limit: int = 120) -> str:
    """A tool's input on one line: ``path=src/x.py pattern=foo``, clipped."""
    if isinstance(data, dict):
        parts = []
        for key, value in data.items():
            shown = value if isinstance(value, str) else json.dumps(value, default=str)
            parts.append(f"{key}={shown}")
        text = " ".join(parts)
    else:
        text = json.dumps(data, default=str)
    text = " ".join(text.split())  # one line, whatever the input held
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Timeline:
    """Renders events one at a time (``--follow`` streams them) and keeps the running totals."""

    def __init__(self) -> None:
        self.turns = 0
        self.tokens = 0
        self.cost = 0.0
        self.final: str | None = None

    def render(self, event: dict[str, Any]) -> list[RenderableType]:
        kind = str(event.get("type", ""))
        data = event.get("data") or {}
        handler = getattr(self, f"_{kind}", None)
        body = handler(event, data) if handler else self._other(event, data)
        return [line for line in body if line is not None]

    def summary(self) -> Text | None:
        """The totals, once the run has reached a final status."""
        if self.final is None:
            return None
        line = self._head("", "total", "bold")
        line.append(f"{self.turns} turns · {self.tokens:,} tokens · ${self.cost:.4f}")
        return line

    # -- one method per event type --------------------------------------------------------

    def _head(self, ts: object, label: str, style: str = "") -> Text:
        line = Text(f"{_clock(ts):<12}  ", style="dim")
        line.append(label.ljust(LABEL) if len(label) < LABEL else label + " ", style=style)
        return line

    @staticmethod
    def _indent(text: str, style: str = "") -> Padding:
        """``text`` under the event's line, wrapped within its own column."""
        return Padding(Text(text, style=style), (0, 0, 0, 14 + LABEL), expand=False)

    def _status(self, event: dict[str, Any], data: dict[str, Any]) -> list[RenderableType | None]:
        status = str(data.get("status", "?"))
        line = self._head(event.get("ts"), "status", "bold")
        line.append(_plain(status), style=STATUS_STYLES.get(status, ""))
        details = []
        if data.get("attempt") is not None:
            details.append(f"attempt {data['attempt']}")
        if data.get("resumed"):
            details.append("resumed from its checkpoint")
        if data.get("worker"):
            details.append(f"on {data['worker']}")
        if data.get("error_type"):
            details.append(str(data["error_type"]))
        if details:
            line.append(f"  ({_plain(', '.join(details))})", style="dim")
        error = self._indent(_plain(clip(str(data["error"]))), "red") if data.get("error") else None
        if status in TERMINAL:
            self.final = status
        return [line, error]

    def _turn(self, event: dict[str, Any], data: dict[str, Any]) -> list[RenderableType | None]:
        usage = data.get("usage") or {}
        tokens = _tokens(usage)
        cost = data.get("cost_usd")
        self.turns += 1
        self.tokens += tokens
        self.cost += float(cost or 0)
        line = self._head(event.get("ts"), f"turn {event.get('turn', '?')}", "bold magenta")
        line.append(_plain(data.get("model", "")), style="magenta")
        line.append(f"  {tokens:,} tokens")
        if usage.get("cache_read_input_tokens"):
            line.append(f" ({int(usage['cache_read_input_tokens']):,} cached)", style="dim")
        if cost is not None:
            line.append(f"  ${float(cost):.4f}")
        if data.get("latency_s") is not None:
            line.append(f"  {float(data['latency_s']):.2f}s", style="dim")
        if data.get("stop_reason") not in (None, "tool_use", "end_turn"):  # the unusual ones
            line.append(f"  {_plain(data['stop_reason'])}", style="dim")
        said = None
        if data.get("text"):
            said = self._indent(_plain(clip(str(data["text"]), 600, 8)))
        return [line, said]

    def _tool_call(
        self, event: dict[str, Any], data: dict[str, Any]
    ) -> list[RenderableType | None]:
        policy = data.get("policy") or {}
        action = str(policy.get("action") or "allow")
        line = self._head(event.get("ts"), "  tool", "blue")
        line.append(_plain(data.get("tool", "?")), style="bold blue")
        if data.get("input"):
            line.append(f" {_plain(_inline(data['input']))}")
        line.append(f"  [{_plain(action)}]", style=DECISION_STYLES.get(action, "yellow"))
        approval = policy.get("approval") or {}
        if approval:
            by = f" by {approval['decided_by']}" if approval.get("decided_by") else ""
            line.append(f" {_plain(approval.get('status', ''))}{_plain(by)}", style="yellow")
        if action != "allow" and policy.get("reason"):
            line.append(f" {_plain(policy['reason'])}", style="dim")
        output = data.get("output")
        shown = None
        if output not in (None, ""):
            style = "red" if data.get("is_error") else "dim"
            shown = self._indent("⎿ " + _plain(clip(str(output))), style)
        return [line, shown]

    def _tool_results(
        self, event: dict[str, Any], data: dict[str, Any]
    ) -> list[RenderableType | None]:
        return []  # each tool_call event already carries its output

    def _cancel_requested(
        self, event: dict[str, Any], data: dict[str, Any]
    ) -> list[RenderableType | None]:
        line = self._head(event.get("ts"), "cancel", "bold yellow")
        line.append("requested; the run stops within about 2 s", style="yellow")
        return [line]

    def _discarded_call(
        self, event: dict[str, Any], data: dict[str, Any]
    ) -> list[RenderableType | None]:
        self.cost += float(data.get("cost_usd") or 0)
        line = self._head(event.get("ts"), "discarded", "yellow")
        line.append(
            f"a model call finished after this attempt lost the run (paid, not a turn) "
            f"{_plain(_inline(data))}",
            style="yellow",
        )
        return [line]

    def _result(self, event: dict[str, Any], data: dict[str, Any]) -> list[RenderableType | None]:
        line = self._head(event.get("ts"), "result", "bold")
        changed = data.get("changed_files")
        if isinstance(changed, list):
            line.append(f"{len(changed)} file(s) changed")
            if changed:
                line.append(f": {_plain(_inline(changed, 160))}", style="dim")
        else:
            line.append(_plain(_inline(data)), style="dim")
        return [line]

    # -- a claude-code run: the CLI's own account, and the gateway's metering of it ----------

    def _agent_started(
        self, event: dict[str, Any], data: dict[str, Any]
    ) -> list[RenderableType | None]:
        line = self._head(event.get("ts"), "agent", "bold")
        how = "resumed its session" if data.get("resumed") else "started"
        line.append(f"Claude Code {how} (session {_plain(data.get('session_id', '?'))})")
        return [line]

    def _agent_init(
        self, event: dict[str, Any], data: dict[str, Any]
    ) -> list[RenderableType | None]:
        return []  # the CLI's version and model, for --json readers

    def _agent_result(
        self, event: dict[str, Any], data: dict[str, Any]
    ) -> list[RenderableType | None]:
        line = self._head(event.get("ts"), "agent", "bold")
        outcome = "error" if data.get("is_error") else "done"
        line.append(f"Claude Code {outcome}: {_plain(data.get('terminal_reason') or '?')}")
        denials = data.get("permission_denials") or []
        if denials:
            line.append(f"  ({len(denials)} tool call(s) refused)", style="yellow")
        return [line]

    def _metered(self, event: dict[str, Any], data: dict[str, Any]) -> list[RenderableType | None]:
        keys = ("input_tokens", "output_tokens", "cache_creation_tokens", "cache_read_tokens")
        tokens = sum(int(data.get(k) or 0) for k in keys)
        cost = float(data.get("cost_usd") or 0)
        self.tokens += tokens
        self.cost += cost
        self.turns = max(self.turns, int(data.get("turns") or 0))
        line = self._head(event.get("ts"), "metered", "bold magenta")
        line.append(f"{int(data.get('calls') or 0)} gateway call(s) · {tokens:,} tokens")
        line.append(f" · ${cost:.4f}")
        if data.get("cli_cost_usd") is not None:
            line.append(f"  (the CLI estimated ${float(data['cli_cost_usd']):.4f})", style="dim")
        return [line]

    def _other(self, event: dict[str, Any], data: dict[str, Any]) -> list[RenderableType | None]:
        line = self._head(event.get("ts"), _plain(event.get("type", "?")))
        if data:
            line.append(_plain(_inline(data, 200)), style="dim")
        return [line]
