"""The monthly report's use-cases: build one, store one, list the stored ones, export FOCUS.

Why a stored copy at all: a finished month's figures do not change, but the rows they come from
do (run-data retention purges them, a tenant's erasure deletes them), so the report generated on
the first of the next month is what "the October report" means later. A stored report is served
only when it was computed with the same ROI inputs as asked for; other inputs compute afresh
(the stored one is not replaced by a request: only the scheduler and ``generate_and_store``
write). A month not over yet is always computed, and says ``partial``.

Every figure is computed in one read-only repeatable-read transaction, so the sections agree
with each other even while runs finish during the computation.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import asyncpg

from quarterdeck.config import Settings
from quarterdeck.exceptions import ValidationFailed
from quarterdeck.kit.clock import utcnow
from quarterdeck.providers.pricing import PriceTable
from quarterdeck.reports import availability_repository as av_repo
from quarterdeck.reports import build, build_availability, build_incidents, costs, focus
from quarterdeck.reports import cost_repository as cost_repo
from quarterdeck.reports import repository as repo
from quarterdeck.reports.build import Period
from quarterdeck.reports.compute import month_bounds, month_of, parse_month
from quarterdeck.reports.models import MonthlyReport, RoiInputs, StoredReport
from quarterdeck.security.auth.permissions import TENANT_RE
from quarterdeck.store.pool import Database

__all__ = ["ReportService", "check_tenant"]


def check_tenant(tenant: str | None) -> str | None:
    """A tenant as a report names it (None or "": all tenants); 422 naming ``tenant`` when it
    could not be a tenant at all."""
    if tenant is None or tenant == "":
        return None
    if not TENANT_RE.fullmatch(tenant):
        raise ValidationFailed(
            "tenant: not a tenant name",
            errors=[{"field": "tenant", "message": "1-64 letters, digits, '_', '.', ':' or '-'"}],
        )
    return tenant


def _check_input(field: str, value: float | None) -> float | None:
    if value is not None and (value != value or value < 0 or value > 1e9):
        raise ValidationFailed(
            f"{field}: must be a number from 0 to 1e9",
            errors=[{"field": field, "message": "must be a number from 0 to 1e9"}],
        )
    return value


class ReportService:
    """Builds, stores and lists monthly reports from the deployment's Postgres."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        prices: PriceTable | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.settings = settings
        self.prices = prices or PriceTable.load(settings.pricing_overrides or None)
        self.clock = clock
        self._probes: dict[tuple[datetime, datetime], asyncpg.Record] = {}
        """Probe totals of finished months (see :meth:`_probe_totals`)."""

    # -- inputs ------------------------------------------------------------------------------
    def inputs(
        self, hourly_cost: float | None = None, minutes_saved: float | None = None
    ) -> RoiInputs:
        """The request's ROI inputs, each missing one taken from the settings."""
        hourly_cost = _check_input("hourly_cost", hourly_cost)
        minutes_saved = _check_input("minutes_saved", minutes_saved)
        s = self.settings
        from_request = hourly_cost is not None or minutes_saved is not None
        hourly = hourly_cost if hourly_cost is not None else s.report_hourly_cost_usd
        minutes = minutes_saved if minutes_saved is not None else s.report_minutes_saved_per_run
        source = None
        if hourly is not None or minutes is not None:
            source = "request" if from_request else "settings"
        return RoiInputs(
            hourly_cost_usd=hourly, minutes_saved_per_successful_run=minutes, source=source
        )

    def period(self, month: str, tenant: str | None) -> Period:
        now = self.clock()
        year, mon = parse_month(month, now)
        start, end = month_bounds(year, mon)
        return Period(month_of(year, mon), start, end, now, check_tenant(tenant))

    # -- reports -----------------------------------------------------------------------------
    async def monthly(
        self,
        month: str,
        tenant: str | None = None,
        *,
        hourly_cost: float | None = None,
        minutes_saved: float | None = None,
    ) -> MonthlyReport:
        """The report of ``month`` (``"YYYY-MM"``) for ``tenant`` (None: all tenants): the
        stored one when the month is over and it used the same inputs, else computed now."""
        p = self.period(month, tenant)
        inputs = self.inputs(hourly_cost, minutes_saved)
        if p.end <= p.now:
            async with self.db.acquire() as conn:
                row = await repo.stored_report(conn, p.month, p.tenant)
            if row is not None and _same_inputs(row["inputs"], inputs):
                return MonthlyReport.model_validate(row["report"])
        return await self.compute(p, inputs)

    async def compute(self, p: Period, inputs: RoiInputs) -> MonthlyReport:
        async with self.db.acquire() as conn:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                runs = await build.runs(conn, p)
                gateway = await build.gateway(conn, p)
                latency = await build.latency(conn, p)
                active = runs.total > 0 or gateway.calls > 0
                availability = await build_availability.availability(
                    conn, p, activity=active, probes=await self._probe_totals(conn, p)
                )
                incidents = await build_incidents.incidents(conn, p)
                cost = await costs.cost(conn, p, self.prices)
                delivery = await build.delivery(conn, p)
                operations = await build.operations(conn, p)
        return MonthlyReport(
            month=p.month,
            tenant=p.tenant,
            generated_at=p.now,
            period_start=p.start,
            period_end=p.end,
            partial=p.now < p.end,
            inputs=inputs,
            runs=runs,
            gateway=gateway,
            latency=latency,
            availability=availability,
            incidents=incidents,
            cost=cost,
            delivery=delivery,
            operations=operations,
            roi=costs.roi(inputs, runs.succeeded, cost.total_usd),
        )

    async def _probe_totals(self, conn: asyncpg.Connection, p: Period) -> asyncpg.Record:
        """A month's probe totals, summed once per finished month in this process.

        They are the platform's, the same in the all-tenant report and every tenant's, and
        summing a month of ticks takes most of a second: the leader storing a report per active
        tenant on the 1st would sum the same month once per tenant. A finished month's ticks do
        not change (only the retention purge, months later, removes them); the running month's
        are summed on every request."""
        key = (p.start, p.observed_end)
        if p.end > p.now:
            return await av_repo.probe_totals(conn, *key)
        if key not in self._probes:
            if len(self._probes) >= 24:
                self._probes.pop(next(iter(self._probes)))
            self._probes[key] = await av_repo.probe_totals(conn, *key)
        return self._probes[key]

    async def generate_and_store(self, month: str, tenant: str | None = None) -> MonthlyReport:
        """Compute ``month``'s report with the settings' inputs and store it (replacing one
        stored before). Only a month that is over can be stored: a partial one would be served
        later as if it were whole."""
        p = self.period(month, tenant)
        if p.end > p.now:
            raise ValidationFailed(
                f"month: {p.month} is not over yet; only a finished month is stored",
                errors=[{"field": "month", "message": "not over yet"}],
            )
        report = await self.compute(p, self.inputs())
        async with self.db.acquire() as conn:
            await repo.store_report(
                conn,
                p.month,
                p.tenant,
                report.generated_at,
                report.inputs.model_dump(mode="json"),
                report.model_dump(mode="json"),
            )
        return report

    async def stored(
        self, tenant: str | None = None, month: str | None = None
    ) -> list[StoredReport]:
        """Stored reports, newest month first: every one (``tenant`` None), or one tenant's."""
        if month is not None:
            month = self.period(month, None).month
        async with self.db.acquire() as conn:
            rows = await repo.list_stored(conn, check_tenant(tenant), month)
        return [
            StoredReport(
                month=r["month"],
                tenant=r["tenant"] or None,
                generated_at=r["generated_at"],
                inputs=RoiInputs.model_validate(r["inputs"] or {}),
            )
            for r in rows
        ]

    async def stored_months(self, tenant: str | None = None) -> set[str]:
        """Months with a stored report for ``tenant`` (None: the all-tenant report)."""
        async with self.db.acquire() as conn:
            rows = await repo.list_stored(conn, tenant or "")
        return {str(r["month"]) for r in rows}

    async def active_tenants(self, month: str) -> list[str]:
        p = self.period(month, None)
        async with self.db.acquire() as conn:
            return await repo.tenants_with_activity(conn, p.start, p.end)

    async def focus(self, month: str, tenant: str | None = None) -> bytes:
        """The month's cost as FOCUS CSV (header only when nothing was spent)."""
        p = self.period(month, tenant)
        async with self.db.acquire() as conn:
            rows = await cost_repo.focus_rows(conn, p.start, p.end, p.tenant)
        return focus.focus_csv(focus.focus_records(p, rows, self.prices))


def _same_inputs(stored: object, inputs: RoiInputs) -> bool:
    """Whether a stored report's inputs are the asked ones (where they came from aside)."""
    if not isinstance(stored, dict):
        return False
    other = RoiInputs.model_validate(stored)
    return (other.hourly_cost_usd, other.minutes_saved_per_successful_run) == (
        inputs.hourly_cost_usd,
        inputs.minutes_saved_per_successful_run,
    )
