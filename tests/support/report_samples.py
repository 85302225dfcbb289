"""Monthly reports built by hand for the renderers' tests (issue 21): one month with data in
every section but one, one empty month, and a `name` to put wherever user data goes (tenant,
agent type, model, incident title) so escaping can be tested with a hostile value.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from quarterdeck.reports.models import (
    AvailabilitySection,
    BudgetUse,
    CacheSavings,
    CostGroup,
    CostSection,
    Count,
    DeliverySection,
    DowntimeInterval,
    GatewayDay,
    GatewayGroup,
    GatewaySection,
    HistogramBucket,
    IncidentRow,
    IncidentsSection,
    LatencySection,
    LatencyWeek,
    MonthlyReport,
    OperationsSection,
    Quantiles,
    ResolutionStats,
    RoiInputs,
    RoiSection,
    RunGroup,
    RunsDay,
    RunsSection,
    Spread,
)

HOSTILE = "<script>alert(1)</script>"
START = datetime(2026, 11, 1, tzinfo=UTC)
END = datetime(2026, 12, 1, tzinfo=UTC)
DAYS = [date(2026, 11, 1) + timedelta(days=i) for i in range(30)]
OPS_NOTE = "The scaler and the rollout controller recorded nothing this month."


def full_report(tenant: str | None = "acme", name: str = "acme") -> MonthlyReport:
    """A month with data in every section but operations; `name` is put wherever user data goes."""
    per_day = [
        RunsDay(
            day=d,
            total=8 + i % 5,
            succeeded=6 + i % 4,
            failed=i % 3 and 1,
            timed_out=int(i % 7 == 0),
            cancelled=0,
            unfinished=0,
        )
        for i, d in enumerate(DAYS)
    ]
    per_day = [
        p.model_copy(update={"total": p.succeeded + p.failed + p.timed_out}) for p in per_day
    ]
    total = sum(p.total for p in per_day)
    succeeded = sum(p.succeeded for p in per_day)
    gw_days = [
        GatewayDay(day=d, calls=40 + 3 * i, ok=38 + 3 * i, errors=2, cost_usd=1.5 + i / 10)
        for i, d in enumerate(DAYS)
    ]
    calls, ok = sum(g.calls for g in gw_days), sum(g.ok for g in gw_days)
    weeks = [date(2026, 10, 26) + timedelta(weeks=i) for i in range(6)]
    weekly = [
        LatencyWeek(
            week_start=w,
            runs=50 + i,
            run_p50_s=40.0 + i,
            run_p95_s=90.0 + 3 * i,
            run_p99_s=150.0 + 5 * i,
            calls=280,
            gateway_p50_ms=800.0 + 10 * i,
            gateway_p95_ms=2100.0,
            gateway_p99_ms=3900.0 - 50 * i,
        )
        for i, w in enumerate(weeks)
    ]
    return MonthlyReport(
        month="2026-11",
        tenant=tenant,
        generated_at=datetime(2026, 12, 1, 0, 5, tzinfo=UTC),
        period_start=START,
        period_end=END,
        partial=False,
        runs=RunsSection(
            has_data=True,
            total=total,
            terminal=total,
            succeeded=succeeded,
            success_rate=succeeded / total,
            per_day=per_day,
            by_status=[
                Count(key="succeeded", count=succeeded),
                Count(key="failed", count=total - succeeded),
            ],
            first_attempt_succeeded=succeeded - 9,
            retried_succeeded=9,
            first_attempt_success_rate=(succeeded - 9) / total,
            retried_runs=11,
            by_agent_type=[
                RunGroup(
                    key=name,
                    total=total,
                    succeeded=succeeded,
                    terminal=total,
                    success_rate=succeeded / total,
                    cost_usd=123.45,
                )
            ],
            by_model=[
                RunGroup(
                    key="claude-sonnet-4-5",
                    total=total,
                    succeeded=succeeded,
                    terminal=total,
                    success_rate=succeeded / total,
                    cost_usd=123.45,
                )
            ],
        ),
        gateway=GatewaySection(
            has_data=True,
            calls=calls,
            ok=ok,
            success_rate=ok / calls,
            client_disconnected=4,
            per_day=gw_days,
            by_model=[
                GatewayGroup(
                    key="claude-sonnet-4-5",
                    calls=calls - 100,
                    ok=ok - 100,
                    success_rate=0.95,
                    input_tokens=9_876_543,
                    output_tokens=1_234_567,
                    cost_usd=70.0,
                ),
                GatewayGroup(
                    key=name,
                    calls=100,
                    ok=100,
                    success_rate=1.0,
                    input_tokens=1000,
                    output_tokens=10,
                    cost_usd=3.25,
                ),
            ],
            by_tenant=[
                GatewayGroup(
                    key=name,
                    calls=calls,
                    ok=ok,
                    success_rate=ok / calls,
                    input_tokens=1,
                    output_tokens=1,
                    cost_usd=73.25,
                )
            ],
        ),
        latency=LatencySection(
            has_data=True,
            run_duration_s=Quantiles(count=total, p50=42.5, p95=95.25, p99=171.0),
            queue_wait_s=Quantiles(count=total, p50=0.8, p95=4.1, p99=9.9),
            gateway_duration_ms=Quantiles(count=calls, p50=812.0, p95=2150.0, p99=3880.0),
            weekly=weekly,
        ),
        availability=AvailabilitySection(
            has_data=True,
            period_minutes=43200.0,
            unscheduled_downtime_minutes=21.5,
            uptime=1 - 21.5 / 43200,
            critical_incidents=2,
            outages=[
                DowntimeInterval(
                    start=datetime(2026, 11, 9, 3, 0, tzinfo=UTC),
                    end=datetime(2026, 11, 9, 3, 21, 30, tzinfo=UTC),
                    minutes=21.5,
                    incident_ids=["inc_1", "inc_2"],
                )
            ],
        ),
        incidents=IncidentsSection(
            has_data=True,
            total=7,
            resolved=6,
            open_at_end=1,
            auto_recovered=4,
            auto_recovered_share=4 / 6,
            human_interventions=2,
            by_severity=[Count(key="critical", count=2), Count(key="warning", count=5)],
            by_source=[Count(key="health", count=7)],
            resolution=ResolutionStats(
                count=6, p50_minutes=8.5, p90_minutes=47.0, max_minutes=95.0, mean_minutes=21.0
            ),
            resolution_histogram=[
                HistogramBucket(label="<5 min", lower=0, upper=5, count=2),
                HistogramBucket(label="5-15 min", lower=5, upper=15, count=2),
                HistogramBucket(label="15-60 min", lower=15, upper=60, count=1),
                HistogramBucket(label="60+ min", lower=60, upper=None, count=1),
            ],
            longest=[
                IncidentRow(
                    id="inc_1",
                    title=f"worker down for {name}",
                    service="worker",
                    severity="critical",
                    source="health",
                    opened_at=datetime(2026, 11, 9, 3, 0, tzinfo=UTC),
                    resolved_at=datetime(2026, 11, 9, 4, 35, tzinfo=UTC),
                    resolved_by="alice",
                    minutes=95.0,
                    ongoing=False,
                )
            ],
        ),
        cost=CostSection(
            has_data=True,
            total_usd=196.70,
            runs_usd=123.45,
            gateway_usd=73.25,
            per_run_usd=123.45 / total,
            per_successful_run_usd=123.45 / succeeded,
            by_tenant=[CostGroup(key=name, runs_usd=123.45, gateway_usd=73.25, total_usd=196.70)],
            by_model=[
                CostGroup(
                    key="claude-sonnet-4-5", runs_usd=123.45, gateway_usd=70.0, total_usd=193.45
                ),
                CostGroup(key=name, runs_usd=0.0, gateway_usd=3.25, total_usd=3.25),
            ],
            cache=CacheSavings(
                cache_read_tokens=5_000_000,
                at_input_price_usd=15.0,
                at_cache_price_usd=1.5,
                savings_usd=13.5,
            ),
            budgets=[
                BudgetUse(
                    tenant=name,
                    monthly_usd=500.0,
                    daily_usd=None,
                    spent_usd=196.70,
                    used=196.70 / 500,
                )
            ],
        ),
        delivery=DeliverySection(
            has_data=True,
            finished_runs=total,
            runs_with_diff=150,
            diff_share=150 / total,
            succeeded_with_diff=140,
            quality_score=Spread(count=140, p10=0.61, p50=0.82, p90=0.95, min=0.3, max=1.0),
            coverage_percent=Spread(count=120, p10=55.0, p50=78.5, p90=92.0, min=20.0, max=100.0),
        ),
        operations=OperationsSection(has_data=False, note=OPS_NOTE),
        roi=RoiSection(
            has_data=True,
            inputs=RoiInputs(
                hourly_cost_usd=85.0, minutes_saved_per_successful_run=30.0, source="settings"
            ),
            successful_runs=succeeded,
            hours_saved=succeeded * 0.5,
            value_usd=succeeded * 0.5 * 85,
            cost_usd=196.70,
            net_usd=succeeded * 0.5 * 85 - 196.70,
            roi=(succeeded * 0.5 * 85 - 196.70) / 196.70,
        ),
    )


EMPTY_NOTES = {
    "runs": "No runs were submitted in November 2026.",
    "gateway": "No gateway calls were made in November 2026.",
    "latency": "No run or gateway call finished, so there is no latency to report.",
    "availability": "No probes or incidents were recorded.",
    "incidents": "No incidents were opened in November 2026.",
    "cost": "Nothing was spent in November 2026.",
    "delivery": "No run ended, so no diffs or quality scores.",
    "operations": OPS_NOTE,
    "roi": "Set reports.hourly_cost_usd and reports.minutes_saved_per_successful_run for an estimate.",
}


def empty_report() -> MonthlyReport:
    n = EMPTY_NOTES
    return MonthlyReport(
        month="2026-11",
        tenant=None,
        generated_at=datetime(2026, 11, 20, tzinfo=UTC),
        period_start=START,
        period_end=END,
        partial=True,
        runs=RunsSection(has_data=False, note=n["runs"], total=0),
        gateway=GatewaySection(has_data=False, note=n["gateway"]),
        latency=LatencySection(has_data=False, note=n["latency"]),
        availability=AvailabilitySection(has_data=False, note=n["availability"]),
        incidents=IncidentsSection(has_data=False, note=n["incidents"]),
        cost=CostSection(has_data=False, note=n["cost"]),
        delivery=DeliverySection(has_data=False, note=n["delivery"]),
        operations=OperationsSection(has_data=False, note=n["operations"]),
        roi=RoiSection(has_data=False, note=n["roi"]),
    )
