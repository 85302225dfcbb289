"""The worker's side of Claude Code's PreToolUse hook: Quarterdeck's policy gate on a socket.

One :class:`GateServer` per claude-code run listens on a Unix socket that the run's sandbox
gets bound in; the hook (:mod:`.hook`, run by the CLI before every tool call) sends the call
there and prints the answer. The decision is made by the same code the native loop uses,
:func:`quarterdeck.agents.guard.admit` (policy gate, metrics, anomaly, an operator's approval
when a rule asks for one, the durable ``tool.intent`` before the call may run), on the call
translated into the gate's vocabulary (:mod:`.tools_map`). So both runners refuse the same
calls for the same reasons, and leave the same audit records.

Audit split: a call refused here (deny; an approval rejected or expired; the intent not
recorded; a malformed request) is audited here as its ``tool.call`` at once, because the CLI
never runs it. An admitted call's outcome is audited by the runner when the tool result
arrives in the stream, with the policy record kept in :attr:`GateServer.decisions`.

Anything that goes wrong here answers *deny*: the hook would fail closed anyway, but an
answer carries the reason to Claude and to the audit log.

Protocol: one line of JSON in (the hook input, then the hook half-closes), one line of JSON out
(the hook output), close. Connections are served concurrently: a call held for an operator's
approval does not hold up a subagent's calls.

Who may ask: the socket is bound writable into the sandbox, so not only the hook but any process
there (the agent's own Bash commands, same uid) can connect. The hook cannot be told apart: all
it is given (its command line in ``--settings``, its environment, any file it can read) every
process of that uid in the sandbox can read too (``/proc/<pid>/cmdline``). So instead every
request is treated as possibly forged, and the gate holds these properties:

- *An answer is only an answer.* ``allow`` to a forged request runs nothing: a tool runs only
  when the CLI's own hook got ``allow`` for that call. A forger learns what the policy says of
  a call, which it could learn by making the call.
- *Records are what a real call would leave.* A forged request for a fresh ``tool_use_id`` goes
  through the same ``admit`` as a real call (intent, anomaly, approval request, refusal row),
  attributed to this run -- exactly what the agent could cause by having the CLI make that call.
  :attr:`GateServer.asked` keeps every id; the runner records the ids that never produced a
  tool result in the stream as ``gate_unanswered`` (forged, or cut off by the attempt's end).
- *One decision per call.* A second request for a ``tool_use_id`` already asked in this attempt
  is denied without touching any state (no audit row, no approval, no change to
  :attr:`decisions` or :attr:`refusals`) and the id is marked :attr:`contested`. Otherwise a
  command could, while it runs, send a refused request under its own id (it is in the transcript,
  which the agent can read) and so keep its real ``tool.call`` out of the audit trail (the
  runner does not audit refused calls twice), or relabel its policy record. A contested call's
  outcome is always audited by the runner, flagged ``gate_contested``. If a forger asks first,
  the real call is the duplicate and does not run: racing the hook only ever stops a call.
- *An approval is for the call it shows.* Approvals are keyed by ``(run, tool_use_id)`` (so a
  resumed call waits on its first request), so an approval opened by a forged request with a
  harmless-looking input would otherwise be the one a real call under that id waits on: the
  operator approves what they see, and something else runs. A call runs on an approval only when
  the approval's tool and input are exactly the call's: ``admit`` checks it as soon as it finds
  the approval, before waiting on it or recording any intent (rule ``gate.approval-mismatch``).
- Nothing here touches the budget: model spend is metered and reserved by the gateway, on the
  attempt's own token, whatever the gate is asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry.trace import Span, get_current_span

from quarterdeck.agents.claude_code import hook
from quarterdeck.agents.claude_code.tools_map import to_gate
from quarterdeck.agents.guard import Admission, Guard, admit, traced_decision
from quarterdeck.kit.unix_server import UnixServer
from quarterdeck.runs.executor import clip
from quarterdeck.runs.models import Run
from quarterdeck.security.policy.decision import Action, Decision, Severity
from quarterdeck.security.redaction import redact_arguments
from quarterdeck.tracing import execute_tool_span, record_content, record_error

log = structlog.get_logger(__name__)

HOOK_PATH = Path(hook.__file__)
"""The hook script the CLI runs (``<python> -I -S HOOK_PATH <socket> <timeout_s>``)."""
hook_settings = hook.hook_settings
MAX_REQUEST_BYTES = 64 << 20
"""A hook input carries the whole tool input (a Write of a large file): generous, but bounded."""
READ_TIMEOUT_S = 30.0
"""The hook writes its request at once; a connection silent this long is not the hook."""


def answer(decision: str, reason: str) -> dict[str, Any]:
    """The hook output Claude Code reads: ``allow`` or ``deny`` with the reason Claude sees."""
    return {
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": decision,
            "permissionDecisionReason": reason,
        }
    }


def _record(reason: str, action: Action = "allow", rule_id: str | None = None) -> dict[str, Any]:
    """A policy record in the gate's own shape, for decisions not made by its rules; put on
    the call's ``execute_tool`` span like the rules' own (``admit`` does that for them)."""
    severity: Severity = "info" if action == "allow" else "high"
    traced_decision(get_current_span(), action, rule_id, reason)
    return Decision(action, rule_id=rule_id, severity=severity, reason=reason).to_dict()


class GateServer(UnixServer):
    """The policy gate for ONE claude-code run, served on ``socket_path``.

    ``guard`` None: no gate is configured, every call is allowed (as the native loop does).
    ``answer_timeout_s``: refuse (and audit) a call not decided by then, e.g. an approval
    nobody acts on; set it below the hook's timeout so the refusal is ours, with its reason.

    :attr:`decisions` holds the policy record of every call decided, by ``tool_use_id`` (the
    first request for an id decides; see the module doc): the runner audits an admitted call's
    outcome with it. :attr:`refusals` holds, for every call
    refused here, the message Claude got: those calls are audited already, and never ran (test
    membership there, not the record's ``action``: a rejected approval is ``require_approval``,
    a call whose intent could not be recorded ``allow``).
    """

    def __init__(
        self,
        guard: Guard | None,
        run: Run,
        workspace: Path,
        socket_path: Path,
        *,
        answer_timeout_s: float | None = None,
    ) -> None:
        # The sandboxed uid must connect (0666); the runner keeps the socket in a private dir.
        super().__init__(socket_path, limit=MAX_REQUEST_BYTES, mode=0o666)
        self.guard = guard
        self.run = run
        self.workspace = workspace
        self.answer_timeout_s = answer_timeout_s
        self.decisions: dict[str, dict[str, Any]] = {}
        self.refusals: dict[str, str] = {}
        self.asked: set[str] = set()
        """Every ``tool_use_id`` asked about in this attempt (the first request decides)."""
        self.contested: set[str] = set()
        """Ids asked about more than once: the CLI asks once per call, so one was not its hook."""
        self.trace_context = otel_context.get_current()
        """Made by the runner inside the attempt's span: each tool call's span is its child."""

    # -- one connection ----------------------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT_S)
            except (TimeoutError, ValueError, ConnectionError) as exc:  # ValueError: too long
                reply = await self.decide_raw(None, f"the request was not read ({exc!r})")
            else:
                reply = await self.decide_raw(line)
            writer.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, OSError) as exc:  # the hook is gone; it failed closed
            log.warning("claude_code.gate_reply_lost", run_id=self.run.id, error=str(exc))
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def decide_raw(self, line: bytes | None, why: str = "") -> dict[str, Any]:
        """The answer to one request line (None: unreadable, ``why`` says how)."""
        payload: Any = None
        if line is not None:
            try:
                payload = json.loads(line)
            except ValueError as exc:
                why = f"the request is not JSON ({exc})"
        if isinstance(payload, dict):
            return await self.decide(payload)
        return await self._malformed({}, why or "the request is not a JSON object")

    async def decide(self, hook_input: dict[str, Any]) -> dict[str, Any]:
        """The hook output for one PreToolUse hook input; never raises (a failure denies).

        Traced as the call's ``execute_tool`` span under the attempt's ``invoke_agent`` span
        (the connection's task does not inherit it: the context is the one kept when the
        server was made). The span covers the gate's decision, approval wait included; the
        tool itself then runs inside the CLI, which Quarterdeck does not trace."""
        tool, call_id = hook_input.get("tool_name"), hook_input.get("tool_use_id")
        token = otel_context.attach(self.trace_context)
        try:
            with execute_tool_span(
                tool if isinstance(tool, str) and tool else "unknown",
                call_id=call_id if isinstance(call_id, str) else "",
            ) as span:
                reply = await self._decide(hook_input)
                if span.is_recording():
                    self._traced(span, hook_input, reply)
                return reply
        finally:
            otel_context.detach(token)

    @staticmethod
    def _traced(span: Span, hook_input: dict[str, Any], reply: dict[str, Any]) -> None:
        """A refusal as the span's error; the arguments (secrets redacted, clipped) only when
        content recording is on."""
        out = reply["hookSpecificOutput"]
        if out["permissionDecision"] != "allow":
            record_error(span, "tool_refused", str(out["permissionDecisionReason"]))
        tool_input = hook_input.get("tool_input")
        if record_content() and isinstance(tool_input, dict):
            arguments, _ = redact_arguments(tool_input)
            text = json.dumps(arguments, separators=(",", ":"), default=str)
            span.set_attribute("gen_ai.tool.call.arguments", clip(text))

    async def _decide(self, hook_input: dict[str, Any]) -> dict[str, Any]:
        tool, tool_input = hook_input.get("tool_name"), hook_input.get("tool_input")
        tool_use_id = hook_input.get("tool_use_id")
        if not isinstance(tool, str) or not tool:
            return await self._malformed(hook_input, "tool_name is missing")
        if not isinstance(tool_input, dict):
            return await self._malformed(hook_input, "tool_input is not an object")
        if not isinstance(tool_use_id, str) or not tool_use_id:
            return await self._malformed(hook_input, "tool_use_id is missing")
        if tool_use_id in self.asked:  # not the CLI's hook, or a forger that asked first
            self.contested.add(tool_use_id)
            log.warning(
                "claude_code.gate_duplicate_request",
                run_id=self.run.id,
                tool=tool,
                tool_use_id=tool_use_id,
            )
            return answer("deny", f"not run: the policy gate was already asked about {tool_use_id}")
        self.asked.add(tool_use_id)
        cwd = hook_input.get("cwd")
        cwd = cwd if isinstance(cwd, str) and cwd.startswith("/") else str(self.workspace)
        judged = to_gate(tool, tool_input, cwd=cwd)
        if self.guard is None:
            return self._admitted(tool_use_id, _record("No policy gate is configured."))
        if judged.session_only:
            return self._admitted(
                tool_use_id,
                _record(f"{tool} only changes Claude Code's own session; its effects are gated."),
            )
        try:
            admission = await asyncio.wait_for(
                admit(
                    self.guard,
                    self.run,
                    tool=tool,
                    tool_input=tool_input,
                    tool_use_id=tool_use_id,
                    workspace=self.workspace,
                    judged_as=(judged.tool, judged.input),
                ),
                self.answer_timeout_s,
            )
        except TimeoutError:
            return self._refused(
                tool,
                tool_input,
                tool_use_id,
                _record("undecided", "deny", "gate.timeout"),
                f"not run: the policy gate had no decision within {self.answer_timeout_s:g} s",
            )
        except Exception as exc:  # fail closed, with the reason
            log.exception("claude_code.gate_failed", run_id=self.run.id, tool=tool)
            return self._refused(
                tool,
                tool_input,
                tool_use_id,
                _record(str(exc), "deny", "gate.internal-error"),
                f"not run: the policy gate failed ({str(exc) or type(exc).__name__})",
            )
        if admission.allowed:
            return self._admitted(tool_use_id, admission.policy)
        return self._refused_by(tool, tool_use_id, admission)

    # -- outcomes ----------------------------------------------------------------------------
    def _admitted(self, tool_use_id: str, record: dict[str, Any]) -> dict[str, Any]:
        self.decisions[tool_use_id] = record
        return answer("allow", str(record.get("reason") or "allowed by Quarterdeck's policy"))

    def _refused_by(self, tool: str, tool_use_id: str, admission: Admission) -> dict[str, Any]:
        return self._audit_refusal(
            tool, admission.arguments, tool_use_id, admission.policy, admission.message
        )

    def _refused(
        self,
        tool: str,
        tool_input: dict[str, Any],
        tool_use_id: str,
        record: dict[str, Any],
        message: str,
    ) -> dict[str, Any]:
        arguments, _ = redact_arguments(tool_input)
        return self._audit_refusal(tool, arguments, tool_use_id, record, message)

    async def _malformed(self, hook_input: dict[str, Any], why: str) -> dict[str, Any]:
        tool = hook_input.get("tool_name")
        tool_input = hook_input.get("tool_input")
        tool_use_id = hook_input.get("tool_use_id")
        return self._refused(
            tool if isinstance(tool, str) and tool else "unknown",
            tool_input if isinstance(tool_input, dict) else {},
            tool_use_id if isinstance(tool_use_id, str) and tool_use_id else "",
            _record(why, "deny", "gate.malformed-request"),
            f"not run: Quarterdeck's policy gate could not read the call ({why})",
        )

    def _audit_refusal(
        self,
        tool: str,
        arguments: dict[str, Any],
        tool_use_id: str,
        record: dict[str, Any],
        message: str,
    ) -> dict[str, Any]:
        """A refused call's ``tool.call``, shaped like the native loop's (``guard.refused``)."""
        if tool_use_id:
            self.decisions[tool_use_id] = record
            self.refusals[tool_use_id] = message
        log.info(
            "claude_code.tool_refused",
            run_id=self.run.id,
            tool=tool,
            rule_id=record.get("rule_id"),
            action=record.get("action"),
        )
        if self.guard is not None and self.guard.trail is not None:
            self.guard.trail.tool_call(
                self.run,
                {
                    "tool": tool,
                    "input": arguments,
                    "output": message,
                    "is_error": True,
                    "permissions": [],
                    "files_changed": [],
                    "network": [],
                    "policy": record,
                    "tool_use_id": tool_use_id or None,
                },
            )
        return answer("deny", message)
