"""The policy gate in front of every tool call, and secret redaction behind it.

Every tool call the model makes passes :class:`~quarterdeck.security.policy.PolicyGate` *before*
it runs (the guide's audit system only noticed afterwards):

- ``allow`` runs it; ``flag`` runs it and records an anomaly;
- ``deny`` does not run it: the model gets a tool error naming the rule and the reason, so it can
  choose another way; an anomaly is recorded;
- ``require_approval`` holds the run until an operator approves (then it runs) or rejects it or
  the request expires (then the model gets a tool error).

A call that will run is first recorded as ``tool.intent``, awaited (durable in Postgres before
the tool starts), and its outcome as ``tool.call`` after (batched, within ~100 ms): a crash in
between leaves the intent, so no call that happened can be missing from the audit log. If the
intent cannot be written the call does not run (the model gets a tool error saying why).

Whatever a tool returns is passed through secret redaction before the model sees it or it is
stored, so a key that a test prints never reaches a checkpoint, an event or the provider.

The decision half is :func:`admit`, so that a run executed by Claude Code (whose tools run in
the CLI, asked through its PreToolUse hook: ``agents/claude_code/gate.py``) is refused, held
and audited by exactly the same code as a native run.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from opentelemetry.trace import Span, get_current_span

from quarterdeck import metrics
from quarterdeck.approvals.models import Approval
from quarterdeck.approvals.service import ApprovalService
from quarterdeck.incidents.anomalies import AnomalySink
from quarterdeck.providers.types import ToolResultBlock, ToolSpec, ToolUseBlock
from quarterdeck.runs.executor import ToolRunner
from quarterdeck.runs.models import Run
from quarterdeck.runs.store_protocol import RunStore
from quarterdeck.security.policy import PolicyGate, redact
from quarterdeck.security.policy.decision import Decision
from quarterdeck.security.redaction import redact_arguments
from quarterdeck.security.trail import AuditTrail

log = structlog.get_logger(__name__)

APPROVAL_MISMATCH = "gate.approval-mismatch"
"""The rule of a refusal whose approval, found under the call's id, is for another call."""


OnHold = Callable[[Run, Approval], Awaitable[None]]


@dataclass(frozen=True)
class Guard:
    """What stands in front of tool calls: the gate, and where its decisions go."""

    gate: PolicyGate
    approvals: ApprovalService | None = None
    anomalies: AnomalySink | None = None
    trail: AuditTrail | None = None
    on_hold: OnHold | None = None
    """Told when a call is held for a person (``hold_recorder``: a run event, so the run's
    watchers, such as its dashboard page, see the held call without a reload)."""


def hold_recorder(store: RunStore) -> OnHold:
    """``Guard.on_hold`` writing an ``approval_requested`` event through the run store, fenced
    by the attempt that holds the run (``run.attempts``)."""

    async def record(run: Run, approval: Approval) -> None:
        data = {
            "approval_id": approval.id,
            "tool": approval.tool,
            "rule_id": approval.rule_id,
            "reason": approval.reason,
        }
        await store.append_events(run.id, [("approval_requested", None, data)], epoch=run.attempts)

    return record


@dataclass(frozen=True)
class Admission:
    """The guard's verdict on one tool call, before it runs.

    ``allowed``: run it (the ``tool.intent`` is already durable when a trail is configured);
    otherwise ``message`` is the tool error the model gets. ``policy`` is the record every audit
    event of the call carries (the gate's decision, plus ``approval`` when an operator decided);
    ``arguments`` the input with secrets redacted and ``secrets`` the kinds found in it.
    """

    allowed: bool
    policy: dict[str, Any]
    arguments: dict[str, Any]
    message: str = ""
    secrets: tuple[str, ...] = ()


