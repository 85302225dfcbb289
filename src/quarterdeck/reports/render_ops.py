"""The report's operational sections as views: availability, incidents, delivery, scaling and
rollouts, and the ROI estimate (see ``render_layout`` for why views exist).

Why availability shows probe rows only when there were ticks: without them coverage and probe
uptime are unknown, and a "0 %" row would read like a measurement.

Why the ROI view looks as it does: its results are estimates made from two numbers the user
supplied, so every result row says "(estimate)" and the inputs are printed right beside it, with
who supplied them; without inputs the section only says what to configure.
"""

from __future__ import annotations

from quarterdeck.reports import charts
from quarterdeck.reports.models import MonthlyReport
from quarterdeck.reports.render_view import (
    NA,
    Chart,
    SectionView,
    count,
    counts,
    empty,
    nonzero,
    number,
    pct,
    spread_row,
    table,
    usd,
    when,
)


def availability_view(r: MonthlyReport) -> SectionView:
    s = r.availability
    if not s.has_data:
        return empty("availability", "Availability", s, "availability data")
    scheduled = (
        "not recorded (a report made before maintenance windows existed)"
        if s.scheduled_downtime_minutes is None
        else number(s.scheduled_downtime_minutes, "min")
    )
    probes: tuple[tuple[str, str], ...] = ()
    if s.probe_covered_minutes is not None:
        probes = (
            ("probe coverage", f"{pct(s.probe_coverage, 2)} ({count(s.probe_ticks)} ticks)"),
            ("probe uptime", pct(s.probe_uptime, 3)),
            ("probe unhealthy time", number(s.probe_unhealthy_minutes, "min")),
        )
    stats = (
        ("uptime", pct(s.uptime, 3)),
        ("unscheduled downtime", number(s.unscheduled_downtime_minutes, "min")),
        ("scheduled downtime", scheduled),
        ("critical incidents", count(s.critical_incidents)),
        *probes,
        ("minutes in the period", number(s.period_minutes, "min", 0)),
    )
    tables = [
        *table(
            "Outages (critical incidents open)"
            if s.scheduled_downtime_minutes is None  # a version-1 report: no windows then
            else "Outages (critical incidents open outside maintenance windows)",
            ("from", "to", "minutes", "incidents"),
            (
                (when(o.start), when(o.end), number(o.minutes), ", ".join(o.incident_ids))
                for o in s.outages
            ),
            numeric_from=2,
        ),
        *table(
            "Maintenance windows (scheduled downtime)",
            ("from", "to", "reason", "declared", "minutes in period"),
            (
                (
                    when(w.starts_at),
                    when(w.ends_at),
                    w.reason,
                    when(w.created_at) + (f" by {w.created_by}" if w.created_by else ""),
                    number(w.minutes),
                )
                for w in s.maintenance
            ),
            numeric_from=4,
        ),
        *table(
            "Failing checks seen by the health monitor (outside maintenance windows)",
            ("check", "minutes failing"),
            ((c.key, number(c.minutes)) for c in s.unhealthy_by_check),
        ),
    ]
    return SectionView(
        "availability", "Availability", True, s.note, stats, tuple(tables), (), s.definition
    )


