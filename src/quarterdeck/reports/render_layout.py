"""What the monthly report shows, decided once for every human-readable format.

Why a layout between the model and the formats: Markdown, HTML and PDF must show the same
figures with the same wording, and the rule "a section without data shows its note, never an
empty table or chart" must hold in all of them. So this module turns a ``MonthlyReport`` into
plain section views (headline figures as formatted strings, tables with at least one row, charts
as deferred drawings) and the renderers only lay those out. ROI results are labelled estimates
and shown beside the user's inputs they came from.

Charts are deferred (``Chart.draw``) so the Markdown path never imports matplotlib.
"""

from __future__ import annotations

from quarterdeck.reports import charts
from quarterdeck.reports.models import MonthlyReport
from quarterdeck.reports.render_ops import (
    availability_view,
    delivery_view,
    incidents_view,
    operations_view,
    roi_view,
)
from quarterdeck.reports.render_view import (
    NO_DATA,
    Chart,
    ReportView,
    SectionView,
    count,
    counts,
    empty,
    gateway_groups,
    month_title,
    nonzero,
    number,
    pct,
    quantile_row,
    run_groups,
    table,
    usd,
    when,
)

# ---------------------------------------------------------------------------------------------
# One function per section


def _runs(r: MonthlyReport) -> SectionView:
    s = r.runs
    if not s.has_data:
        return empty("runs", "Runs", s, "run")
    days = [d.day for d in s.per_day]
    tables = [
        *counts("Runs by final status", "status", s.by_status),
        *run_groups("Runs by agent type", "agent type", s.by_agent_type),
        *run_groups("Runs by model", "model", s.by_model),
        *table(
            "Runs per day",
            ("day", "total", "succeeded", "failed", "timed out", "cancelled", "unfinished"),
            (
                (
                    f"{d.day:%Y-%m-%d}",
                    *(
                        count(v)
                        for v in (
                            d.total,
                            d.succeeded,
                            d.failed,
                            d.timed_out,
                            d.cancelled,
                            d.unfinished,
                        )
                    ),
                )
                for d in s.per_day
            ),
            detail=True,
        ),
    ]
    chart: list[Chart] = []
    if nonzero(d.total for d in s.per_day):
        rest = [d.cancelled + d.unfinished for d in s.per_day]
        chart.append(
            Chart(
                "Runs per day",
                lambda: charts.runs_per_day(
                    days,
                    [d.succeeded for d in s.per_day],
                    [d.failed + d.timed_out for d in s.per_day],
                    rest if nonzero(rest) else None,  # no legend entry for a series of zeros
                ),
            )
        )
    stats = (
        ("runs submitted", count(s.total)),
        ("runs that ended", count(s.terminal)),
        ("succeeded", count(s.succeeded)),
        ("success rate", pct(s.success_rate)),
        ("first-attempt success rate", pct(s.first_attempt_success_rate)),
        ("runs retried", count(s.retried_runs)),
    )
    return SectionView(
        "runs", "Runs", True, s.note, stats, tuple(tables), tuple(chart), s.definition
    )


def _gateway(r: MonthlyReport) -> SectionView:
    s = r.gateway
    if not s.has_data:
        return empty("gateway", "Gateway calls", s, "gateway call")
    tables = [
        *gateway_groups("Gateway calls by model", "model", s.by_model),
        *gateway_groups("Gateway calls by tenant", "tenant", s.by_tenant or []),
        *table(
            "Gateway calls per day",
            ("day", "calls", "2xx", "errors", "cost"),
            (
                (f"{d.day:%Y-%m-%d}", count(d.calls), count(d.ok), count(d.errors), usd(d.cost_usd))
                for d in s.per_day
            ),
            detail=True,
        ),
    ]
    chart: list[Chart] = []
    if nonzero(d.calls for d in s.per_day):
        days = [d.day for d in s.per_day]
        chart.append(
            Chart(
                "Gateway calls per day",
                lambda: charts.gateway_calls_per_day(
                    days, [d.calls for d in s.per_day], [d.calls - d.ok for d in s.per_day]
                ),
            )
        )
    stats = (
        ("calls", count(s.calls)),
        ("answered 2xx", count(s.ok)),
        ("success rate", pct(s.success_rate)),
        ("client disconnected", count(s.client_disconnected)),
    )
    return SectionView("gateway", "Gateway calls", True, s.note, stats, tuple(tables), tuple(chart))


