"""Where policy decisions that matter go: a metric, the audit log, and security incidents.

``flag`` and ``deny`` decisions are anomalies. Each is counted in
``claude_agent_errors_total{error_type="security_anomaly",severity}`` and recorded with its audit
event (the tool call's, written by :mod:`quarterdeck.agents.guard`); high and critical ones also open (or update) a security incident through the incidents
machinery, deduplicated per rule and run so one misbehaving run pages once, not per tool call.
"""

from __future__ import annotations

from typing import Any

import structlog

from quarterdeck import metrics
from quarterdeck.incidents import IncidentService
from quarterdeck.incidents.models import Source

log = structlog.get_logger(__name__)

INCIDENT_SEVERITIES = frozenset({"high", "critical"})


class AnomalySink:
    def __init__(self, incidents: IncidentService | None) -> None:
        self.incidents = incidents

    async def record(
        self,
        *,
        run_id: str,
        tenant: str,
        agent_type: str,
        tool: str,
        decision: dict[str, Any],
    ) -> None:
        severity = str(decision.get("severity") or "medium")
        metrics.ERRORS.labels(metrics.bounded(agent_type), "security_anomaly", severity).inc()
        log.warning(
            "security.anomaly",
            run_id=run_id,
            tenant=tenant,
            tool=tool,
            rule=decision.get("rule_id"),
            action=decision.get("action"),
            severity=severity,
        )
        if self.incidents is None or severity not in INCIDENT_SEVERITIES:
            return
        rule = decision.get("rule_id") or "unknown"
        try:
            await self.incidents.open_or_update(
                "security",
                severity,
                f"Policy {decision.get('action')}: {rule} in run {run_id}",
                f"{tool}: {decision.get('reason', '')}",
                f"security:{rule}:{run_id}",
                source=Source.security,
                affected_components=[f"tenant:{tenant}", f"run:{run_id}"],
                suggested_actions=[
                    f"Inspect the run's events: GET /v1/runs/{run_id}/events",
                    "Cancel the run if the behaviour is not expected",
                    f"If the rule {rule} is a false positive, override it in "
                    "QUARTERDECK_POLICY_RULES_FILE",
                ],
                details={"run_id": run_id, "tenant": tenant, "tool": tool, "decision": decision},
            )
        except Exception as exc:
            log.error("security.incident_failed", run_id=run_id, error=str(exc))
