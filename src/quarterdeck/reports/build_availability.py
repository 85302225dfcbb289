"""The report's availability section: incidents, maintenance windows and probe history.

Why three sources: a critical incident is an outage Quarterdeck can vouch for (opened by the
health monitor, Alertmanager or a person), so the union of their open intervals is the
downtime; a maintenance window declared by an operator makes the downtime inside it scheduled,
so it is cut out of the outages and out of the period uptime is measured over; and the health
monitor's ticks say when the platform was actually *observed*, and how, so the section also
gives probe coverage (the rest of the period is unknown, not up) and probe uptime, with the
minutes each check spent failing. Incidents stay the headline: a probe sees one replica's view
every 10 s, while an incident is what someone or something declared an outage.
"""

from __future__ import annotations

import asyncpg

from quarterdeck.reports import availability_repository as av_repo
from quarterdeck.reports import incident_repository as inc_repo
from quarterdeck.reports.build import Period
from quarterdeck.reports.compute import (
    ratio,
    subtract_intervals,
    total_minutes,
    union_minutes,
)
from quarterdeck.reports.models import (
    AvailabilitySection,
    CheckMinutes,
    DowntimeInterval,
    MaintenanceRow,
)

__all__ = ["NO_PROBES_NOTE", "SCHEDULED_NOTE", "availability"]

SCHEDULED_NOTE = (
    "Scheduled downtime is the maintenance windows declared for the period (`quarterdeck "
    "maintenance add`); unscheduled downtime is critical incidents' open time outside them, and "
    "uptime is measured over the period minus the scheduled downtime."
)
NO_PROBES_NOTE = (
    "The health monitor recorded no probes in this period (no leader was running, or the "
    "probe history was not kept yet), so probe coverage and probe uptime are unknown."
)


async def availability(
    conn: asyncpg.Connection,
    p: Period,
    *,
    activity: bool,
    probes: asyncpg.Record | None = None,
) -> AvailabilitySection:
    """Over the part of the period that has happened (all of it once the month is over).
    ``activity``: runs or gateway calls were recorded; with none of them, no critical incident,
    no window and no probe, there is nothing to say uptime of (a month before the deployment
    existed is not 100 % up). ``probes``: the probe totals of the observed period when the
    caller already has them (they are the platform's, the same in every tenant's report)."""
    end = p.observed_end
    period_minutes = (end - p.start).total_seconds() / 60.0
    spans = await inc_repo.critical_spans(conn, p.start, end)
    windows = await av_repo.maintenance_windows(conn, p.start, p.end)
    if probes is None:
        probes = await av_repo.probe_totals(conn, p.start, end)
    ticks = int(probes["ticks"])
    if not spans and not activity and not windows and ticks == 0:
        return AvailabilitySection(
            has_data=False,
            note=f"Nothing was recorded in {p.month} (no runs, gateway calls, critical "
            "incidents, maintenance windows or health probes), so there is no availability "
            "to report.",
            period_minutes=period_minutes,
        )
    scheduled = union_minutes(
        ((str(w["id"]), w["starts_at"], w["ends_at"]) for w in windows), p.start, end
    )
    outages = subtract_intervals(
        union_minutes(
            ((str(s["id"]), s["opened_at"], s["resolved_at"]) for s in spans), p.start, end
        ),
        scheduled,
    )
    scheduled_minutes = total_minutes(scheduled)
    down = total_minutes(outages)
    measured = period_minutes - scheduled_minutes
    platform = p.tenant is None
    return AvailabilitySection(
        has_data=period_minutes > 0,
        note=SCHEDULED_NOTE if ticks else f"{SCHEDULED_NOTE} {NO_PROBES_NOTE}",
        period_minutes=period_minutes,
        unscheduled_downtime_minutes=down,
        scheduled_downtime_minutes=scheduled_minutes,
        uptime=None if measured <= 0 else 1.0 - down / measured,
        critical_incidents=len(spans),
        outages=[
            DowntimeInterval(
                start=i.start,
                end=i.end,
                minutes=i.minutes,
                incident_ids=list(i.ids) if platform else [],
            )
            for i in outages
        ],
        maintenance=[
            MaintenanceRow(
                id=w["id"],
                starts_at=w["starts_at"],
                ends_at=w["ends_at"],
                minutes=total_minutes(
                    union_minutes([(w["id"], w["starts_at"], w["ends_at"])], p.start, end)
                ),
                reason=w["reason"],
                created_by=w["created_by"] if platform else None,
                created_at=w["created_at"],
            )
            for w in windows
        ],
    ).model_copy(update=_probe_fields(probes, period_minutes))


def _probe_fields(probes: asyncpg.Record, period_minutes: float) -> dict[str, object]:
    """The section's probe figures (none without a tick: they stay null, unknown)."""
    ticks = int(probes["ticks"])
    if ticks == 0:
        return {}
    covered = float(probes["covered_s"]) / 60.0
    return {
        "probe_ticks": ticks,
        "probe_covered_minutes": covered,
        "probe_coverage": ratio(covered, period_minutes),
        "probe_uptime": ratio(float(probes["open_healthy_s"]), float(probes["open_s"])),
        "probe_unhealthy_minutes": float(probes["open_unhealthy_s"]) / 60.0,
        "unhealthy_by_check": [
            CheckMinutes(key=name, minutes=float(seconds) / 60.0)
            for name, seconds in zip(probes["check_names"], probes["check_seconds"], strict=True)
        ],
    }
