"""The tamper-evident, encrypted audit log. Design and guarantees: README.md in this package.

log = AuditLog.from_settings(settings, db)
await log.start()
await log.record(AuditEvent(event_type="run.created", tenant="acme", actor="key:abc123"))
report = await log.verify()
await log.aclose()

The names below are imported on first use (:mod:`quarterdeck.kit.lazy`): every ``quarterdeck``
command goes through this package for ``audit.cli``, and the service brings asyncpg and settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quarterdeck.kit.lazy import lazy_exports

if TYPE_CHECKING:
    from quarterdeck.security.audit.keys import AuditKeys
    from quarterdeck.security.audit.models import (
        Anomaly,
        AuditEvent,
        EventFilter,
        Problem,
        ProblemKind,
        StoredEvent,
        VerifyReport,
    )
    from quarterdeck.security.audit.service import AuditLog

__all__ = [
    "Anomaly",
    "AuditEvent",
    "AuditKeys",
    "AuditLog",
    "EventFilter",
    "Problem",
    "ProblemKind",
    "StoredEvent",
    "VerifyReport",
]
__getattr__ = lazy_exports(
    __name__,
    {
        "quarterdeck.security.audit.keys": ("AuditKeys",),
        "quarterdeck.security.audit.models": (
            "Anomaly",
            "AuditEvent",
            "EventFilter",
            "Problem",
            "ProblemKind",
            "StoredEvent",
            "VerifyReport",
        ),
        "quarterdeck.security.audit.service": ("AuditLog",),
    },
)
