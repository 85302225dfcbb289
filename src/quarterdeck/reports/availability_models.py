# SHAPE FROZEN
"""The monthly report's availability section: uptime from incidents, maintenance and probes.

Separate from :mod:`quarterdeck.reports.models` because it is the one section with rules of its
own (issue 21, ``REPORT_VERSION`` 2): it is measured from three sources at once (critical
incidents, declared maintenance windows, the health monitor's per-tick probe rows), keeps the
scheduled and unscheduled downtime apart and says in its ``definition`` how each figure is made.
``build_availability`` builds it; ``models`` re-exports every name and puts it in the report.

Frozen like the report itself: fields may be added, never renamed or removed.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from quarterdeck.reports.shapes import Section


class DowntimeInterval(BaseModel):
    """A merged stretch during which at least one critical incident was open (outside
    maintenance windows, from version 2)."""

    start: datetime
    end: datetime
    minutes: float
    incident_ids: list[str] = Field(default_factory=list)


class MaintenanceRow(BaseModel):
    """A maintenance window overlapping the period, as declared."""

    id: str
    starts_at: datetime
    ends_at: datetime
    minutes: float = Field(description="its part inside the (observed) period")
    reason: str
    created_by: str | None = Field(default=None, description="null in a tenant's report")
    created_at: datetime = Field(description="when it was declared (after starts_at: late)")


class CheckMinutes(BaseModel):
    """Minutes the health monitor saw one check failing (outside maintenance windows)."""

    key: str
    minutes: float


class AvailabilitySection(Section):
    period_minutes: float = 0.0
    unscheduled_downtime_minutes: float = 0.0
    scheduled_downtime_minutes: float | None = Field(
        default=None,
        description="the union of maintenance windows clipped to the period (null in "
        "version-1 reports, made before windows were recorded)",
    )
    uptime: float | None = Field(
        default=None, description="1 - unscheduled / (period - scheduled), a fraction"
    )
    critical_incidents: int = 0
    outages: list[DowntimeInterval] = Field(default_factory=list)
    maintenance: list[MaintenanceRow] = Field(default_factory=list)
    probe_ticks: int = Field(default=0, description="health-monitor ticks covering the period")
    probe_covered_minutes: float | None = Field(
        default=None, description="the union of the ticks' [at, at + interval); null: no ticks"
    )
    probe_coverage: float | None = Field(
        default=None, description="probe_covered_minutes / period_minutes (the rest is unknown)"
    )
    probe_uptime: float | None = Field(
        default=None,
        description="covered time with no critical check failing / covered time, both outside "
        "maintenance windows",
    )
    probe_unhealthy_minutes: float | None = Field(
        default=None, description="covered time with a critical check failing, outside windows"
    )
    unhealthy_by_check: list[CheckMinutes] = Field(
        default_factory=list, description="per failing check (any severity), longest first"
    )
    definition: str = Field(
        default="scheduled downtime = the union of maintenance windows, clipped to the period; "
        "unscheduled downtime = the union of the open intervals (opened_at to resolved_at, or "
        "to the period end while unresolved) of critical incidents, clipped to the period, "
        "minus the scheduled downtime; uptime = 1 - unscheduled / (period - scheduled). "
        "Probes: each health-monitor tick covers [at, at + interval); coverage = their union / "
        "period; probe uptime = covered time with no critical check failing / covered time, "
        "both outside maintenance windows; time no tick covers is unknown, neither up nor down",
    )
