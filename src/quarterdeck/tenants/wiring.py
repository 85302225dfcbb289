"""A process's tenant-data services, built from its settings: what the composition root asks
for, so the retention and sweep intervals are read in one place."""

from __future__ import annotations

from quarterdeck.config import Settings
from quarterdeck.incidents import IncidentService
from quarterdeck.runs.store import PostgresRunStore
from quarterdeck.security.audit import AuditLog
from quarterdeck.security.auth import AuthService
from quarterdeck.store.pool import Database
from quarterdeck.tenants.maintenance import Maintenance
from quarterdeck.tenants.service import TenantData


def tenant_data(
    s: Settings, db: Database, store: PostgresRunStore, audit: AuditLog, *, auth: AuthService
) -> TenantData:
    """Tenant erasure and retention as the settings configure them (the server's and the
    ``tenants`` commands' alike)."""
    return TenantData(
        db,
        store,
        audit,
        s.data_dir,
        auth=auth,
        default_retention_s=s.run_retention_days * 86_400.0,
        erase_wait_s=s.tenant_erase_wait,
    )


def build_tenant_data(
    s: Settings,
    db: Database,
    store: PostgresRunStore,
    audit: AuditLog,
    *,
    auth: AuthService,
    incidents: IncidentService,
) -> tuple[TenantData, Maintenance | None]:
    """Tenant erasure and retention (every API process serves them), and the loop of scheduled
    purges and audit verification (None when maintenance is off; every process that runs it
    competes for an advisory lock, so one runs each task)."""
    data = tenant_data(s, db, store, audit, auth=auth)
    if not s.maintenance_enabled:
        return data, None
    return data, Maintenance(
        db,
        data,
        audit,
        incidents=incidents,
        run_purge_s=s.run_purge_interval,
        audit_purge_s=s.audit_purge_interval,
        audit_verify_s=s.audit_verify_interval,
    )
