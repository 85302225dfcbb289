"""What Quarterdeck writes to the audit log, in one place: the call sites say *what happened*,
this module turns it into :class:`~quarterdeck.security.audit.AuditEvent` records.

Hot paths (run submission, start and finish, tool-call outcomes) append without waiting; the
audit appender writes them in batches within ~100 ms on its own and at shutdown, so a crash
loses at most that window. A tool call's intent, and security-relevant changes (keys, budgets,
approvals, incident actions), are awaited: durable before the tool runs or the API answers.
Prompts and tool output go in the encrypted ``sensitive`` part; everything else is searchable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import structlog
from fastapi import Depends, Request

from quarterdeck.kit.wiring import provide_optional
from quarterdeck.security.audit import AuditEvent, AuditLog
from quarterdeck.security.audited import AuditedCall, AuditedRun

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RequestContext:
    """Who asked, from where: what an API call adds to the events it causes."""

    actor: str = "system"
    source_ip: str | None = None
    request_id: str | None = None

    @property
    def key_id(self) -> str | None:
        """The calling key's id, when a key made the call."""
        return self.actor.removeprefix("key:") if self.actor.startswith("key:") else None

    @classmethod
    def of(cls, request: Request, key_id: str | None) -> RequestContext:
        """From a Starlette request and the calling key's id."""
        return cls(
            actor=f"key:{key_id}" if key_id else "anonymous",
            source_ip=request.client.host if request.client else None,
            request_id=request.headers.get("x-request-id"),
        )


class ChangeRecorder:
    """Audits the changes one API request makes; does nothing where the audit log does not run.

    Routers take it as the :data:`Changes` dependency, so a handler states what it changed and
    never looks up the trail or the caller's address itself.
    """

    def __init__(self, trail: AuditTrail | None, request: Request) -> None:
        self.trail = trail
        self.request = request

    async def record(
        self, key_id: str | None, event_type: str, tenant: str, details: dict[str, Any]
    ) -> None:
        """Durable before the response is sent, so an answered change is an audited one."""
        if self.trail is not None:
            await self.trail.change(
                event_type,
                tenant=tenant,
                details=details,
                ctx=RequestContext.of(self.request, key_id),
            )


