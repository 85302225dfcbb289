"""What the gateway sees of a client's conversation, and what it does about it.

* :meth:`Inspector.outgoing` runs on every request *before* it goes upstream, so it scans only
  the **new** content for secrets: the messages after the last ``assistant`` message, plus
  ``system`` while there is none. Claude Code resends its whole history every turn; rescanning
  it would cost O(n^2) over a session and re-flag old findings. Per ``gateway_secrets`` a
  finding is flagged (the original bytes go upstream), redacted (the only case that
  re-serialises the body) or refused (the relay answers 400 with the reason).
  Redaction remembers: the client keeps the original text and resends it as history, where it
  is not new. So the secrets redacted in a session (else run, else key) are kept in this
  process (bounded), looked for in later raw bodies with one byte search each, and redacted
  again wherever they are: no leak upstream, and a stable prompt-cache prefix.

* :meth:`Inspector.observe` runs after the response, fire-and-forget: each ``tool_use`` of the
  response and ``tool_result`` of the request is audited with the policy gate's decision
  recorded as ``flag`` -- the gateway observes; it cannot stop a client running its tools.
  Claude Code's tools are mapped onto our tool-call contract (:mod:`quarterdeck.toolcalls`) so
  the gate's rules apply; unknown tools are audited without a decision. A tool use the gate
  would not allow goes to the :class:`AnomalySink` (an incident when high or critical).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Coroutine, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
import structlog

from quarterdeck import metrics
from quarterdeck.exceptions import ConfigError
from quarterdeck.gateway.claude_tools import content_slots, map_tool, text_of, workspace_of
from quarterdeck.gateway.meter import ToolUse
from quarterdeck.incidents.anomalies import AnomalySink
from quarterdeck.security.audited import AuditedCall
from quarterdeck.security.policy import PolicyGate, find_secrets, redact
from quarterdeck.security.policy.decision import combine
from quarterdeck.security.policy.secrets import REDACTED
from quarterdeck.security.redaction import redact_arguments
from quarterdeck.security.trail import AuditTrail
from quarterdeck.toolcalls import TOOLS

log = structlog.get_logger(__name__)

SecretsMode = Literal["flag", "redact", "refuse"]
MODES: tuple[SecretsMode, ...] = ("flag", "redact", "refuse")
OUTPUT_EXCERPT = 8192
REMEMBER_DECISIONS = 1024
"""Gate decisions kept per process (inputs of at most ``REMEMBER_INPUT_BYTES``: 4 MB at most)."""
REMEMBER_INPUT_BYTES = 4096
REMEMBER_TEXTS = 256
"""Clean texts kept per process (of at most ``REMEMBER_TEXT_CHARS``: 8 M characters at most);
one pushed out before its call ends is simply scanned again."""
REMEMBER_TEXT_CHARS = 32_768
"""Characters of a tool result kept (redacted) in its audit record."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """What to send: ``body`` replaces the original bytes when not None (redacted);
    ``refused`` is the reason to answer 400 instead; ``kinds`` the secret types found."""

    body: bytes | None = None
    refused: str | None = None
    findings: int = 0
    kinds: tuple[str, ...] = ()


CLEAN = Outgoing()


# -- where the new content is ------------------------------------------------------------------
def new_start(messages: list[Any]) -> int:
    """Index of the first new message: the one after the last assistant message (0: none)."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if isinstance(message, dict) and message.get("role") == "assistant":
            return index + 1
    return 0