def incidents_view(r: MonthlyReport) -> SectionView:
    s = r.incidents
    if not s.has_data:
        return empty("incidents", "Incidents", s, "incident")
    res = s.resolution
    stats = (
        ("incidents opened", count(s.total)),
        ("resolved", count(s.resolved)),
        ("open at the period end", count(s.open_at_end)),
        (
            "auto-recovered",
            f"{count(s.auto_recovered)} ({pct(s.auto_recovered_share)} of resolved)",
        ),
        ("human interventions", count(s.human_interventions)),
        ("time to resolve, p50", number(res.p50_minutes, "min")),
        ("time to resolve, p90", number(res.p90_minutes, "min")),
        ("time to resolve, max", number(res.max_minutes, "min")),
        ("time to resolve, mean", number(res.mean_minutes, "min")),
    )
    buckets = s.resolution_histogram
    tables = [
        *table(
            "Time to resolve",
            ("time to resolve", "incidents"),
            ((b.label, count(b.count)) for b in buckets),
            detail=True,
        ),
        *counts("Incidents by severity", "severity", s.by_severity),
        *counts("Incidents by source", "source", s.by_source),
        *table(
            "Longest incidents",
            ("title", "service", "severity", "opened", "resolved by", "minutes"),
            (
                (
                    i.title,
                    i.service,
                    i.severity,
                    when(i.opened_at),
                    "still open" if i.ongoing else (i.resolved_by or NA),
                    number(i.minutes),
                )
                for i in s.longest
            ),
            numeric_from=5,
        ),
    ]
    chart: list[Chart] = []
    if nonzero(b.count for b in buckets):
        chart.append(
            Chart(
                "Time to resolve (resolved incidents)",
                lambda: charts.mttr_histogram(
                    [b.label for b in buckets], [b.count for b in buckets]
                ),
            )
        )
    return SectionView("incidents", "Incidents", True, s.note, stats, tuple(tables), tuple(chart))


def delivery_view(r: MonthlyReport) -> SectionView:
    s = r.delivery
    if not s.has_data:
        return empty("delivery", "Delivery", s, "delivery data")
    stats = (
        ("runs that ended", count(s.finished_runs)),
        ("runs that produced a diff", count(s.runs_with_diff)),
        ("share with a diff", pct(s.diff_share)),
        ("succeeded with a diff", count(s.succeeded_with_diff)),
    )
    spreads = table(
        "Quality and coverage of changed code",
        ("measure", "runs", "p10", "p50", "p90", "min", "max"),
        (
            row
            for row, n in (
                (spread_row("quality score", s.quality_score, ""), s.quality_score.count),
                (spread_row("test coverage", s.coverage_percent, "%"), s.coverage_percent.count),
            )
            if n
        ),
    )
    return SectionView("delivery", "Delivery", True, s.note, stats, tuple(spreads))


def operations_view(r: MonthlyReport) -> SectionView:
    s = r.operations
    if not s.has_data:
        return empty("operations", "Scaling and rollouts", s, "scaler or rollout activity")
    sc, ro = s.scaler, s.rollouts
    stats = (
        ("scaler decisions", count(sc.decisions)),
        ("scaler decisions applied", count(sc.applied)),
        ("scaler errors", count(sc.errors)),
        ("rollouts started", count(ro.started)),
        ("rollouts completed", count(ro.completed)),
        ("rollouts rolled back", count(ro.rolled_back)),
        ("rollouts aborted", count(ro.aborted)),
        ("rollouts in progress", count(ro.in_progress)),
    )
    tables = counts("Scaler decisions by direction", "direction", sc.by_direction)
    return SectionView("operations", "Scaling and rollouts", True, s.note, stats, tuple(tables))


def roi_view(r: MonthlyReport) -> SectionView:
    s = r.roi
    title = "Return on investment (estimate)"
    if not s.has_data:
        note = s.note or (
            "No estimate: supply an hourly cost and the minutes a successful run saves "
            "(the report's ROI inputs) to get one."
        )
        return SectionView("roi", title, False, note)
    source = {"request": "this request", "settings": "the settings"}.get(s.inputs.source or "", NA)
    inputs = table(
        "Inputs (supplied by the user, not measured)",
        ("input", "value"),
        (
            ("hourly cost", usd(s.inputs.hourly_cost_usd)),
            (
                "minutes saved per successful run",
                number(s.inputs.minutes_saved_per_successful_run, "min"),
            ),
            ("supplied by", source),
        ),
    )
    results = table(
        "Estimate",
        ("figure", "value"),
        (
            ("successful runs (measured)", count(s.successful_runs)),
            ("hours saved (estimate)", number(s.hours_saved, "h")),
            ("value of the hours saved (estimate)", usd(s.value_usd)),
            ("total cost (measured)", usd(s.cost_usd)),
            ("net value (estimate)", usd(s.net_usd)),
            ("ROI (estimate)", pct(s.roi)),
        ),
    )
    return SectionView("roi", title, True, s.note, (), tuple(inputs + results), (), s.formula)
