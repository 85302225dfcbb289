"""Generates last month's reports on the first of each month, on the leader only.

Why a leader (advisory lock ``locks.REPORTS``, or the ``quarterdeck-reports`` Lease, of its own as
the scaler's and the rollout controller's are): every replica could compute the report, but one
writer is enough and two would compute the same month twice. Why hourly and "not stored yet"
rather than a cron at 00:00 on the 1st: a leader that was down at midnight, or a failed attempt,
still produces the report within the hour once one leads; storing is an upsert, so a rare
double run (leadership moving mid-generation) overwrites the same rows with the same figures.

:func:`due_month` is the pure decision, tested with a fake ``now``; the loop only asks it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime

import structlog

from quarterdeck.health.leader import Elector
from quarterdeck.health.loop import LeaderLoop
from quarterdeck.kit.clock import utcnow
from quarterdeck.reports.compute import last_full_month
from quarterdeck.reports.service import ReportService

__all__ = ["CHECK_INTERVAL_S", "ReportScheduler", "due_month"]

log = structlog.get_logger(__name__)

CHECK_INTERVAL_S = 3600.0
"""How often the leader looks for a month to generate."""


def due_month(now: datetime, stored_months: Collection[str]) -> str | None:
    """The month whose all-tenant report should be generated now: last month, once it is over
    (always, on or after the 1st), unless it is stored already."""
    month = last_full_month(now)
    return None if month in stored_months else month


class ReportScheduler(LeaderLoop):
    """The leader's loop: every ``interval_s``, generate and store what :func:`due_month` says
    (the all-tenant report, then one per tenant with activity that month)."""

    name = "reports"

    def __init__(
        self,
        service: ReportService,
        elector: Elector,
        *,
        interval_s: float = CHECK_INTERVAL_S,
        own_elector: bool = False,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__(elector, interval_s=interval_s, own_elector=own_elector)
        self.service = service
        self.clock = clock

    async def tick(self) -> list[str | None]:
        """One pass: nothing unless leading and a month is due; else store its reports.

        Returns the tenants stored (None: the all-tenant report), for tests and logs. Tenants'
        reports are stored before the all-tenant one, which marks the month done: a pass cut
        short is retried whole an hour later.
        """
        if not self.elector.is_leader:
            return []
        month = due_month(self.clock(), await self.service.stored_months(None))
        if month is None:
            return []
        done: list[str | None] = []
        for tenant in await self.service.active_tenants(month):
            await self.service.generate_and_store(month, tenant)
            done.append(tenant)
        await self.service.generate_and_store(month, None)
        done.append(None)
        log.info("reports.generated", month=month, tenants=len(done) - 1)
        return done