async def admit(
    guard: Guard,
    run: Run,
    *,
    tool: str,
    tool_input: dict[str, Any],
    tool_use_id: str,
    workspace: Path | None,
    judged_as: tuple[str, dict[str, Any]] | None = None,
) -> Admission:
    """Decide whether one tool call may run: gate, metrics, anomaly, an operator's approval
    when a rule asks for one, and the durable ``tool.intent`` record before it may run.

    Shared by the native loop (:class:`GuardedTools`) and Claude Code's PreToolUse hook
    (``agents/claude_code/gate.py``), so both runners refuse and audit the same way.
    ``judged_as`` is the (tool, input) the gate judges when it differs from what is recorded
    (a Claude Code call translated into the gate's vocabulary); the audit, anomaly and approval
    records keep the caller's own ``tool`` and ``tool_input``.
    """
    gate_tool, gate_input = judged_as if judged_as is not None else (tool, tool_input)
    decision = guard.gate.check(gate_tool, gate_input, workspace=workspace)
    record = decision.to_dict()
    arguments, in_input = redact_arguments(tool_input)
    span = get_current_span()  # the call's ``execute_tool`` span, when there is one
    traced_decision(span, decision.action, decision.rule_id, decision.reason)

    def refuse(message: str) -> Admission:
        return Admission(False, record, arguments, message, tuple(in_input))

    metrics.POLICY_DECISIONS.labels(
        decision.action, metrics.bounded(decision.rule_id or "none")
    ).inc()
    if decision.action in ("flag", "deny") and guard.anomalies is not None:
        await guard.anomalies.record(
            run_id=run.id,
            tenant=run.tenant,
            agent_type=run.agent_type,
            tool=tool,
            decision=record,
        )
    if decision.action == "deny":
        return refuse(f"blocked by policy rule {decision.rule_id}: {decision.reason}")
    if decision.action == "require_approval":
        if guard.approvals is None:
            return refuse(
                f"policy rule {decision.rule_id} requires an "
                "operator's approval, and none can be asked here"
            )
        approval = await guard.approvals.request(
            run_id=run.id,
            tenant=run.tenant,
            tool_use_id=tool_use_id,
            tool=tool,
            tool_input=tool_input,
            rule_id=decision.rule_id or "",
            severity=decision.severity,
            reason=decision.reason,
        )
        if not _asks_for(approval, tool, tool_input):
            # The run's approval under this id was opened for another call: a forged request
            # to Claude Code's gate, or an earlier attempt's. Refused before any intent.
            why = "the operator's approval under this call's id was given for another call"
            record = Decision(
                "deny", rule_id=APPROVAL_MISMATCH, severity="high", reason=why
            ).to_dict()
            record["approval"] = {"id": approval.id, "status": approval.status}
            traced_decision(span, "deny", APPROVAL_MISMATCH, why)
            return refuse(
                "not run: the approval found for this call was given for a different call"
            )
        if guard.on_hold is not None:
            try:
                await guard.on_hold(run, approval)
            except Exception as exc:  # a hint for watchers; the approval row is the record
                log.warning("approval_event_failed", run_id=run.id, error=str(exc))
        ended = await guard.approvals.wait(approval)
        record["approval"] = {
            "id": ended.id,
            "status": ended.status,
            "decided_by": ended.decided_by,
            "note": ended.note,
        }
        traced_decision(span, ended.status)  # approved, rejected or expired
        if ended.status != "approved":
            why = f"{ended.status} by {ended.decided_by}" if ended.decided_by else ended.status
            note = f" ({ended.note})" if ended.note else ""
            return refuse(
                f"an operator's approval was required by policy rule "
                f"{decision.rule_id} and the call was {why}{note}"
            )
    if guard.trail is not None:
        try:  # durable before the call has any effect; no record, no call
            await guard.trail.tool_intent(
                run, tool=tool, tool_use_id=tool_use_id, arguments=arguments, policy=record
            )
        except Exception as exc:
            log.error("tool.intent_not_recorded", run_id=run.id, tool=tool, error=str(exc))
            traced_decision(span, "not_recorded", reason="the audit log could not record it")
            return refuse(
                "not run: the audit log could not record the call before it ran "
                f"({str(exc) or type(exc).__name__}); try again later"
            )
    return Admission(True, record, arguments, secrets=tuple(in_input))


def _asks_for(approval: Approval, tool: str, tool_input: dict[str, Any]) -> bool:
    """Whether ``approval`` was opened for exactly this call (tool and input; key order aside:
    an approval's input comes back from Postgres ``jsonb``, whose key order is its own)."""
    return approval.tool == tool and _canonical(approval.input) == _canonical(tool_input)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def traced_decision(
    span: Span, decision: str, rule_id: str | None = None, reason: str | None = None
) -> None:
    """The guard's verdict on the tool call's span: ``quarterdeck.policy.decision`` is the
    gate's action (allow, flag, deny, require_approval), then what became of it (approved,
    rejected, expired; ``not_recorded``: its audit intent failed, so it did not run)."""
    if not span.is_recording():
        return
    span.set_attribute("quarterdeck.policy.decision", decision)
    if rule_id:
        span.set_attribute("quarterdeck.policy.rule", rule_id)
    if reason:
        span.set_attribute("quarterdeck.policy.reason", reason[:500])


class GuardedTools:
    def __init__(self, inner: ToolRunner, guard: Guard, *, workspace: Path | None) -> None:
        self.inner = inner
        self.guard = guard
        self.workspace = workspace

    def specs(self) -> list[ToolSpec]:
        return self.inner.specs()

    async def run(self, run: Run, call: ToolUseBlock) -> tuple[ToolResultBlock, dict[str, Any]]:
        result, event = await self._run(run, call)
        if self.guard.trail is not None:  # every tool call, run or refused, with its decision
            self.guard.trail.tool_call(run, {**event, "tool_use_id": call.id})
        return result, event

    async def _run(self, run: Run, call: ToolUseBlock) -> tuple[ToolResultBlock, dict[str, Any]]:
        admission = await admit(
            self.guard,
            run,
            tool=call.name,
            tool_input=call.input,
            tool_use_id=call.id,
            workspace=self.workspace,
        )
        if not admission.allowed:
            return refused(call, admission.message, policy=admission.policy)
        result, event = await self.inner.run(run, call)
        cleaned = redact(result.content)
        if cleaned.findings or admission.secrets:
            result = dataclasses.replace(result, content=cleaned.text)
            event["output"] = redact(str(event.get("output", ""))).text
            event["input"] = admission.arguments
            event["secrets_redacted"] = sorted(
                {f.type for f in cleaned.findings} | set(admission.secrets)
            )
        event["policy"] = admission.policy
        return result, event


def refused(
    call: ToolUseBlock, message: str, **extra: Any
) -> tuple[ToolResultBlock, dict[str, Any]]:
    """A tool call that did not run: the error the model sees, and the event recorded for it."""
    return ToolResultBlock(call.id, message, is_error=True), {
        "tool": call.name,
        "input": call.input,
        "output": message,
        "is_error": True,
        "permissions": [],
        "files_changed": [],
        "network": [],
        **extra,
    }
