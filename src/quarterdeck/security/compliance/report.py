"""The compliance report: each control, the evidence the stored data holds for it, and its gaps.

Evidence is computed, never asserted: counts and results come from Postgres (keys, the audit log
and its signed checkpoints, policy decisions, approvals, security incidents, runs) for the period
asked. Every control also lists plainly what Quarterdeck does *not* cover for it, because a
report that only ever says "compliant" is not evidence of anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel

from quarterdeck.security.audit.models import VerifyReport
from quarterdeck.security.compliance import repository as repo
from quarterdeck.store.pool import Database

Status = Literal["evidence", "attention", "no_data"]


class Control(BaseModel):
    id: str
    framework: str
    title: str
    status: Status
    summary: str
    evidence: dict[str, Any]
    not_covered: list[str]


class ComplianceReport(BaseModel):
    period_start: datetime
    period_end: datetime
    generated_at: datetime
    controls: list[Control]
    scope_note: str


SCOPE = (
    "Quarterdeck produces technical evidence for the controls it implements: authentication and "
    "authorisation of its API, the audit log and its integrity, the policy gate on agent tool "
    "calls and the handling of its anomalies. It does not cover organisational controls "
    "(policies, training, vendor management, HR), the infrastructure it runs on (hosts, "
    "Kubernetes, Postgres backups and their access), or the systems agents work on. An auditor "
    "must combine this report with evidence for those."
)


@dataclass(frozen=True)
class RunRetention:
    """The deployment's run-data retention settings, which the Art. 17 control checks the data
    against (``QUARTERDECK_RUN_RETENTION_DAYS``, ``QUARTERDECK_RUN_PURGE_INTERVAL``)."""

    default_s: float
    purge_interval_s: float


async def build_report(
    db: Database,
    start: datetime,
    end: datetime,
    verify: VerifyReport | None = None,
    retention_settings: RunRetention | None = None,
    now: datetime | None = None,
) -> ComplianceReport:
    """``verify`` is the audit chain verification result (``VerifyReport``), or None if it could
    not be run (then the logging controls say so). ``retention_settings``: None when unknown
    (then Art. 17 cannot say whether run data is purged on time)."""
    now = now or datetime.now(UTC)
    async with db.acquire() as conn:
        keys = await repo.keys(conn, start, end)
        events = await repo.audit_events_by_type(conn, start, end)
        anomalies = await repo.anomalies(conn, start, end)
        decisions = await repo.policy_decisions(conn, start, end)
        approvals = await repo.approvals(conn, start, end)
        incidents = await repo.security_incidents(conn, start, end)
        checkpoints = await repo.checkpoints(conn, start, end)
        retention = await repo.retention(conn)
        purges = await repo.purges(conn, start, end)
        processing = await repo.processing(conn, start, end)
        shredded = await repo.shredded(conn)
        erasure = await _erasure_evidence(conn, start, end, retention_settings, now)
        erasure["shredded_tenants"] = shredded
    access_changes = {k: v for k, v in events.items() if k.startswith(("key.", "role."))}
    denied = events.get("auth.denied", 0)
    controls = [
        _access_control(keys, access_changes, denied),
        _anomalies(anomalies, decisions, approvals, incidents),
        _logging("ISO/IEC 27001:2022", "A.8.15", "Logging", events, checkpoints, verify, purges),
        _logging(
            "HIPAA",
            "164.312(b)",
            "Audit controls",
            events,
            checkpoints,
            verify,
            purges,
            retention=retention,
        ),
        _gdpr_30(processing),
        _gdpr_17(erasure, now),
    ]
    return ComplianceReport(
        period_start=start,
        period_end=end,
        generated_at=datetime.now(UTC),
        controls=controls,
        scope_note=SCOPE,
    )


def _access_control(keys: list[dict[str, Any]], changes: dict[str, int], denied: int) -> Control:
    active = sum(int(k["active"]) for k in keys)
    unused = sum(int(k["unused_90d"]) for k in keys)
    status: Status = "evidence" if keys else "no_data"
    return Control(
        id="CC6.1/CC6.3",
        framework="SOC 2",
        title="Logical access: keys, roles, access changes",
        status=status,
        summary=f"{active} active API keys across {len(keys)} roles ({unused} unused for 90 "
        "days: `quarterdeck keys list --unused-for 90d`); "
        f"{sum(changes.values())} recorded access changes; {denied} denied requests audited.",
        evidence={"keys_by_role": keys, "access_changes": changes, "denied_requests": denied},
        not_covered=[
            "Periodic access reviews by a human",
            "Identity of the people holding keys (keys name a purpose, not a person)",
            "SSO/MFA for humans (not provided)",
        ],
    )


def _anomalies(
    anomalies: list[dict[str, Any]],
    decisions: dict[str, int],
    approvals: dict[str, int],
    incidents: list[dict[str, Any]],
) -> Control:
    opened = sum(int(i["n"]) for i in incidents)
    open_now = sum(int(i["n"]) for i in incidents if i["status"] != "resolved")
    status: Status = "attention" if open_now else ("evidence" if decisions else "no_data")
    return Control(
        id="CC7.2",
        framework="SOC 2",
        title="Anomalies detected and how they were handled",
        status=status,
        summary=f"{sum(decisions.values())} tool calls checked before execution "
        f"({decisions.get('deny', 0)} denied, {decisions.get('flag', 0)} flagged, "
        f"{decisions.get('require_approval', 0)} held for approval); {opened} security "
        f"incidents, {open_now} still open.",
        evidence={
            "policy_decisions": decisions,
            "anomalies_by_severity": anomalies,
            "approvals": approvals,
            "security_incidents": incidents,
        },
        not_covered=[
            "Detection outside agent tool calls (hosts, network, the database)",
            "Threat intelligence feeds; rules are the shipped and configured ones",
        ],
    )


def _logging(
    framework: str,
    control: str,
    title: str,
    events: dict[str, int],
    checkpoints: dict[str, Any],
    verify: VerifyReport | None,
    purges: list[dict[str, Any]],
    retention: list[dict[str, Any]] | None = None,
) -> Control:
    total = sum(events.values())
    if verify is None:
        integrity: dict[str, Any] = {"verified": False, "reason": "verification was not run"}
        status: Status = "attention"
    else:
        integrity = {
            "verified": bool(verify.ok),
            "events_checked": verify.events_checked,
            "checkpoints_checked": verify.checkpoints_checked,
            "problems": [p.model_dump(mode="json") for p in verify.problems],
        }
        status = (
            "evidence" if verify.ok and total else ("attention" if not verify.ok else "no_data")
        )
    evidence: dict[str, Any] = {
        "events_by_type": events,
        "events": total,
        "signed_checkpoints": checkpoints,
        "integrity": integrity,
        "retention_purges": purges,
    }
    if retention is not None:
        evidence["retention_overrides"] = retention
    ok = integrity.get("verified")
    return Control(
        id=control,
        framework=framework,
        title=title,
        status=status,
        summary=f"{total} audit events in the period; {checkpoints.get('n', 0)} signed "
        f"checkpoints; hash chains {'verified intact' if ok else 'NOT verified'}.",
        evidence=evidence,
        not_covered=[
            "Off-site copies of checkpoints (export them: quarterdeck audit checkpoints export)",
            "Logs of the database, hosts and cluster",
            "Clock synchronisation of the servers (timestamps are the server's)",
        ],
    )


def _gdpr_30(processing: list[dict[str, Any]]) -> Control:
    runs = sum(int(p["runs"]) for p in processing)
    return Control(
        id="Art. 30",
        framework="GDPR",
        title="Records of processing activities",
        status="evidence" if processing else "no_data",
        summary=f"{runs} agent runs by {len({p['tenant'] for p in processing})} tenants, "
        "by agent type and model.",
        evidence={"processing": processing},
        not_covered=[
            "Purposes, legal bases and data categories (the controller's records)",
            "Which personal data a prompt or repository contains",
        ],
    )


async def _erasure_evidence(
    conn: asyncpg.Connection,
    start: datetime,
    end: datetime,
    settings: RunRetention | None,
    now: datetime,
) -> dict[str, Any]:
    """What Art. 17 is judged on: erasure requests and whether each completed, the retention
    of run data, when the purges last ran, and runs the purge should already have deleted."""
    requests = await repo.erasure_requests(conn, start, end)
    for r in requests:
        r["completed"] = r["erased_at"] is not None and r["erased_at"] >= r["requested_at"]
    evidence: dict[str, Any] = {
        "erasure_requests": requests,
        "run_retention_overrides": await repo.run_retention(conn),
        "maintenance": await repo.maintenance_runs(conn),
    }
    if settings is not None:
        evidence["run_retention_default_days"] = settings.default_s / 86_400.0
        evidence["run_purge_interval_s"] = settings.purge_interval_s
        # Past retention by more than one purge interval: a working purge has deleted these.
        at = min(end, now) - timedelta(seconds=settings.purge_interval_s)
        evidence["runs_past_retention"] = await repo.runs_past_retention(
            conn, at, settings.default_s
        )
    return evidence


def _gdpr_17(evidence: dict[str, Any], now: datetime) -> Control:
    requests = evidence["erasure_requests"]
    pending = [r["tenant"] for r in requests if not r["completed"]]
    tasks = {m["task"]: m for m in evidence["maintenance"]}
    problems = [f"erasure of {t} requested but not completed" for t in pending]
    interval = evidence.get("run_purge_interval_s")
    purge = tasks.get("runs.purge")
    if interval is None:
        problems.append("run-data retention settings unknown to this report")
    elif purge is None:
        problems.append("the run-data purge has never run")
    else:
        age = (now - purge["last_run_at"]).total_seconds()
        if age > 2 * interval:
            problems.append(f"the run-data purge last ran {age / 3600:.1f} h ago")
        if not purge["ok"]:
            problems.append("the last run-data purge failed")
    late = evidence.get("runs_past_retention", 0)
    if late:
        problems.append(f"{late} finished runs kept past their retention")
    status: Status = "attention" if problems else "evidence"
    done = len(requests) - len(pending)
    summary = (
        f"{done} of {len(requests)} tenant erasure requests completed; "
        f"{len(evidence['shredded_tenants'])} tenants' audit payloads crypto-shredded"
    )
    if interval is not None:
        summary += (
            f"; finished runs kept {evidence['run_retention_default_days']:g} days by default "
            f"({len(evidence['run_retention_overrides'])} overrides)"
        )
    summary += "." if not problems else ". Attention: " + "; ".join(problems) + "."
    return Control(
        id="Art. 17",
        framework="GDPR",
        title="Erasure: tenant erasure, run-data retention, crypto-shredding",
        status=status,
        summary=summary,
        evidence=evidence,
        not_covered=[
            "Copies outside Quarterdeck (backups, WAL archives, exports, provider logs)",
            "Deleted rows linger in Postgres files until vacuumed and overwritten",
            "Erasure of one person's data inside a tenant (erasure is per tenant)",
            "Public audit metadata (event types, times, run ids, file paths) is kept as evidence",
        ],
    )


def to_markdown(report: ComplianceReport) -> str:
    lines = [
        f"# Compliance evidence, {report.period_start:%Y-%m-%d} to {report.period_end:%Y-%m-%d}",
        "",
        f"Generated {report.generated_at:%Y-%m-%d %H:%M:%S} UTC from stored data.",
        "",
        "| framework | control | status | summary |",
        "| --- | --- | --- | --- |",
    ]
    for c in report.controls:
        lines.append(f"| {c.framework} | {c.id} {c.title} | {c.status} | {c.summary} |")
    for c in report.controls:
        lines += [
            "",
            f"## {c.framework} {c.id}: {c.title}",
            "",
            c.summary,
            "",
            "Not covered by Quarterdeck:",
        ] + [f"- {n}" for n in c.not_covered]
    lines += ["", "## Scope", "", report.scope_note, ""]
    return "\n".join(lines)
