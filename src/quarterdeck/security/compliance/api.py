"""``GET /v1/compliance/report``: the compliance report, from the running server.

``quarterdeck compliance report`` calls it, so the report needs an auditor (or admin) key
rather than the database credentials, and is built from the deployment's own database and audit
keys instead of whatever ``./.data`` the command happens to run in. The report counts every
tenant's keys, events and incidents, so only an all-tenant principal (tenant ``*``) may read it.

The router is made per app (:func:`router_for`): the report checks run data against the
deployment's run-retention settings, which the app knows and no registered service carries.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Query

from quarterdeck.config import Settings
from quarterdeck.exceptions import ValidationFailed
from quarterdeck.kit.wiring import provide
from quarterdeck.security.audit.models import VerifyReport
from quarterdeck.security.audit.service import AuditLog
from quarterdeck.security.auth import Permission, Principal, require
from quarterdeck.security.auth.errors import Forbidden
from quarterdeck.security.compliance.report import ComplianceReport, RunRetention, build_report

log = structlog.get_logger(__name__)
Audit = Annotated[AuditLog, Depends(provide(AuditLog))]
CanRead = Annotated[Principal, Depends(require(Permission.REPORTS_READ))]


def _period(start: datetime, end: datetime) -> None:
    for name, when in (("from", start), ("to", end)):
        if when.tzinfo is None:
            raise ValidationFailed(
                "times need a timezone (e.g. 2026-01-01T00:00:00Z)",
                errors=[{"field": name, "message": "timezone required"}],
            )
        try:
            when.astimezone(UTC)
        except OverflowError as exc:  # before year 1 (or after 9999) in UTC
            raise ValidationFailed(
                f"{name} is out of range", errors=[{"field": name, "message": "out of range"}]
            ) from exc
    if end <= start:
        raise ValidationFailed(
            "`to` must be after `from`", errors=[{"field": "to", "message": "not after from"}]
        )


def router_for(settings: Settings) -> APIRouter:
    """The router, with this deployment's run-retention settings for the GDPR Art. 17 control."""
    retention = RunRetention(settings.run_retention_days * 86_400.0, settings.run_purge_interval)
    router = APIRouter(tags=["compliance"])

    @router.get(
        "/v1/compliance/report",
        response_model=ComplianceReport,
        summary="Evidence per control (SOC 2, ISO 27001, HIPAA, GDPR) for a period",
        description="Counts and results computed from the stored data, with what Quarterdeck "
        "does not cover for each control. `verify=true` (the default) runs a full audit chain "
        "verification for the logging controls; if it cannot run, they say so. Needs "
        "`reports:read` on all tenants (tenant `*`).",
        responses={403: {"description": "A key of one tenant: the report covers every tenant."}},
    )
    async def report(
        principal: CanRead,
        audit: Audit,
        start: Annotated[
            datetime, Query(alias="from", description="Period start, RFC 3339, inclusive.")
        ],
        end: Annotated[datetime, Query(alias="to", description="Period end, exclusive.")],
        verify: Annotated[bool, Query(description="Verify the audit hash chains.")] = True,
    ) -> ComplianceReport:
        if principal.tenant_filter() is not None:
            raise Forbidden(
                "the compliance report covers every tenant: it needs a key of tenant '*'",
                permission=Permission.REPORTS_READ.value,
            )
        _period(start, end)
        checked: VerifyReport | None = None
        if verify:
            try:
                checked = await audit.verify()
            except Exception as exc:  # reported in the logging controls, not fatal
                log.warning("compliance_verify_failed", error=str(exc))
        return await build_report(audit.db, start, end, checked, retention)

    return router
