"""The tamper-evident, encrypted audit log. Design and guarantees: README.md in this package.

log = AuditLog.from_settings(settings, db)
await log.start()
await log.record(AuditEvent(event_type="run.created", tenant="acme", actor="key:abc123"))
report = await log.verify()
await log.aclose()
"""

from __future__ import annotations

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
