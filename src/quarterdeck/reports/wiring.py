"""Builds the reports' pieces for one process from its settings (called by ``runtime.py``).

Every API process serves :class:`ReportService` (reports are read from Postgres). The
scheduler generates last month's reports on the leader of its own election (advisory lock
``locks.REPORTS`` or the ``quarterdeck-reports`` Lease): a lock borrowed from another loop that some
processes do not run could let two processes lead at once.
"""

from __future__ import annotations

from quarterdeck.config import Settings
from quarterdeck.health.electors import build_elector
from quarterdeck.health.leader import Elector
from quarterdeck.reports.schedule import ReportScheduler
from quarterdeck.reports.service import ReportService
from quarterdeck.store import locks
from quarterdeck.store.pool import Database

__all__ = ["REPORTS_KEY", "REPORTS_LEASE", "build_reports"]

REPORTS_KEY = locks.REPORTS
"""Advisory lock key of the report scheduler's elector (every key: :mod:`quarterdeck.store.locks`)."""
REPORTS_LEASE = "quarterdeck-reports"
"""Name of its Lease when ``health_leader_backend`` is ``kubernetes``."""


def build_reports(
    settings: Settings, db: Database, elector: Elector | None = None
) -> tuple[ReportService, ReportScheduler]:
    """The service, and the scheduler: the caller runs :meth:`ReportScheduler.run` as a task and
    cancels it (or calls ``stop``). ``elector``: None builds the scheduler's own, run and stopped
    with it; one given is run by the caller (tests)."""
    service = ReportService(db, settings)
    own = elector is None
    if elector is None:
        elector = build_elector(
            settings, db.url, key=REPORTS_KEY, lease=REPORTS_LEASE, role="reports"
        )
    return service, ReportScheduler(service, elector, own_elector=own)
