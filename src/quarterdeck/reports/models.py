# SHAPE FROZEN
"""The monthly operations report as one typed record (issue 21).

Why one record with a section per concern: every format (JSON, Markdown, HTML, PDF) is rendered
from this model alone, so a figure can never differ between them, and a stored report (a JSON
column) renders the same way months later. Each section says whether it had data (``has_data``)
and, when it did not or when a figure cannot be measured, says so in words (``note``) instead of
showing a zero that looks like a measurement.

Conventions every section follows:
- money is USD as a float; durations say their unit in the field name (``_s``, ``_ms``,
  ``_minutes``);
- a ratio is a fraction in [0, 1] and is ``None`` when its denominator is 0 (0/0 is not 0 %);
- a percentile is ``None`` when there were no samples;
- days and weeks are UTC; the period is ``[period_start, period_end)``.

The :class:`Section` base and the shapes sections share are in :mod:`.shapes`, the availability
section in :mod:`.availability_models`; every name is re-exported here.

This file's shape is frozen for the renderers: fields may be added, never renamed or removed.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field

# Re-exported: the sections' shared shapes and the availability section live in their own modules.
from quarterdeck.reports.availability_models import AvailabilitySection as AvailabilitySection
from quarterdeck.reports.availability_models import CheckMinutes as CheckMinutes
from quarterdeck.reports.availability_models import DowntimeInterval as DowntimeInterval
from quarterdeck.reports.availability_models import MaintenanceRow as MaintenanceRow
from quarterdeck.reports.shapes import Count as Count
from quarterdeck.reports.shapes import HistogramBucket as HistogramBucket
from quarterdeck.reports.shapes import Quantiles as Quantiles
from quarterdeck.reports.shapes import Section as Section
from quarterdeck.reports.shapes import Spread as Spread

REPORT_VERSION = 2
"""Bumped when a figure's definition changes, so a stored report says which rules made it
(2: uptime excludes maintenance windows; probe figures added)."""


# ---------------------------------------------------------------------------------------------
# Runs


class RunsDay(BaseModel):
    """Runs submitted on one UTC day, by how they ended."""

    day: date
    total: int
    succeeded: int
    failed: int = Field(description="status failed, max_turns or budget_exceeded")
    timed_out: int
    cancelled: int
    unfinished: int = Field(default=0, description="still queued or running at period end")


class RunGroup(BaseModel):
    """Runs of one agent type or one model."""

    key: str
    total: int
    succeeded: int
    terminal: int = Field(description="ended runs, cancelled excluded (the rate's denominator)")
    success_rate: float | None
    cost_usd: float


class RunsSection(Section):
    total: int = Field(description="runs submitted in the period (by created_at)")
    by_status: list[Count] = Field(default_factory=list)
    per_day: list[RunsDay] = Field(default_factory=list, description="every day of the period")
    terminal: int = Field(default=0, description="the success rate's denominator")
    succeeded: int = 0
    success_rate: float | None = None
    definition: str = Field(
        default="success rate = succeeded / runs that ended (succeeded, failed, timed_out, "
        "max_turns, budget_exceeded); cancelled and unfinished runs are excluded",
    )
    first_attempt_succeeded: int = Field(default=0, description="succeeded with attempts = 1")
    retried_succeeded: int = Field(default=0, description="succeeded with attempts > 1")
    first_attempt_success_rate: float | None = Field(
        default=None, description="first_attempt_succeeded / terminal"
    )
    retried_runs: int = Field(default=0, description="runs with more than one attempt")
    by_agent_type: list[RunGroup] = Field(default_factory=list)
    by_model: list[RunGroup] = Field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Gateway


class GatewayDay(BaseModel):
    day: date
    calls: int
    ok: int = Field(description="calls answered 2xx")
    errors: int
    cost_usd: float


class GatewayGroup(BaseModel):
    """Gateway calls of one model or one tenant."""

    key: str
    calls: int
    ok: int
    success_rate: float | None
    input_tokens: int
    output_tokens: int
    cost_usd: float


class GatewaySection(Section):
    calls: int = 0
    ok: int = 0
    success_rate: float | None = Field(default=None, description="2xx calls / all calls")
    client_disconnected: int = 0
    per_day: list[GatewayDay] = Field(default_factory=list, description="every day of the period")
    by_model: list[GatewayGroup] = Field(default_factory=list)
    by_tenant: list[GatewayGroup] | None = Field(
        default=None, description="only in the all-tenant report; null in a tenant's own"
    )


# ---------------------------------------------------------------------------------------------
# Latency


class LatencyWeek(BaseModel):
    """One ISO week (Monday start, UTC) of the period, clipped to it."""

    week_start: date
    runs: int
    run_p50_s: float | None
    run_p95_s: float | None
    run_p99_s: float | None
    calls: int
    gateway_p50_ms: float | None
    gateway_p95_ms: float | None
    gateway_p99_ms: float | None


class LatencySection(Section):
    run_duration_s: Quantiles = Field(
        default_factory=lambda: Quantiles(count=0),
        description="finished_at - started_at of runs that ended, cancelled ones excluded",
    )
    queue_wait_s: Quantiles = Field(
        default_factory=lambda: Quantiles(count=0),
        description="started_at - created_at of runs that started, cancelled ones excluded",
    )
    gateway_duration_ms: Quantiles = Field(default_factory=lambda: Quantiles(count=0))
    gateway_ttfb_ms: Quantiles = Field(default_factory=lambda: Quantiles(count=0))
    weekly: list[LatencyWeek] = Field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Incidents


class ResolutionStats(BaseModel):
    """Time to resolve, as a distribution (a mean alone hides the heavy tail)."""

    count: int = Field(description="incidents resolved by the period end")
    p50_minutes: float | None = None
    p90_minutes: float | None = None
    max_minutes: float | None = None
    mean_minutes: float | None = None


class IncidentRow(BaseModel):
    id: str
    title: str
    service: str
    severity: str
    source: str
    opened_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None
    minutes: float = Field(description="open time; to the period end when unresolved then")
    ongoing: bool = Field(description="still unresolved at the period end")


class IncidentsSection(Section):
    total: int = Field(default=0, description="incidents opened in the period")
    by_severity: list[Count] = Field(default_factory=list)
    by_source: list[Count] = Field(default_factory=list)
    resolved: int = 0
    open_at_end: int = 0
    resolution: ResolutionStats = Field(default_factory=lambda: ResolutionStats(count=0))
    resolution_histogram: list[HistogramBucket] = Field(default_factory=list)
    auto_recovered: int = Field(default=0, description="resolved_by = auto")
    auto_recovered_share: float | None = Field(default=None, description="auto / resolved")
    human_interventions: int = Field(
        default=0, description="incidents acknowledged by a person or resolved by a human"
    )
    longest: list[IncidentRow] = Field(default_factory=list, description="the 10 longest")


# ---------------------------------------------------------------------------------------------
# Cost


class CostGroup(BaseModel):
    key: str
    runs_usd: float
    gateway_usd: float
    total_usd: float


class CacheSavings(BaseModel):
    """What prompt-cache reads saved against paying the input price for the same tokens."""

    cache_read_tokens: int = 0
    at_input_price_usd: float = 0.0
    at_cache_price_usd: float = 0.0
    savings_usd: float = 0.0
    unpriced_models: list[str] = Field(
        default_factory=list, description="models with cache reads but no known price"
    )


class BudgetUse(BaseModel):
    tenant: str
    monthly_usd: float | None
    daily_usd: float | None
    spent_usd: float = Field(description="the tenant's runs + gateway spend in the period")
    used: float | None = Field(description="spent / monthly limit; null without a monthly limit")


class CostSection(Section):
    total_usd: float = 0.0
    runs_usd: float = Field(
        default=0.0, description="runs' own model calls (run_turns) made in the period"
    )
    gateway_usd: float = Field(
        default=0.0, description="gateway calls' cost (calls made in the period)"
    )
    per_run_usd: float | None = Field(
        default=None,
        description="recorded cost of the runs submitted in the period / those runs",
    )
    per_successful_run_usd: float | None = Field(
        default=None,
        description="recorded cost of the runs submitted in the period (failures included) / those that succeeded: what one success really cost",
    )
    unknown_cost_runs: int = Field(default=0, description="runs whose cost is not fully known")
    estimated_cost_calls: int = Field(default=0, description="gateway calls with estimated cost")
    by_tenant: list[CostGroup] = Field(default_factory=list)
    by_model: list[CostGroup] = Field(default_factory=list)
    cache: CacheSavings = Field(default_factory=CacheSavings)
    budgets: list[BudgetUse] = Field(default_factory=list)
    definition: str = Field(
        default="billed cost: the billing records of the period, runs' own model calls "
        "(run_turns) plus gateway calls (a claude-code run's calls are gateway calls), the same "
        "records tenant budgets are enforced against; per run: runs submitted in the period",
    )


# ---------------------------------------------------------------------------------------------
# Delivery


class DeliverySection(Section):
    finished_runs: int = Field(default=0, description="runs that ended (any terminal status)")
    runs_with_diff: int = Field(default=0, description="runs whose changed_files is non-empty")
    diff_share: float | None = Field(default=None, description="runs_with_diff / finished_runs")
    succeeded_with_diff: int = 0
    quality_score: Spread = Field(default_factory=lambda: Spread(count=0))
    coverage_percent: Spread = Field(default_factory=lambda: Spread(count=0))


# ---------------------------------------------------------------------------------------------
# Operations


class ScalerActivity(BaseModel):
    decisions: int = 0
    by_direction: list[Count] = Field(default_factory=list, description="up, down, hold")
    applied: int = Field(default=0, description="decisions that wrote a replica count")
    errors: int = 0


class RolloutActivity(BaseModel):
    started: int = Field(default=0, description="rollouts created in the period")
    completed: int = 0
    rolled_back: int = 0
    aborted: int = 0
    in_progress: int = Field(default=0, description="of those started, not finished")


class OperationsSection(Section):
    scaler: ScalerActivity = Field(default_factory=ScalerActivity)
    rollouts: RolloutActivity = Field(default_factory=RolloutActivity)


# ---------------------------------------------------------------------------------------------
# ROI


class RoiInputs(BaseModel):
    """What the user supplied; the report never invents these."""

    hourly_cost_usd: float | None = None
    minutes_saved_per_successful_run: float | None = None
    source: Literal["request", "settings"] | None = Field(
        default=None, description="where the inputs came from: the request or the settings"
    )


class RoiSection(Section):
    estimate: Literal[True] = Field(default=True, description="always an estimate, never measured")
    inputs: RoiInputs = Field(default_factory=RoiInputs)
    successful_runs: int = 0
    hours_saved: float | None = None
    value_usd: float | None = Field(default=None, description="hours_saved * hourly_cost_usd")
    cost_usd: float | None = Field(default=None, description="the period's total cost")
    net_usd: float | None = None
    roi: float | None = Field(default=None, description="(value - cost) / cost, a fraction")
    formula: str = Field(
        default="hours_saved = succeeded runs * minutes_saved_per_successful_run / 60; "
        "value = hours_saved * hourly_cost_usd; roi = (value - total cost) / total cost",
    )


# ---------------------------------------------------------------------------------------------
# The report


class MonthlyReport(BaseModel):
    """One month of one tenant (or of all tenants), every figure from stored data."""

    version: int = REPORT_VERSION
    month: str = Field(description='"YYYY-MM"', pattern=r"^\d{4}-\d{2}$")
    tenant: str | None = Field(description="null: all tenants")
    generated_at: datetime
    period_start: datetime = Field(description="first instant of the month, UTC")
    period_end: datetime = Field(description="first instant of the next month, UTC (exclusive)")
    partial: bool = Field(description="the month was not over when this was generated")
    inputs: RoiInputs = Field(default_factory=RoiInputs)
    runs: RunsSection
    gateway: GatewaySection
    latency: LatencySection
    availability: AvailabilitySection
    incidents: IncidentsSection
    cost: CostSection
    delivery: DeliverySection
    operations: OperationsSection
    roi: RoiSection


class StoredReport(BaseModel):
    """A stored report as ``GET /v1/reports`` lists it (the report itself is fetched by month)."""

    month: str
    tenant: str | None
    generated_at: datetime
    inputs: RoiInputs = Field(default_factory=RoiInputs)
