"""Tenant erasure and run-data retention: the use-cases behind ``/v1/tenants`` and
``quarterdeck tenants``.

Erasing a tenant means every plaintext copy of what its agents were given and produced: run rows
and every child row (prompts, turns, events, archives, diffs), held tool calls, gateway call
records, incidents about it, the workspace trees on disk, and its audit payloads, which are
crypto-shredded rather than deleted so the hash chain still verifies. Its API keys are revoked
first, so nothing new arrives while the rest goes. The request is audited before anything is
deleted and the outcome (counts only) after, so a request that failed half-way is visible.

Retention deletes finished runs older than the tenant's retention (its override, else
``QUARTERDECK_RUN_RETENTION_DAYS``) in the same way, without touching anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from quarterdeck.agents.workspace import Workspace, WorkspaceError
from quarterdeck.approvals import repository as approvals_repo
from quarterdeck.exceptions import InvalidState, NotFound, ValidationFailed
from quarterdeck.gateway import repository as gateway_repo
from quarterdeck.incidents import repository as incidents_repo
from quarterdeck.runs.models import RunFilter, RunStatus
from quarterdeck.runs.store_protocol import Erased, RunStore
from quarterdeck.runs.transitions import IllegalTransition
from quarterdeck.security.audit import AuditEvent, AuditLog, EventFilter
from quarterdeck.security.audit import event_types as et
from quarterdeck.security.audit.models import TENANT_RE
from quarterdeck.security.auth import AuthService
from quarterdeck.store.pool import Database
from quarterdeck.tenants import repository as repo
from quarterdeck.tenants.models import ErasureResult, PurgeReport, RetentionOut
from quarterdeck.tenants.retention import DAY, purge_plan

log = structlog.get_logger(__name__)
SYSTEM_ACTOR = "system:retention"
ACTIVE = [RunStatus.queued, RunStatus.running]


def check_tenant(tenant: str) -> str:
    """A tenant name as keys and runs spell it; ``*`` (all tenants) is not one."""
    if not TENANT_RE.fullmatch(tenant):
        raise ValidationFailed(
            f"tenant {tenant!r} is not valid: 1-64 characters, letters, digits, _ . : -",
            errors=[{"field": "tenant", "message": "malformed"}],
        )
    return tenant


def remove_workspaces(data_dir: Path, run_ids: Iterable[str]) -> int:
    """Delete the runs' workspace trees and baseline git dirs; how many trees existed."""
    removed = 0
    for run_id in run_ids:
        try:
            ws = Workspace(data_dir, run_id, retention="delete")
        except WorkspaceError:  # not a workspace-shaped id: it never had one
            continue
        existed = ws.path.exists() or ws.git_dir.exists()
        ws.cleanup("erased")
        removed += existed
    return removed


