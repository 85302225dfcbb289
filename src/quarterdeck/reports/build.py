"""Turns the repository's grouped rows into the report's sections (no SQL here, no storage).

Why a module of its own: each section's rules (which rows count, what a note says when there
are none, which figures a tenant's report leaves out) are read and reviewed apart from the SQL
that fetches and the service that validates and stores (availability and incidents are in
:mod:`.build_incidents`). Incidents and the scaler's and rollouts' activity are the platform's:
a tenant's report shows its availability (the platform's uptime is the tenant's too) without
incident ids, and says the rest is in the all-tenant report rather than showing another
tenant's trouble.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal

import asyncpg

from quarterdeck.reports import repository as repo
from quarterdeck.reports.compute import ratio
from quarterdeck.reports.models import (
    Count,
    DeliverySection,
    GatewayDay,
    GatewayGroup,
    GatewaySection,
    LatencySection,
    LatencyWeek,
    OperationsSection,
    Quantiles,
    RolloutActivity,
    RunGroup,
    RunsDay,
    RunsSection,
    ScalerActivity,
    Spread,
)

__all__ = [
    "PLATFORM_NOTE",
    "Period",
    "delivery",
    "gateway",
    "latency",
    "none_note",
    "operations",
    "quantile",
    "runs",
]

PLATFORM_NOTE = "Platform-wide: shown in the all-tenant report only."


@dataclass(frozen=True)
class Period:
    """What one report covers: ``[start, end)``, ``month`` as written, ``now`` when computed."""

    month: str
    start: datetime
    end: datetime
    now: datetime
    tenant: str | None

    @property
    def observed_end(self) -> datetime:
        """The end of what could have happened yet: ``now`` inside a month not over."""
        return min(self.end, max(self.now, self.start))

    def days(self) -> list[date]:
        day, last = self.start.date(), self.end.date()
        out: list[date] = []
        while day < last:
            out.append(day)
            day += timedelta(days=1)
        return out


def none_note(what: str, p: Period) -> str:
    return f"No {what} were recorded in {p.month}."


def quantile(values: Sequence[float] | None, i: int) -> float | None:
    return None if values is None else float(values[i])


async def runs(conn: asyncpg.Connection, p: Period) -> RunsSection:
    statuses = await repo.runs_by_status(conn, p.start, p.end, p.tenant)
    total = sum(int(r["n"]) for r in statuses)
    if total == 0:
        return RunsSection(has_data=False, note=none_note("runs", p), total=0)
    by = {str(r["status"]): int(r["n"]) for r in statuses}
    terminal = sum(by.get(s, 0) for s in _ENDED)
    succeeded = by.get("succeeded", 0)
    first_ok = sum(int(r["first_ok"]) for r in statuses)
    days = {r["day"]: r for r in await repo.runs_per_day(conn, p.start, p.end, p.tenant)}
    per_day = []
    for day in p.days():
        r = days.get(day)
        per_day.append(
            RunsDay(day=day, total=0, succeeded=0, failed=0, timed_out=0, cancelled=0)
            if r is None
            else RunsDay(
                day=day,
                total=r["total"],
                succeeded=r["succeeded"],
                failed=r["failed"],
                timed_out=r["timed_out"],
                cancelled=r["cancelled"],
                unfinished=r["unfinished"],
            )
        )
    groups = {}
    by_what: Literal["agent_type", "model"]
    for by_what in ("agent_type", "model"):
        groups[by_what] = [
            RunGroup(
                key=str(g["key"]),
                total=g["total"],
                succeeded=g["succeeded"],
                terminal=g["terminal"],
                success_rate=ratio(g["succeeded"], g["terminal"]),
                cost_usd=float(g["cost"]),
            )
            for g in await repo.run_groups(conn, p.start, p.end, p.tenant, by_what)
        ]
    unfinished = by.get("queued", 0) + by.get("running", 0)
    return RunsSection(
        has_data=True,
        note=f"{unfinished} run(s) had not ended when this was computed." if unfinished else None,
        total=total,
        by_status=[Count(key=str(r["status"]), count=int(r["n"])) for r in statuses],
        per_day=per_day,
        terminal=terminal,
        succeeded=succeeded,
        success_rate=ratio(succeeded, terminal),
        first_attempt_succeeded=first_ok,
        retried_succeeded=sum(int(r["retried_ok"]) for r in statuses),
        first_attempt_success_rate=ratio(first_ok, terminal),
        retried_runs=sum(int(r["retried"]) for r in statuses),
        by_agent_type=groups["agent_type"],
        by_model=groups["model"],
    )


_ENDED = ("succeeded", "failed", "timed_out", "max_turns", "budget_exceeded")


def _gateway_group(g: asyncpg.Record) -> GatewayGroup:
    return GatewayGroup(
        key=str(g["key"]),
        calls=g["calls"],
        ok=g["ok"],
        success_rate=ratio(g["ok"], g["calls"]),
        input_tokens=g["input_tokens"],
        output_tokens=g["output_tokens"],
        cost_usd=float(g["cost"]),
    )


async def gateway(conn: asyncpg.Connection, p: Period) -> GatewaySection:
    totals = await repo.gateway_totals(conn, p.start, p.end, p.tenant)
    calls = int(totals["calls"])
    if calls == 0:
        return GatewaySection(has_data=False, note=none_note("gateway calls", p))
    days = {r["day"]: r for r in await repo.gateway_per_day(conn, p.start, p.end, p.tenant)}
    per_day = []
    for day in p.days():
        r = days.get(day)
        n, ok = (int(r["calls"]), int(r["ok"])) if r is not None else (0, 0)
        cost = float(r["cost"]) if r is not None else 0.0
        per_day.append(GatewayDay(day=day, calls=n, ok=ok, errors=n - ok, cost_usd=cost))
    by_model = [
        _gateway_group(g)
        for g in await repo.gateway_groups(conn, p.start, p.end, p.tenant, "model")
    ]
    by_tenant = None
    if p.tenant is None:
        by_tenant = [
            _gateway_group(g)
            for g in await repo.gateway_groups(conn, p.start, p.end, None, "tenant")
        ]
    return GatewaySection(
        has_data=True,
        calls=calls,
        ok=int(totals["ok"]),
        success_rate=ratio(int(totals["ok"]), calls),
        client_disconnected=int(totals["disconnected"]),
        per_day=per_day,
        by_model=by_model,
        by_tenant=by_tenant,
    )


async def latency(conn: asyncpg.Connection, p: Period) -> LatencySection:
    r, c = await repo.latency(conn, p.start, p.end, p.tenant)

    def quant(n: Any, q: Sequence[float] | None) -> Quantiles:
        return Quantiles(count=int(n), p50=quantile(q, 0), p95=quantile(q, 1), p99=quantile(q, 2))

    section = LatencySection(
        has_data=bool(r["n_run"] or r["n_wait"] or c["n_dur"]),
        run_duration_s=quant(r["n_run"], r["run_q"]),
        queue_wait_s=quant(r["n_wait"], r["wait_q"]),
        gateway_duration_ms=quant(c["n_dur"], c["dur_q"]),
        gateway_ttfb_ms=quant(c["n_ttfb"], c["ttfb_q"]),
    )
    if not section.has_data:
        section.note = f"No ended runs or gateway calls were recorded in {p.month}."
        return section
    run_weeks, call_weeks = await repo.latency_weekly(conn, p.start, p.end, p.tenant)
    rw = {w["week"]: w for w in run_weeks}
    cw = {w["week"]: w for w in call_weeks}
    first = p.start.date()
    for week in sorted(set(rw) | set(cw)):
        a, b = rw.get(week), cw.get(week)
        aq = a["q"] if a is not None else None
        bq = b["q"] if b is not None else None
        section.weekly.append(
            LatencyWeek(
                week_start=max(week, first),
                runs=int(a["n"]) if a is not None else 0,
                run_p50_s=quantile(aq, 0),
                run_p95_s=quantile(aq, 1),
                run_p99_s=quantile(aq, 2),
                calls=int(b["n"]) if b is not None else 0,
                gateway_p50_ms=quantile(bq, 0),
                gateway_p95_ms=quantile(bq, 1),
                gateway_p99_ms=quantile(bq, 2),
            )
        )
    return section


def _spread(n: Any, q: Sequence[float] | None, lo: Any, hi: Any) -> Spread:
    return Spread(
        count=int(n),
        p10=quantile(q, 0),
        p50=quantile(q, 1),
        p90=quantile(q, 2),
        min=None if lo is None else float(lo),
        max=None if hi is None else float(hi),
    )


async def delivery(conn: asyncpg.Connection, p: Period) -> DeliverySection:
    d = await repo.delivery(conn, p.start, p.end, p.tenant)
    finished = int(d["finished"])
    if finished == 0:
        return DeliverySection(has_data=False, note=f"No runs ended in {p.month}.")
    notes = []
    if int(d["n_quality"]) == 0:
        notes.append("no run recorded a quality score")
    if int(d["n_coverage"]) == 0:
        notes.append("no run recorded test coverage")
    return DeliverySection(
        has_data=True,
        note=("In " + p.month + ": " + "; ".join(notes) + ".") if notes else None,
        finished_runs=finished,
        runs_with_diff=int(d["with_diff"]),
        diff_share=ratio(int(d["with_diff"]), finished),
        succeeded_with_diff=int(d["succeeded_with_diff"]),
        quality_score=_spread(d["n_quality"], d["quality_q"], d["quality_min"], d["quality_max"]),
        coverage_percent=_spread(
            d["n_coverage"], d["coverage_q"], d["coverage_min"], d["coverage_max"]
        ),
    )


async def operations(conn: asyncpg.Connection, p: Period) -> OperationsSection:
    if p.tenant is not None:
        return OperationsSection(has_data=False, note=PLATFORM_NOTE)
    scaler_rows, ro = await repo.operations(conn, p.start, p.end)
    scaler = ScalerActivity(
        decisions=sum(int(r["n"]) for r in scaler_rows),
        by_direction=[Count(key=str(r["direction"]), count=int(r["n"])) for r in scaler_rows],
        applied=sum(int(r["applied"]) for r in scaler_rows),
        errors=sum(int(r["errors"]) for r in scaler_rows),
    )
    rollouts = RolloutActivity(
        started=int(ro["started"]),
        completed=int(ro["completed"]),
        rolled_back=int(ro["rolled_back"]),
        aborted=int(ro["aborted"]),
        in_progress=int(ro["in_progress"]),
    )
    has = scaler.decisions > 0 or rollouts.started > 0
    return OperationsSection(
        has_data=has,
        note=None if has else f"No scaler decisions or rollouts were recorded in {p.month}.",
        scaler=scaler,
        rollouts=rollouts,
    )
