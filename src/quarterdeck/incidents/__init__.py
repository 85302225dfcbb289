"""Incidents: deduplicated records of something wrong, their timeline, and who was told.

Sources (health checks, auto-recovery, the Alertmanager webhook, humans) all go through
:class:`IncidentService`; notifications leave through :class:`Notifier`'s outbox. Build both for
a process with :func:`build_incident_service`.

The names below are imported on first use (:mod:`quarterdeck.kit.lazy`): every ``quarterdeck``
command goes through this package for ``incidents.cli``, and the service brings asyncpg and httpx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quarterdeck.kit.lazy import lazy_exports

if TYPE_CHECKING:
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
__getattr__ = lazy_exports(
    __name__,
    {
        "quarterdeck.incidents.models": (
            "Incident",
            "IncidentDetail",
            "IncidentStatus",
            "Kind",
            "ResolvedBy",
            "Severity",
            "Source",
        ),
        "quarterdeck.incidents.notify": ("NotificationSettings", "Notifier"),
        "quarterdeck.incidents.service": ("IncidentService",),
    },
)


def build_incident_service(
    settings: Settings,
    db: Database,
    notifications: NotificationSettings | None = None,
) -> IncidentService:
    """The service a process runs: notification channels from ``QUARTERDECK_NOTIFY_*`` settings.

    ``notifications`` overrides what the app settings say (tests configure channels directly).
    """
    from quarterdeck.incidents.notify import NotificationSettings, Notifier
    from quarterdeck.incidents.service import IncidentService

    ns = notifications or NotificationSettings.from_settings(settings)
    return IncidentService(db, Notifier(ns, db), escalate_after_s=ns.escalate_after_s)