class TenantData:
    def __init__(
        self,
        db: Database,
        store: RunStore,
        audit: AuditLog,
        data_dir: Path,
        *,
        auth: AuthService | None = None,
        default_retention_s: float = 90 * DAY,
        erase_wait_s: float = 60.0,
    ) -> None:
        self.db = db
        self.store = store
        self.audit = audit
        self.auth = auth
        self.data_dir = data_dir
        self.default_retention_s = default_retention_s
        self.erase_wait_s = erase_wait_s

    # -- erasure -------------------------------------------------------------------------------
    async def erase(self, tenant: str, actor: str = "system") -> ErasureResult:
        """Erase everything of ``tenant`` (see the module docstring).

        NotFound when Quarterdeck holds nothing of it; InvalidState (409) when its runs do not
        end within ``erase_wait_s`` of being cancelled (the request stays recorded, unfinished).
        """
        check_tenant(tenant)
        keys = await self.auth.list_keys(tenant, include_inactive=True) if self.auth else []
        runs = await self.store.list_runs(tenant, RunFilter(limit=1))
        if not keys and not runs and not await self._has_audit(tenant):
            raise NotFound(f"tenant {tenant} has no runs, keys or audit events")
        await self._audit(tenant, et.TENANT_ERASURE_REQUESTED, actor, [])
        revoked = 0
        for key in keys:
            if key.status == "active" and self.auth is not None:
                await self.auth.revoke(key.id, actor=actor)
                revoked += 1
        cancelled = await self._cancel_active(tenant)
        erased = await self.store.erase_tenant(tenant)
        workspaces = await asyncio.to_thread(remove_workspaces, self.data_dir, erased.run_ids)
        rows = dict(erased.counts)
        async with self.db.transaction() as conn:
            rows["run_approvals"] = rows.get("run_approvals", 0) + (
                await approvals_repo.delete_tenant(conn, tenant)
            )
            rows.update(await gateway_repo.delete_tenant(conn, tenant))
            rows["incidents"] = await incidents_repo.delete_mentioning_tenant(conn, tenant)
            rows["run_retention"] = await repo.delete_retention(conn, tenant)
        shredded = await self.audit.shred_tenant(tenant, actor=actor)
        result = ErasureResult(
            tenant=tenant,
            runs=len(erased.run_ids),
            rows=rows,
            workspaces=workspaces,
            api_keys_revoked=revoked,
            audit_keys_destroyed=shredded,
            cancelled=cancelled,
        )
        await self._audit(tenant, et.TENANT_ERASED, actor, _counts(result))
        log.warning("tenant_erased", tenant=tenant, runs=result.runs, by=actor)
        return result

    async def _has_audit(self, tenant: str) -> bool:
        page = await self.audit.search(EventFilter(tenant=tenant, limit=1))
        return bool(page.items)

    async def _cancel_active(self, tenant: str) -> int:
        """Cancel the tenant's queued and running runs and wait until none is running: a run's
        worker must not write turns for a run that no longer exists."""
        active = await self.store.list_runs(tenant, RunFilter(status=ACTIVE, limit=10_000))
        for run in active:
            with contextlib.suppress(IllegalTransition, NotFound):  # ended meanwhile
                await self.store.cancel(run.id, tenant)
        deadline = asyncio.get_running_loop().time() + self.erase_wait_s
        while True:
            left = await self.store.list_runs(
                tenant, RunFilter(status=[RunStatus.running], limit=100)
            )
            if not left:
                return len(active)
            if asyncio.get_running_loop().time() >= deadline:
                raise InvalidState(
                    f"{len(left)} run(s) of tenant {tenant} were asked to cancel but are still "
                    f"running after {self.erase_wait_s:g}s; nothing was deleted, retry later"
                )
            await asyncio.sleep(0.2)

    async def _audit(self, tenant: str, event_type: str, actor: str, ops: list[str]) -> None:
        await self.audit.record(
            AuditEvent(event_type=event_type, tenant=tenant, actor=actor, operations=ops)
        )

    # -- retention -----------------------------------------------------------------------------
    async def last_maintenance(self, task: str) -> tuple[datetime, bool, dict[str, Any]] | None:
        """When scheduled maintenance ``task`` (``maintenance.py``: e.g. ``audit.verify``) last
        ran, whether it went well and its summary; None if it never ran."""
        async with self.db.acquire() as conn:
            row = await repo.maintenance_run(conn, task)
        if row is None:
            return None
        summary = row["summary"]
        return row["last_run_at"], bool(row["ok"]), dict(summary) if summary else {}

    async def get_retention(self, tenant: str) -> RetentionOut:
        async with self.db.acquire() as conn:
            seconds = await repo.retention(conn, check_tenant(tenant))
        value = seconds if seconds is not None else self.default_retention_s
        return RetentionOut(
            tenant=tenant,
            retention_seconds=value,
            retention_days=round(value / DAY, 6),
            overridden=seconds is not None,
        )

    async def set_retention(self, tenant: str, seconds: float, actor: str) -> RetentionOut:
        if seconds <= 0:
            raise ValidationFailed(
                "retention must be greater than zero",
                errors=[{"field": "retention", "message": "must be > 0"}],
            )
        async with self.db.acquire() as conn:
            await repo.set_retention(conn, check_tenant(tenant), seconds)
        await self._audit(tenant, et.CONFIG_CHANGED, actor, [f"run_retention_seconds={seconds:g}"])
        return await self.get_retention(tenant)

    async def purge(self, now: datetime | None = None) -> PurgeReport:
        """Delete finished runs past their tenant's retention, their workspaces too; one
        ``runs.purged`` audit event per tenant that lost runs (counts only)."""
        now = now or datetime.now(UTC)
        async with self.db.acquire() as conn:
            overrides = await repo.retentions(conn)
        total = Erased()
        for step in purge_plan(now, self.default_retention_s, overrides):
            total += await self.store.purge_finished(step.before, step.tenant, exclude=step.exclude)
        workspaces = await asyncio.to_thread(remove_workspaces, self.data_dir, total.run_ids)
        for tenant, n in sorted(total.by_tenant.items()):
            seconds = overrides.get(tenant, self.default_retention_s)
            await self._audit(
                tenant, et.RUNS_PURGED, SYSTEM_ACTOR, [f"runs={n}", f"retention_s={seconds:g}"]
            )
        if total.run_ids:
            log.info("runs_purged", runs=len(total.run_ids), tenants=len(total.by_tenant))
        return PurgeReport(
            ran_at=now,
            runs=len(total.run_ids),
            by_tenant=total.by_tenant,
            rows=total.counts,
            workspaces=workspaces,
        )


def _counts(result: ErasureResult) -> list[str]:
    """The ``tenant.erased`` event's operations: numbers, nothing that was erased."""
    out = [
        f"runs={result.runs}",
        f"workspaces={result.workspaces}",
        f"api_keys_revoked={result.api_keys_revoked}",
        f"audit_keys_destroyed={result.audit_keys_destroyed}",
        f"cancelled={result.cancelled}",
    ]
    return out + [f"rows.{table}={n}" for table, n in sorted(result.rows.items())]