def text_slots(body: Mapping[str, Any], *, everything: bool = False) -> Iterator[tuple[Any, str]]:
    """(holder, key) of each text of the new content (``everything``: of the whole body)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return
    start = 0 if everything else new_start(messages)
    if start == 0 and isinstance(body, dict):
        yield from content_slots(body, "system")
    for message in messages[start:]:
        if isinstance(message, dict):
            yield from content_slots(message, "content")


class Inspector:
    def __init__(
        self,
        *,
        mode: SecretsMode,
        gate: PolicyGate | None,
        trail: AuditTrail | None,
        anomalies: AnomalySink | None,
        max_pending: int = 1000,
        max_sessions: int = 10_000,
    ) -> None:
        if mode not in MODES:
            raise ConfigError([("gateway_secrets", f"{mode!r} is not flag, redact or refuse")])
        self.mode: SecretsMode = mode
        self.gate = gate
        self.trail = trail
        self.anomalies = anomalies
        self.max_pending = max_pending
        self.max_sessions = max_sessions
        self._pending: set[asyncio.Task[None]] = set()
        # scope -> {secret: type}, redact mode only (see the module docstring)
        self._redacted: OrderedDict[str, dict[str, str]] = OrderedDict()
        # Texts the outgoing scan found no secret in: the audit of the same tool result (moments
        # later, once the response ended) then needs no second scan. Keyed by the text itself,
        # so only an equal text is ever taken as clean.
        self._clean: OrderedDict[str, None] = OrderedDict()
        # The gate's decision by (tool, input, workspace): the gate is pure, and a Claude Code
        # tool_use judged in one response comes back judged again as the next request's
        # tool_result.
        self._judged: OrderedDict[
            tuple[str, bytes, str | None], tuple[str | None, dict[str, Any] | None]
        ] = OrderedDict()

    # -- secrets in outgoing content -----------------------------------------------------------
    def outgoing(
        self, parsed: dict[str, Any], raw: bytes, ctx: AuditedCall | None = None
    ) -> Outgoing:
        """Scan the new content of a request; see the module docstring. Never raises."""
        kinds: dict[str, int] = {}
        for holder, key in text_slots(parsed):
            text = holder[key]
            findings = find_secrets(text)
            for finding in findings:
                kinds[finding.type] = kinds.get(finding.type, 0) + 1
            if not findings and len(text) <= REMEMBER_TEXT_CHARS:
                _remember(self._clean, text, None, REMEMBER_TEXTS)
        known = self._known(ctx, raw) if self._redacted and ctx is not None else {}
        if not kinds and not known:
            return CLEAN
        count = sum(kinds.values())
        if kinds:
            self._report(ctx, kinds, count)
        if self.mode == "flag":
            return Outgoing(None, None, count, tuple(sorted(kinds)))
        if self.mode == "refuse":
            reason = (
                f"quarterdeck: refused: the new content of this request holds {count} "
                f"secret(s) ({', '.join(sorted(kinds))}); remove them and send it again"
            )
            return Outgoing(None, reason, count, tuple(sorted(kinds)))
        try:
            return Outgoing(self._redact(raw, ctx, known), None, count, tuple(sorted(kinds)))
        except (ValueError, TypeError, AttributeError):  # raw is not the body parsed
            log.exception("gateway.redact_failed")  # never forward a secret we should redact
            return Outgoing(None, "quarterdeck: refused: a secret could not be redacted", count)

    def _report(self, ctx: AuditedCall | None, kinds: dict[str, int], count: int) -> None:
        metrics.child(metrics.ERRORS, "gateway", "prompt_secret", "high").inc(count)
        log.warning(
            "gateway.secrets",
            mode=self.mode,
            findings=count,
            kinds=sorted(kinds),
            tenant=ctx.tenant if ctx else None,
            call_id=ctx.call_id if ctx else None,
        )
        if self.trail is not None and ctx is not None:
            self.trail.gateway_secrets(ctx, mode=self.mode, kinds=kinds)

    def _redact(self, raw: bytes, ctx: AuditedCall | None, known: dict[str, str]) -> bytes:
        """The body with new secrets and remembered ones replaced. A fresh parse of ``raw``
        is the copy we edit (cheaper than a deep copy); everything else keeps its value."""
        body = orjson.loads(raw)
        found: dict[str, str] = {}
        for holder, key in text_slots(body):
            text = holder[key]
            cleaned = redact(text)
            if cleaned.findings:
                holder[key] = cleaned.text
                found.update((text[f.start : f.end], f.type) for f in cleaned.findings)
        if known:
            for holder, key in text_slots(body, everything=True):
                text = holder[key]
                for secret, kind in known.items():
                    if secret in text:
                        text = text.replace(secret, REDACTED.format(kind))
                holder[key] = text
        if ctx is not None and found:
            self._remember(ctx, found)
        return orjson.dumps(body)

    @staticmethod
    def _scope(ctx: AuditedCall) -> str:
        return ctx.session_id or ctx.run_id or ctx.key_id or f"tenant:{ctx.tenant}"

    def _remember(self, ctx: AuditedCall, found: dict[str, str]) -> None:
        scope = self._scope(ctx)
        secrets = self._redacted.pop(scope, {})
        secrets.update(found)
        while len(secrets) > 256:  # oldest first
            secrets.pop(next(iter(secrets)))
        self._redacted[scope] = secrets
        while len(self._redacted) > self.max_sessions:
            self._redacted.popitem(last=False)

    def _known(self, ctx: AuditedCall, raw: bytes) -> dict[str, str]:
        """The remembered secrets of this scope that occur in ``raw`` (as JSON text)."""
        secrets = self._redacted.get(self._scope(ctx))
        if not secrets:
            return {}
        return {s: k for s, k in secrets.items() if orjson.dumps(s)[1:-1] in raw}

    # -- tool calls ------------------------------------------------------------------------------
    def observe(self, ctx: AuditedCall, request: dict[str, Any], tool_uses: list[ToolUse]) -> None:
        """Audit the tool results of the request and the tool uses of the response; never
        raises and never waits (incidents are opened in a task)."""
        if self.trail is None and self.anomalies is None:
            return
        try:
            self._observe(ctx, request, tool_uses)
        except Exception:  # observation must never break the relay
            log.exception("gateway.observe_failed", call_id=ctx.call_id)

    def _observe(self, ctx: AuditedCall, request: dict[str, Any], tool_uses: list[ToolUse]) -> None:
        messages = request.get("messages")
        messages = messages if isinstance(messages, list) else []
        start = new_start(messages)
        results = [
            block
            for message in messages[start:]
            if isinstance(message, dict) and isinstance(message.get("content"), list)
            for block in message["content"]
            if isinstance(block, dict) and block.get("type") == "tool_result"
        ]
        if not results and not tool_uses:
            return
        workspace = workspace_of(request)
        asked: dict[Any, tuple[str, dict[str, Any]]] = {}
        if start and isinstance(messages[start - 1].get("content"), list):
            for block in messages[start - 1]["content"]:
                if isinstance(block, dict) and block.get("type") == "tool_use":
                    given = block.get("input")
                    asked[block.get("id")] = (
                        str(block.get("name")),
                        given if isinstance(given, dict) else {},
                    )
        for block in results:
            use_id = block.get("tool_use_id")
            name, given = asked.get(use_id, ("unknown", {}))
            text = text_of(block.get("content"))
            output = (text if text in self._clean else redact(text).text)[:OUTPUT_EXCERPT]
            is_error = block.get("is_error") is True
            self._one(ctx, "tool_result", use_id, name, given, workspace, output, is_error)
        for use in tool_uses:
            self._one(ctx, "tool_use", use.id, use.name, use.input, workspace, None, False)

    def judge(
        self, name: str, given: Mapping[str, Any], workspace: Path | None
    ) -> tuple[str | None, dict[str, Any] | None]:
        """(our tool, the gate's decision as recorded: ``action`` "flag" unless allowed, the
        gate's own in ``gate_action``). Without a known workspace, "outside the workspace"
        means nothing, so the ``workspace.*`` rules are left out. Remembered by tool, input
        and workspace (the gate is pure); the record returned is the caller's own copy."""
        try:
            encoded = orjson.dumps(given, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            encoded = b""
        key = None
        if 0 < len(encoded) <= REMEMBER_INPUT_BYTES:
            key = (name, encoded, str(workspace) if workspace is not None else None)
            known = self._judged.get(key)
            if known is not None:
                self._judged.move_to_end(key)
                return known[0], (dict(known[1]) if known[1] is not None else None)
        tool, record = self._judge(name, given, workspace)
        if key is not None:
            _remember(self._judged, key, (tool, record), REMEMBER_DECISIONS)
            record = dict(record) if record is not None else None
        return tool, record

    def _judge(
        self, name: str, given: Mapping[str, Any], workspace: Path | None
    ) -> tuple[str | None, dict[str, Any] | None]:
        mapped = map_tool(name, given)
        if mapped is None or self.gate is None:
            return (mapped[0] if mapped else None), None
        tool, args = mapped
        decision = self.gate.check(tool, args, workspace=workspace)
        if workspace is None and any(m.rule_id.startswith("workspace.") for m in decision.matches):
            decision = combine(
                [m for m in decision.matches if not m.rule_id.startswith("workspace.")]
            )
        record = decision.to_dict()
        record["gate_action"] = decision.action
        record["action"] = "allow" if decision.action == "allow" else "flag"
        return tool, record

    def _one(
        self,
        ctx: AuditedCall,
        kind: str,
        use_id: Any,
        name: str,
        given: Mapping[str, Any],
        workspace: Path | None,
        output: str | None,
        is_error: bool,
    ) -> None:
        tool, record = self.judge(name, given, workspace)
        if self.trail is not None:
            target = given.get("file_path") or given.get("notebook_path") or given.get("path")
            url = given.get("url")
            event: dict[str, Any] = {"kind": kind, "tool": name, "mapped": tool, "policy": record}
            event["tool_use_id"] = use_id if isinstance(use_id, str) else None
            event["input"] = redact_arguments(dict(given))[0]
            event["output"], event["is_error"] = output, is_error
            writes = tool in ("write_file", "edit_file") and isinstance(target, str)
            event["files_changed"] = [target] if writes else []
            fetches = tool == "http_fetch" and isinstance(url, str)
            event["network"] = [{"url": url}] if fetches else []
            event["permissions"] = list(TOOLS[tool][1]) if tool in TOOLS else []
            self.trail.gateway_tool_call(ctx, event)
        if (
            kind == "tool_use"
            and record is not None
            and record["gate_action"] != "allow"
            and self.anomalies is not None
        ):
            self._later(
                self.anomalies.record(
                    run_id=ctx.run_id or ctx.session_id or ctx.call_id,
                    tenant=ctx.tenant,
                    agent_type="gateway",
                    tool=name,
                    decision=record,
                )
            )

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` on the loop without waiting for it; bounded, so a flood of anomalies
        drops (loudly) rather than piling up tasks."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            work.close()
            log.warning("gateway.anomaly_dropped", reason="no running event loop")
            return
        if len(self._pending) >= self.max_pending:
            work.close()
            log.warning("gateway.anomaly_dropped", reason="too many pending")
            return
        task = loop.create_task(_quietly(work))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for the anomalies being recorded (shutdown, tests)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)


def _remember(memory: OrderedDict[Any, Any], key: Any, value: Any, limit: int) -> None:
    """Keep ``key`` as the newest entry of a memory of at most ``limit`` (oldest go first)."""
    memory[key] = value
    memory.move_to_end(key)
    while len(memory) > limit:
        memory.popitem(last=False)


async def _quietly(work: Coroutine[Any, Any, None]) -> None:
    try:
        await work
    except Exception:
        log.exception("gateway.anomaly_failed")
