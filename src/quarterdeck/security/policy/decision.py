"""What the gate answers: one :class:`Decision` per tool call, built from every matching rule.

Several rules often match one call (``sudo cat ~/.ssh/id_rsa`` is both elevated and a key read),
and the operator wants to see all of them in the audit record, while the runtime needs exactly
one action. So every match is kept in ``matches`` and the *most severe decision* wins
(``deny`` > ``require_approval`` > ``flag`` > ``allow``); among matches with the same decision
the highest severity wins, then the rule that comes first in the rule set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Action = Literal["allow", "deny", "flag", "require_approval"]
Severity = Literal["info", "low", "medium", "high", "critical"]

ACTIONS: tuple[Action, ...] = ("allow", "flag", "require_approval", "deny")
SEVERITIES: tuple[Severity, ...] = ("info", "low", "medium", "high", "critical")
ACTION_RANK: dict[str, int] = {name: rank for rank, name in enumerate(ACTIONS)}
SEVERITY_RANK: dict[str, int] = {name: rank for rank, name in enumerate(SEVERITIES)}

_VERB = {
    "deny": "Blocked",
    "require_approval": "Paused for operator approval",
    "flag": "Allowed but flagged for audit",
    "allow": "Allowed",
}


@dataclass(frozen=True, slots=True)
class RuleMatch:
    """One rule that matched, with the piece of the call that made it match (``evidence``)."""

    rule_id: str
    action: Action
    severity: Severity
    description: str
    tags: tuple[str, ...]
    evidence: str
    order: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "action": self.action,
            "severity": self.severity,
            "description": self.description,
            "tags": list(self.tags),
            "evidence": self.evidence,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """The gate's answer. ``allowed`` is what the runtime acts on: ``allow`` and ``flag`` run
    the tool; ``deny`` returns ``reason`` to the model as a tool error; ``require_approval``
    pauses the run until an operator decides."""

    action: Action
    rule_id: str | None = None
    description: str = ""
    severity: Severity = "info"
    tags: tuple[str, ...] = ()
    reason: str = "No policy rule matched."
    matches: list[RuleMatch] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return self.action in ("allow", "flag")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the audit record and ``policy eval --json``."""
        return {
            "action": self.action,
            "rule_id": self.rule_id,
            "description": self.description,
            "severity": self.severity,
            "tags": list(self.tags),
            "reason": self.reason,
            "matches": [m.to_dict() for m in self.matches],
        }


def _strength(match: RuleMatch) -> tuple[int, int, int]:
    return (ACTION_RANK[match.action], SEVERITY_RANK[match.severity], -match.order)


def combine(matches: list[RuleMatch]) -> Decision:
    """Fold every matching rule into one decision (see the module docstring for the order)."""
    if not matches:
        return Decision("allow")
    ordered = sorted(matches, key=_strength, reverse=True)
    top = ordered[0]
    reason = f"{_VERB[top.action]} by policy rule {top.rule_id}: {top.description}"
    if top.evidence:
        reason += f" (matched: {top.evidence})"
    if len(ordered) > 1:
        reason += f"; {len(ordered) - 1} other rule(s) also matched"
    # positional, in field order (action, rule_id, description, severity, tags, reason,
    # matches): this runs for every call that matched a rule
    return Decision(
        top.action, top.rule_id, top.description, top.severity, top.tags, reason, ordered
    )


def internal_error(exc: BaseException) -> Decision:
    """Fail closed: a bug in normalisation must never let a call through unchecked."""
    text = f"policy gate error ({type(exc).__name__}); the call was refused to be safe"
    match = RuleMatch("gate.internal-error", "deny", "high", text, (), str(exc)[:200])
    return Decision("deny", match.rule_id, text, "high", (), f"Blocked: {text}.", [match])