def _latency(r: MonthlyReport) -> SectionView:
    s = r.latency
    if not s.has_data:
        return empty("latency", "Latency", s, "latency sample")
    head = ("measurement", "samples", "p50", "p95", "p99")
    overall = table(
        "Latency percentiles",
        head,
        (
            row
            for row, q in (
                (quantile_row("run duration", s.run_duration_s, "s", 2), s.run_duration_s),
                (quantile_row("queue wait", s.queue_wait_s, "s", 2), s.queue_wait_s),
                (
                    quantile_row("gateway call", s.gateway_duration_ms, "ms", 0),
                    s.gateway_duration_ms,
                ),
                (quantile_row("gateway first byte", s.gateway_ttfb_ms, "ms", 0), s.gateway_ttfb_ms),
            )
            if q.count
        ),
    )
    weeks = s.weekly
    labels = [f"week of {w.week_start:%d %b}" for w in weeks]
    weekly = table(
        "Latency per week",
        (
            "week of",
            "runs",
            "run p50",
            "run p95",
            "run p99",
            "calls",
            "call p50",
            "call p95",
            "call p99",
        ),
        (
            (
                f"{w.week_start:%Y-%m-%d}",
                count(w.runs),
                *(number(v, "s", 2) for v in (w.run_p50_s, w.run_p95_s, w.run_p99_s)),
                count(w.calls),
                *(
                    number(v, "ms", 0)
                    for v in (w.gateway_p50_ms, w.gateway_p95_ms, w.gateway_p99_ms)
                ),
            )
            for w in weeks
        ),
        detail=True,
    )
    chart: list[Chart] = []
    if nonzero(w.run_p50_s for w in weeks):
        chart.append(
            Chart(
                "Run duration per week",
                lambda: charts.latency_percentiles(
                    labels,
                    [w.run_p50_s for w in weeks],
                    [w.run_p95_s for w in weeks],
                    [w.run_p99_s for w in weeks],
                ),
            )
        )
    if nonzero(w.gateway_p50_ms for w in weeks):
        chart.append(
            Chart(
                "Gateway call latency per week",
                lambda: charts.latency_percentiles(
                    labels,
                    [w.gateway_p50_ms for w in weeks],
                    [w.gateway_p95_ms for w in weeks],
                    [w.gateway_p99_ms for w in weeks],
                    unit="ms",
                ),
            )
        )
    return SectionView(
        "latency", "Latency", True, s.note, (), tuple(overall + weekly), tuple(chart)
    )


def _cost(r: MonthlyReport) -> SectionView:
    s = r.cost
    if not s.has_data:
        return empty("cost", "Cost", s, "spend")
    stats = [
        ("total", usd(s.total_usd)),
        ("runs", usd(s.runs_usd)),
        ("gateway calls", usd(s.gateway_usd)),
        ("per run", usd(s.per_run_usd)),
        ("per successful run", usd(s.per_successful_run_usd)),
        ("prompt-cache savings", usd(s.cache.savings_usd)),
    ]
    if s.unknown_cost_runs:
        stats.append(("runs with unknown cost", count(s.unknown_cost_runs)))
    if s.estimated_cost_calls:
        stats.append(("gateway calls with estimated cost", count(s.estimated_cost_calls)))
    if s.cache.unpriced_models:
        stats.append(("cache reads without a known price", ", ".join(s.cache.unpriced_models)))
    head = ("runs", "gateway", "total")
    tables = [
        *table(
            "Cost by model",
            ("model", *head),
            ((g.key, usd(g.runs_usd), usd(g.gateway_usd), usd(g.total_usd)) for g in s.by_model),
        ),
        *table(
            "Cost by tenant",
            ("tenant", *head),
            ((g.key, usd(g.runs_usd), usd(g.gateway_usd), usd(g.total_usd)) for g in s.by_tenant),
        ),
        *table(
            "Budget use",
            ("tenant", "monthly limit", "daily limit", "spent", "used"),
            (
                (b.tenant, usd(b.monthly_usd), usd(b.daily_usd), usd(b.spent_usd), pct(b.used))
                for b in s.budgets
            ),
        ),
    ]
    chart: list[Chart] = []
    if nonzero(g.total_usd for g in s.by_model):
        models = s.by_model
        chart.append(
            Chart(
                "Cost by model",
                lambda: charts.cost_per_model(
                    [g.key for g in models], [g.total_usd for g in models]
                ),
            )
        )
    return SectionView(
        "cost", "Cost", True, s.note, tuple(stats), tuple(tables), tuple(chart), s.definition
    )


SECTIONS = (
    _runs,
    _gateway,
    _latency,
    availability_view,
    incidents_view,
    _cost,
    delivery_view,
    operations_view,
    roi_view,
)


def layout(report: MonthlyReport) -> ReportView:
    """The report as the formats show it: header, headline figures, then every section."""
    r = report
    partial = (
        f"The month was not over when this report was generated ({when(r.generated_at)}): "
        "its figures cover the month so far."
        if r.partial
        else None
    )
    # A section without data shows "no data" here too, not a zero that reads like a measurement.
    headline = tuple(
        (label, value if has_data else NO_DATA)
        for label, value, has_data in (
            ("runs", count(r.runs.total), r.runs.has_data),
            ("run success rate", pct(r.runs.success_rate), r.runs.has_data),
            ("gateway calls", count(r.gateway.calls), r.gateway.has_data),
            ("uptime", pct(r.availability.uptime, 3), r.availability.has_data),
            ("incidents", count(r.incidents.total), r.incidents.has_data),
            (
                "time to resolve, p50",
                number(r.incidents.resolution.p50_minutes, "min"),
                r.incidents.has_data,
            ),
            ("total cost", usd(r.cost.total_usd), r.cost.has_data),
        )
    )
    return ReportView(
        title=f"Quarterdeck monthly report: {month_title(r.month)}",
        scope="all tenants" if r.tenant is None else f"tenant {r.tenant}",
        period=f"{when(r.period_start)} to {when(r.period_end)} (end exclusive)",
        generated=when(r.generated_at),
        partial_note=partial,
        headline=headline,
        sections=tuple(section(r) for section in SECTIONS),
    )
