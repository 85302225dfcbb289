"""The scheduled upkeep ``quarterdeck up`` runs: the run-data purge, the audit retention purge
and a full audit chain verification, each at its own interval.

Every replica runs the loop; a session advisory lock lets one of them run a task at a time, and
when each task last ran is kept in Postgres (``maintenance_runs``), so a task is due by that time
whichever replica ran it and however often processes restart. A failed verification opens a
critical security incident (and the chain-valid gauge, which the audit log keeps, drops to 0).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client import Gauge

from quarterdeck.incidents import IncidentService
from quarterdeck.incidents.models import Source
from quarterdeck.metrics import REGISTRY
from quarterdeck.security.audit import AuditLog
from quarterdeck.store import locks
from quarterdeck.store.pool import Database
from quarterdeck.tenants import repository as repo
from quarterdeck.tenants.retention import due
from quarterdeck.tenants.service import TenantData

log = structlog.get_logger(__name__)
LOCK = locks.TENANT_MAINTENANCE
RUNS_PURGE, AUDIT_PURGE, AUDIT_VERIFY = "runs.purge", "audit.purge", "audit.verify"

LAST_RUN = Gauge(
    "claude_agent_maintenance_last_run_timestamp_seconds",
    "When this process last ran a scheduled maintenance task (runs.purge, audit.purge, "
    "audit.verify)",
    ["task"],
    registry=REGISTRY,
)
LAST_OK = Gauge(
    "claude_agent_maintenance_last_run_ok",
    "1 if the task's last run in this process succeeded, else 0",
    ["task"],
    registry=REGISTRY,
)

Outcome = tuple[bool, dict[str, Any]]


@dataclass(frozen=True)
class Task:
    name: str
    interval_s: float
    run: Callable[[datetime], Awaitable[Outcome]]


class Maintenance:
    def __init__(
        self,
        db: Database,
        data: TenantData,
        audit: AuditLog,
        *,
        incidents: IncidentService | None = None,
        run_purge_s: float = 3600.0,
        audit_purge_s: float = 86_400.0,
        audit_verify_s: float = 86_400.0,
        wake_s: float = 300.0,
        first_delay_s: float = 60.0,
    ) -> None:
        self.db = db
        self.data = data
        self.audit = audit
        self.incidents = incidents
        self.wake_s = wake_s
        self.first_delay_s = first_delay_s
        self.tasks = [
            Task(RUNS_PURGE, run_purge_s, self._purge_runs),
            Task(AUDIT_PURGE, audit_purge_s, self._purge_audit),
            Task(AUDIT_VERIFY, audit_verify_s, self._verify_audit),
        ]

    async def run(self) -> None:
        """Forever: wake, run whatever is due. A failing task never stops the others."""
        await asyncio.sleep(self.first_delay_s)
        while True:
            try:
                await self.tick()
            except Exception as exc:  # the database may be away; the next wake retries
                log.warning("maintenance_tick_failed", error=str(exc))
            await asyncio.sleep(self.wake_s)

    async def tick(self, now: datetime | None = None) -> dict[str, Outcome]:
        """Run every due task once (if this process gets the lock); returns what ran."""
        ran: dict[str, Outcome] = {}
        async with self.db.acquire() as conn:
            if not await repo.try_lock(conn, LOCK):
                return ran
            try:
                for task in self.tasks:
                    at = now or datetime.now(UTC)
                    if not due(await repo.last_run(conn, task.name), at, task.interval_s):
                        continue
                    try:
                        outcome = await task.run(at)
                    except Exception as exc:
                        log.error("maintenance_task_failed", task=task.name, error=str(exc))
                        outcome = (False, {"error": str(exc)[:500]})
                    await repo.record_run(conn, task.name, at, *outcome)
                    LAST_RUN.labels(task.name).set(at.timestamp())
                    LAST_OK.labels(task.name).set(1 if outcome[0] else 0)
                    ran[task.name] = outcome
            finally:
                await repo.unlock(conn, LOCK)
        return ran

    async def _purge_runs(self, now: datetime) -> Outcome:
        report = await self.data.purge(now)
        return True, {"runs": report.runs, "by_tenant": report.by_tenant, "rows": report.rows}

    async def _purge_audit(self, now: datetime) -> Outcome:
        outcome = await self.audit.purge(now)
        purged = {r.tenant: r.events_purged for r in outcome.purged}
        return not outcome.problems, {"events": purged, "problems": len(outcome.problems)}

    async def _verify_audit(self, now: datetime) -> Outcome:
        report = await self.audit.verify()
        summary = {
            "tenants": report.tenants_checked,
            "events": report.events_checked,
            "problems": len(report.problems),
        }
        if not report.ok:
            log.error("audit_verify_failed", problems=[str(p) for p in report.problems[:20]])
            await self._incident(report.problems)
        return report.ok, summary

    async def _incident(self, problems: list[Any]) -> None:
        if self.incidents is None:
            return
        tenants = sorted({p.tenant for p in problems})
        try:
            await self.incidents.open_or_update(
                "audit",
                "critical",
                "Audit log verification failed",
                f"{len(problems)} problem(s) in the hash chains of {', '.join(tenants[:10])}",
                "audit:verify",
                source=Source.security,
                affected_components=["audit_log"],
                suggested_actions=[
                    "Run `quarterdeck audit verify` and read each problem",
                    "Compare with off-site checkpoints: quarterdeck audit verify --against FILE",
                ],
                details={"problems": [p.model_dump(mode="json") for p in problems[:50]]},
            )
        except Exception as exc:
            log.error("audit_verify_incident_failed", error=str(exc))
