"""Incidents: deduplicated records of something wrong, their timeline, and who was told.

Sources (health checks, auto-recovery, the Alertmanager webhook, humans) all go through
:class:`IncidentService`; notifications leave through :class:`Notifier`'s outbox. Build both for
a process with :func:`build_incident_service`.
"""

from __future__ import annotations

from quarterdeck.config import Settings
from quarterdeck.incidents.models import (
    Incident,
    IncidentDetail,
    IncidentStatus,
    Kind,
    ResolvedBy,
    Severity,
    Source,
)
from quarterdeck.incidents.notify import NotificationSettings, Notifier
from quarterdeck.incidents.service import IncidentService
from quarterdeck.store.pool import Database

__all__ = [
    "Incident",
    "IncidentDetail",
    "IncidentService",
    "IncidentStatus",
    "Kind",
    "NotificationSettings",
    "Notifier",
    "ResolvedBy",
    "Severity",
    "Source",
    "build_incident_service",
]


def build_incident_service(
    settings: Settings,
    db: Database,
    notifications: NotificationSettings | None = None,
) -> IncidentService:
    """The service a process runs: notification channels from ``QUARTERDECK_NOTIFY_*`` settings.

    ``notifications`` overrides what the app settings say (tests configure channels directly).
    """
    ns = notifications or NotificationSettings.from_settings(settings)
    return IncidentService(db, Notifier(ns, db), escalate_after_s=ns.escalate_after_s)