class AuditTrail:
    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    def _nowait(self, event: AuditEvent) -> None:
        try:
            self.audit.record_nowait(event)
        except Exception as exc:  # a bad field must not fail the run; it is loud in the log
            log.error("audit.record_failed", event_type=event.event_type, error=str(exc))

    # -- runs ----------------------------------------------------------------------------------
    def run_created(self, row: dict[str, Any], ctx: RequestContext) -> None:
        """``row``: the run as inserted (id, tenant, agent_type, operation, model, prompt)."""
        self._nowait(
            AuditEvent(
                event_type="run.created",
                tenant=row["tenant"],
                actor=ctx.actor,
                agent_id=row["agent_type"],
                session_id=row["id"],
                source_ip=ctx.source_ip,
                request_id=ctx.request_id,
                operations=[row["operation"]],
                data_accessed=[row["model"]],
                sensitive={"prompt": row["prompt"]},
            )
        )

    def run_started(self, run: AuditedRun, worker_id: str) -> None:
        """Recorded for resumed attempts only: a first start is in ``run.completed`` (worker,
        attempts, start time), which keeps the hot path to two audit events per run."""
        if run.attempts <= 1:
            return
        self._nowait(
            AuditEvent(
                event_type="run.started",
                tenant=run.tenant,
                actor=f"worker:{worker_id}",
                agent_id=run.agent_type,
                session_id=run.id,
                operations=[run.operation],
                outcome="resumed",
            )
        )

    def run_finished(
        self, run: AuditedRun, error_type: str | None, worker_id: str = "worker"
    ) -> None:
        duration = None
        if run.started_at and run.finished_at:
            duration = int((run.finished_at - run.started_at).total_seconds() * 1000)
        self._nowait(
            AuditEvent(
                event_type="run.completed",
                tenant=run.tenant,
                actor=f"worker:{worker_id}",
                agent_id=run.agent_type,
                session_id=run.id,
                operations=[run.operation],
                data_accessed=[
                    run.model,
                    {
                        "attempts": run.attempts,
                        "turns": run.turns,
                        "started_at": _iso(run.started_at),
                        "cost_usd": run.cost_usd,
                    },
                ],
                duration_ms=duration,
                outcome=run.status.value,
                sensitive={"error": run.error, "error_type": error_type} if run.error else None,
            )
        )

    def run_cancelled(self, run: AuditedRun, ctx: RequestContext) -> None:
        self._nowait(
            AuditEvent(
                event_type="run.cancelled",
                tenant=run.tenant,
                actor=ctx.actor,
                session_id=run.id,
                agent_id=run.agent_type,
                request_id=ctx.request_id,
                source_ip=ctx.source_ip,
                outcome=run.status.value,
            )
        )

    async def tool_intent(
        self,
        run: AuditedRun,
        *,
        tool: str,
        tool_use_id: str,
        arguments: dict[str, Any],
        policy: dict[str, Any],
    ) -> None:
        """A tool call the guard let through, *durable before it runs*: a crash between the
        call's effect and its batched ``tool.call`` outcome cannot leave no trace of it. The
        outcome carries the same ``request_id`` (the model's tool-use id). ``arguments`` must
        already be redacted; they go in the encrypted part, like the outcome's input."""
        await self.audit.record(
            AuditEvent(
                event_type="tool.intent",
                tenant=run.tenant,
                actor=f"agent:{run.agent_type}",
                agent_id=run.agent_type,
                session_id=run.id,
                request_id=tool_use_id,
                operations=[tool],
                data_accessed=[{"policy": policy.get("action"), "rule_id": policy.get("rule_id")}],
                outcome="intended",
                sensitive={"input": arguments},
            )
        )

    def tool_call(self, run: AuditedRun, event: dict[str, Any]) -> None:
        """One tool call: files touched, connections attempted, permissions used, the decision."""
        policy = event.get("policy") or {}
        anomaly = None
        if policy.get("action") in ("flag", "deny", "require_approval") and policy.get("rule_id"):
            anomaly = {
                "rule_id": policy["rule_id"],
                "severity": policy.get("severity", "medium"),
                "decision": policy["action"],
                "tags": list(policy.get("tags", [])),
                "description": policy.get("description", ""),
            }
        self._nowait(
            AuditEvent(
                event_type="tool.call",
                tenant=run.tenant,
                actor=f"agent:{run.agent_type}",
                agent_id=run.agent_type,
                session_id=run.id,
                request_id=event.get("tool_use_id"),
                operations=[event.get("tool")],
                files_modified=list(event.get("files_changed") or []),
                network_connections=list(event.get("network") or []),
                permissions=list(event.get("permissions") or []),
                duration_ms=_ms(event.get("duration_ms")),
                outcome="error" if event.get("is_error") else "success",
                anomaly=anomaly,
                sensitive={"input": event.get("input"), "output": event.get("output")},
            )
        )

    def egress_connection(self, run: AuditedRun, record: dict[str, Any]) -> None:
        """One connection a command made (or tried) through the run's egress proxy, as it
        ends: host, port, bytes each way, allowed or refused and why. A refusal is an anomaly."""
        refused = not record.get("allowed")
        self._nowait(
            AuditEvent(
                event_type="egress.connection",
                tenant=run.tenant,
                actor=f"agent:{run.agent_type}",
                agent_id=run.agent_type,
                session_id=run.id,
                operations=["egress.connect"],
                network_connections=[record],
                duration_ms=_ms(record.get("duration_ms")),
                outcome="refused" if refused else "allowed",
                anomaly={
                    "rule_id": record.get("rule_id") or "egress.refused",
                    "severity": "medium",
                    "decision": "deny",
                    "tags": ["egress"],
                    "description": str(record.get("reason", ""))[:500],
                }
                if refused
                else None,
            )
        )

    # -- the gateway (observes clients' calls; it cannot stop their tools) ----------------------
    def gateway_tool_call(self, call: AuditedCall, event: dict[str, Any]) -> None:
        """A ``tool_use`` the upstream returned or a ``tool_result`` the client sent back.

        ``event``: ``kind`` (``tool_use`` | ``tool_result``), ``tool``, ``tool_use_id``,
        ``mapped`` (our tool it was judged as, or None), ``policy`` (the gate's decision with
        ``action`` "flag" and the gate's own in ``gate_action``; None when not judged),
        ``input``, ``output``, ``is_error``, ``files_changed``, ``network``, ``permissions``.
        The run id heads the record when there is one, so a run's audit search finds the calls
        its agent made through the gateway; the session id otherwise.
        """
        policy = event.get("policy") or {}
        anomaly = None
        if policy.get("gate_action", "allow") != "allow" and policy.get("rule_id"):
            anomaly = {
                "rule_id": policy["rule_id"],
                "severity": policy.get("severity", "medium"),
                "decision": "flag",
                "tags": list(policy.get("tags", [])),
                "description": policy.get("description", ""),
            }
        kind = event.get("kind", "tool_use")
        outcome = (
            "requested" if kind == "tool_use" else "error" if event.get("is_error") else "success"
        )
        self._nowait(
            AuditEvent(
                event_type=f"gateway.{kind}",
                tenant=call.tenant,
                actor=f"key:{call.key_id}" if call.key_id else "gateway",
                agent_id=call.agent_id,
                session_id=call.run_id or call.session_id,
                request_id=call.call_id,
                operations=[event.get("tool")],
                data_accessed=[
                    {
                        "call_id": call.call_id,
                        "key_id": call.key_id,
                        "run_id": call.run_id,
                        "session_id": call.session_id,
                        "model": call.model,
                        "tool": event.get("tool"),
                        "tool_use_id": event.get("tool_use_id"),
                        "mapped_tool": event.get("mapped"),
                        "policy": event.get("policy"),
                    }
                ],
                files_modified=list(event.get("files_changed") or []),
                network_connections=list(event.get("network") or []),
                permissions=list(event.get("permissions") or []),
                outcome=outcome,
                anomaly=anomaly,
                sensitive={"input": event.get("input"), "output": event.get("output")},
            )
        )

    def gateway_secrets(self, call: AuditedCall, *, mode: str, kinds: dict[str, int]) -> None:
        """Secrets found in a request's new content: how many of which type, and what the
        gateway did (``mode``: flag, redact or refuse). Never the secret itself."""
        self._nowait(
            AuditEvent(
                event_type="gateway.secrets",
                tenant=call.tenant,
                actor=f"key:{call.key_id}" if call.key_id else "gateway",
                agent_id=call.agent_id,
                session_id=call.run_id or call.session_id,
                request_id=call.call_id,
                operations=["messages.create"],
                data_accessed=[
                    {
                        "call_id": call.call_id,
                        "key_id": call.key_id,
                        "run_id": call.run_id,
                        "session_id": call.session_id,
                        "model": call.model,
                        "secrets": dict(kinds),
                    }
                ],
                outcome={"flag": "flagged", "redact": "redacted"}.get(mode, "refused"),
                anomaly={
                    "rule_id": "gateway.secret-in-prompt",
                    "severity": "high",
                    "decision": mode,
                    "tags": sorted(kinds),
                    "description": "A secret in the new content of an outgoing prompt",
                },
            )
        )

    # -- security-relevant changes (awaited) ---------------------------------------------------
    async def change(
        self,
        event_type: str,
        *,
        tenant: str,
        details: dict[str, Any],
        ctx: RequestContext | None = None,
        actor: str | None = None,
    ) -> None:
        """Keys, roles, budgets, approvals, incident actions: durable before the caller answers."""
        ctx = ctx or RequestContext(actor or "system")
        await self.audit.record(
            AuditEvent(
                event_type=event_type,
                tenant=_tenant(tenant),
                actor=actor or ctx.actor,
                request_id=ctx.request_id,
                source_ip=ctx.source_ip,
                operations=[event_type],
                data_accessed=[_plain(details)],
            )
        )

    async def key_changed(self, action: str, details: dict[str, Any]) -> None:
        """The auth service's ``on_change`` hook."""
        await self.change(
            action,
            tenant=details.get("tenant") or "default",
            actor=details.get("actor"),
            details=details,
        )


def _plain(details: dict[str, Any]) -> dict[str, Any]:
    """Money (Decimal) as its exact decimal text: canonical JSON has no Decimal form."""
    return {k: str(v) if isinstance(v, Decimal) else v for k, v in details.items()}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _ms(value: Any) -> int | None:
    try:
        return None if value is None else int(float(value))
    except (TypeError, ValueError):
        return None


def _tenant(value: str) -> str:
    """Platform-wide changes (tenant ``*``) go to the ``platform`` chain."""
    return "platform" if value == "*" else value


def _changes(
    request: Request, trail: Annotated[AuditTrail | None, Depends(provide_optional(AuditTrail))]
) -> ChangeRecorder:
    return ChangeRecorder(trail, request)


Changes = Annotated[ChangeRecorder, Depends(_changes)]
"""The request's :class:`ChangeRecorder`, as a route parameter."""
