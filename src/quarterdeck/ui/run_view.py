"""A run's events as rows a person reads on the run page: pure, so the story is unit-tested.

The events are the record (``GET /v1/runs/{id}/events`` serves them untouched); the page tells
the story the CLI's ``run logs`` tells (:mod:`quarterdeck.runs.timeline`): what the model said
each turn and what it cost, which tools it called, what the policy gate decided and why, what
came back, how the status moved. Text here is plain: the templates escape it, never this module,
so nothing a prompt, a model or a tool wrote can become markup.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from quarterdeck.runs.models import RunEvent

TIMELINE_CAP = 5000
"""Rows kept for one page: a run with more events shows its last ones, and says so."""
SAID_CHARS, SAID_LINES = 600, 8
OUTPUT_CHARS, OUTPUT_LINES = 400, 6
DECISIONS = {"allow": "allow", "flag": "flag", "deny": "deny", "require_approval": "ask"}
"""The policy gate's action as the page names it (and styles it: ``.s-allow`` ...)."""
HIDDEN = frozenset({"tool_results", "agent_init"})
"""Events whose content another row already shows (each tool call carries its output)."""


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the timeline. ``kind`` picks its look; ``body`` is clipped plain text."""

    id: int
    ts: datetime
    kind: str
    label: str
    summary: str = ""
    badge: str | None = None
    """A run status, shown as the status badge."""
    decision: str | None = None
    """The policy gate's decision on a tool call: allow, flag, deny or ask."""
    facts: tuple[str, ...] = ()
    body: str | None = None
    error: bool = False
    audited: bool = False
    """A tool call: the audit log has its record (the page links there)."""


@dataclass(frozen=True, slots=True)
class TurnLine:
    """One model call's tokens by class and its cost, for the "Turns" table."""

    turn: int | None
    model: str
    input: int
    output: int
    cache_write: int
    cache_read: int
    cost: float | None
    latency_s: float | None


@dataclass(slots=True)
class Timeline:
    """The rows of a run's events (the last :data:`TIMELINE_CAP`) and its turns, built as the
    events are read page by page, so a long run never holds every row at once."""

    cap: int = TIMELINE_CAP
    rows: deque[Row] = field(default_factory=deque)
    turns: list[TurnLine] = field(default_factory=list)
    events: int = 0
    made: int = 0
    last_id: int = 0

    def add(self, events: Iterable[RunEvent]) -> None:
        for event in events:
            self.events += 1
            self.last_id = max(self.last_id, event.id)
            shown = row(event)
            if shown is not None:
                self.made += 1
                self.rows.append(shown)
                if len(self.rows) > self.cap:
                    self.rows.popleft()
            line = turn_line(event)
            if line is not None:
                self.turns.append(line)

    @property
    def dropped(self) -> int:
        """Rows left out: the run had more events than the page shows."""
        return self.made - len(self.rows)


def clip(text: str, chars: int, lines: int) -> str:
    """At most ``lines`` lines and ``chars`` characters of ``text``, saying how much was cut."""
    kept = "\n".join(text.splitlines()[:lines])
    if len(kept) > chars:
        kept = kept[:chars]
    if kept != text.rstrip("\n"):
        kept += f" … ({len(text):,} chars)"
    return kept


