"""What Quarterdeck writes to the audit log, in one place: the call sites say *what happened*,
this module turns it into :class:`~quarterdeck.security.audit.AuditEvent` records.

Hot paths (run submission, start and finish, tool calls) append without waiting; the audit
appender writes them in batches within ~100 ms and at shutdown. Security-relevant changes (keys,
budgets, approvals, incident actions) are awaited, so they are durable before the API answers.
Prompts and tool output go in the encrypted ``sensitive`` part; everything else is searchable.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import structlog

from quarterdeck.security.audit import AuditEvent, AuditLog

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RequestContext:
    """Who asked, from where: what an API call adds to the events it causes."""

    actor: str = "system"
    source_ip: str | None = None
    request_id: str | None = None

    @classmethod
    def of(cls, request: Any, key_id: str | None) -> RequestContext:
        """From a Starlette request and the calling key's id."""
        return cls(
            actor=f"key:{key_id}" if key_id else "anonymous",
            source_ip=request.client.host if request.client else None,
            request_id=request.headers.get("x-request-id"),
        )


async def record_change(
    request: Any, key_id: str | None, event_type: str, tenant: str, details: dict[str, Any]
) -> None:
    """Audit a change made through the API (durable before the response), if auditing runs."""
    trail: AuditTrail | None = getattr(request.app.state.runtime, "trail", None)
    if trail is not None:
        await trail.change(
            event_type, tenant=tenant, details=details, ctx=RequestContext.of(request, key_id)
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

    def run_started(self, run: Any, worker_id: str) -> None:
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

    def run_finished(self, run: Any, error_type: str | None, worker_id: str = "worker") -> None:
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

    def run_cancelled(self, run: Any, ctx: RequestContext) -> None:
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

    def tool_call(self, run: Any, event: dict[str, Any]) -> None:
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


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _ms(value: Any) -> int | None:
    try:
        return None if value is None else int(float(value))
    except (TypeError, ValueError):
        return None


def _tenant(value: str) -> str:
    """Platform-wide changes (tenant ``*``) go to the ``platform`` chain."""
    return "platform" if value == "*" else value