def inline(data: object, limit: int = 160) -> str:
    """A tool's input on one line (``path=src/x.py pattern=foo``), clipped."""
    if isinstance(data, Mapping):
        parts = [
            f"{k}={v if isinstance(v, str) else json.dumps(v, default=str)}"
            for k, v in data.items()
        ]
        text = " ".join(parts)
    else:
        text = json.dumps(data, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _int(value: object) -> int:
    """A count from an event (written by us, but read defensively: a bad value reads as 0)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return 0
    try:
        return int(value)
    except ValueError:
        return 0


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _money(value: float | None) -> str | None:
    return None if value is None else f"${value:,.4f}"


def turn_line(event: RunEvent) -> TurnLine | None:
    if event.type != "turn":
        return None
    data = event.data
    usage = data.get("usage") if isinstance(data.get("usage"), Mapping) else {}
    assert isinstance(usage, Mapping)
    return TurnLine(
        turn=event.turn,
        model=str(data.get("model") or ""),
        input=_int(usage.get("input_tokens")),
        output=_int(usage.get("output_tokens")),
        cache_write=_int(usage.get("cache_creation_input_tokens")),
        cache_read=_int(usage.get("cache_read_input_tokens")),
        cost=_float(data.get("cost_usd")),
        latency_s=_float(data.get("latency_s")),
    )


def row(event: RunEvent) -> Row | None:
    """The row for one event, or None for an event another row already tells."""
    if event.type in HIDDEN:
        return None
    make = _MAKERS.get(event.type, _other)
    return make(event, event.data)


def _status(event: RunEvent, data: dict[str, Any]) -> Row:
    facts = []
    if data.get("attempt") is not None:
        facts.append(f"attempt {data['attempt']}")
    if data.get("resumed"):
        facts.append("resumed from its checkpoint")
    if data.get("worker"):
        facts.append(f"on {data['worker']}")
    if data.get("error_type"):
        facts.append(str(data["error_type"]))
    error = data.get("error")
    return Row(
        event.id,
        event.ts,
        "status",
        "status",
        badge=str(data.get("status") or "?"),
        facts=tuple(facts),
        body=clip(str(error), OUTPUT_CHARS, OUTPUT_LINES) if error else None,
        error=bool(error),
    )


def _turn(event: RunEvent, data: dict[str, Any]) -> Row:
    line = turn_line(event)
    assert line is not None
    facts = [
        f"{line.input:,} in",
        f"{line.output:,} out",
    ]
    if line.cache_write:
        facts.append(f"{line.cache_write:,} cache write")
    if line.cache_read:
        facts.append(f"{line.cache_read:,} cache read")
    if (cost := _money(line.cost)) is not None:
        facts.append(cost + (" (estimated)" if data.get("cost_estimated") else ""))
    if line.latency_s is not None:
        facts.append(f"{line.latency_s:.2f} s")
    if data.get("stop_reason") not in (None, "tool_use", "end_turn"):
        facts.append(f"stopped: {data['stop_reason']}")
    if data.get("fallback_from"):
        facts.append(f"fell back from {data['fallback_from']}")
    said = data.get("text")
    return Row(
        event.id,
        event.ts,
        "turn",
        f"turn {event.turn if event.turn is not None else '?'}",
        summary=line.model,
        facts=tuple(facts),
        body=clip(str(said), SAID_CHARS, SAID_LINES) if said else None,
    )


def _tool_call(event: RunEvent, data: dict[str, Any]) -> Row:
    policy = data.get("policy") if isinstance(data.get("policy"), Mapping) else {}
    assert isinstance(policy, Mapping)
    action = str(policy.get("action") or "allow")
    facts = []
    if action != "allow" and policy.get("reason"):
        facts.append(str(policy["reason"]))
    elif policy.get("rule_id") and action != "allow":
        facts.append(f"rule {policy['rule_id']}")
    approval = policy.get("approval")
    if isinstance(approval, Mapping) and approval:
        decided = str(approval.get("status") or "")
        if approval.get("decided_by"):
            decided += f" by {approval['decided_by']}"
        if approval.get("note"):
            decided += f" ({approval['note']})"
        facts.append(decided)
    if data.get("secrets_redacted"):
        facts.append("secrets redacted")
    summary = str(data.get("tool") or "?")
    if data.get("input"):
        summary += " " + inline(data["input"])
    output = data.get("output")
    return Row(
        event.id,
        event.ts,
        "tool",
        "tool",
        summary=summary,
        decision=DECISIONS.get(action, action),
        facts=tuple(facts),
        body=clip(str(output), OUTPUT_CHARS, OUTPUT_LINES) if output not in (None, "") else None,
        error=bool(data.get("is_error")),
        audited=True,
    )


def _cancel_requested(event: RunEvent, data: dict[str, Any]) -> Row:
    return Row(event.id, event.ts, "cancel", "cancel", "requested; the run stops within about 2 s")


def _discarded_call(event: RunEvent, data: dict[str, Any]) -> Row:
    return Row(
        event.id,
        event.ts,
        "discarded",
        "discarded",
        "a model call finished after this attempt lost the run (paid, not a turn)",
        facts=tuple(f for f in [_money(_float(data.get("cost_usd"))), inline(data)] if f),
    )


def _result(event: RunEvent, data: dict[str, Any]) -> Row:
    changed = data.get("changed_files")
    if isinstance(changed, list):
        summary = f"{len(changed)} file(s) changed"
        facts = (inline(changed, 300),) if changed else ()
    else:
        summary, facts = inline(data, 200), ()
    return Row(event.id, event.ts, "result", "result", summary, facts=facts)


def _agent_started(event: RunEvent, data: dict[str, Any]) -> Row:
    how = "resumed its session" if data.get("resumed") else "started"
    session = data.get("session_id", "?")
    return Row(event.id, event.ts, "agent", "agent", f"Claude Code {how} (session {session})")


def _agent_result(event: RunEvent, data: dict[str, Any]) -> Row:
    outcome = "error" if data.get("is_error") else "done"
    denials = data.get("permission_denials") or []
    facts = (f"{len(denials)} tool call(s) refused",) if denials else ()
    reason = data.get("terminal_reason") or "?"
    return Row(
        event.id,
        event.ts,
        "agent",
        "agent",
        f"Claude Code {outcome}: {reason}",
        facts=facts,
        error=bool(data.get("is_error")),
    )


def _metered(event: RunEvent, data: dict[str, Any]) -> Row:
    keys = ("input_tokens", "output_tokens", "cache_creation_tokens", "cache_read_tokens")
    tokens = sum(_int(data.get(k)) for k in keys)
    facts = [
        f"{_int(data.get('input_tokens')):,} in",
        f"{_int(data.get('output_tokens')):,} out",
        f"{_int(data.get('cache_creation_tokens')):,} cache write",
        f"{_int(data.get('cache_read_tokens')):,} cache read",
        _money(_float(data.get("cost_usd"))) or "$0.0000",
    ]
    if data.get("cli_cost_usd") is not None:
        facts.append(f"the CLI estimated {_money(_float(data['cli_cost_usd']))}")
    summary = f"{_int(data.get('calls'))} gateway call(s) · {tokens:,} tokens"
    return Row(event.id, event.ts, "metered", "metered", summary, facts=tuple(facts))


def _approval_requested(event: RunEvent, data: dict[str, Any]) -> Row:
    reason = str(data.get("reason") or "")
    rule = data.get("rule_id")
    facts = (f"rule {rule}",) if rule else ()
    summary = f"{data.get('tool') or '?'} held for a person's decision"
    text = summary + (f": {reason}" if reason else "")
    return Row(event.id, event.ts, "tool", "held", text, decision="ask", facts=facts)


def _other(event: RunEvent, data: dict[str, Any]) -> Row:
    return Row(event.id, event.ts, "other", event.type, inline(data, 200) if data else "")


_MAKERS = {
    "status": _status,
    "turn": _turn,
    "tool_call": _tool_call,
    "cancel_requested": _cancel_requested,
    "discarded_call": _discarded_call,
    "result": _result,
    "agent_started": _agent_started,
    "agent_result": _agent_result,
    "metered": _metered,
    "approval_requested": _approval_requested,
}
