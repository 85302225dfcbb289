"""The monthly report from stored data: a month (2026-10) of runs, turns, gateway calls,
incidents, a budget, scaler decisions and rollouts inserted straight into the embedded Postgres,
with rows just before and just after the month that must not count.

Every expected figure is computed here, in Python, from the same rows the test inserted (not by
calling the report's SQL): filters over the lists below, and percentiles by linear
interpolation (what ``percentile_cont`` defines). The FOCUS export is checked against the
report's total; the stored report round trip and the scheduler's decision use a fixed ``now``.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from quarterdeck.config import Settings
from quarterdeck.exceptions import ValidationFailed
from quarterdeck.health.leader import LeaderElector
from quarterdeck.providers.pricing import PriceTable
from quarterdeck.reports.focus import FOCUS_COLUMNS
from quarterdeck.reports.schedule import ReportScheduler, due_month
from quarterdeck.reports.service import ReportService
from quarterdeck.store.pool import Database

NOW = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)
SONNET, HAIKU = "claude-sonnet-4-5", "claude-haiku-4-5"
ENDED = {"succeeded", "failed", "timed_out", "max_turns", "budget_exceeded"}


def at(day: int, h: int = 0, m: int = 0, s: float = 0.0, month: int = 10) -> datetime:
    return datetime(2026, month, day, h, m, tzinfo=UTC) + timedelta(seconds=s)


def run(
    rid: str,
    tenant: str,
    agent: str,
    model: str,
    status: str,
    attempts: int,
    created: datetime,
    wait: float | None,
    dur: float | None,
    turns: list[float],
    **extra: Any,
) -> dict[str, Any]:
    """A run row: waited ``wait`` s to start (None: never started), ran ``dur`` s (None: not
    ended), and recorded turns costing ``turns``; ``extra``: files, quality, coverage,
    cache_read, known (cost_known)."""
    return dict(
        id=rid, tenant=tenant, agent=agent, model=model, status=status, attempts=attempts,
        created=created, wait=wait, dur=dur, turns=turns, **extra,
    )  # fmt: skip


# fmt: off
RUNS: list[dict[str, Any]] = [
    run("r0", "acme", "coder", SONNET, "succeeded", 1, at(30, 23, 59, 59, month=9), 1, 10, [5.0]),
    run("r1", "acme", "coder", SONNET, "succeeded", 1, OCT, 10, 60, [0.5],
        files=["a.py"], quality=0.8, coverage=70.0),
    run("r2", "acme", "coder", SONNET, "succeeded", 2, at(2, 10), 20, 120, [0.4, 0.6],
        quality=0.6),
    run("r3", "acme", "reviewer", HAIKU, "failed", 3, at(2, 12), 5, 30, [0.25],
        cache_read=1_000_000),
    run("r4", "acme", "reviewer", HAIKU, "timed_out", 1, at(10, 8), 0, 600, [0.10]),
    run("r5", "acme", "coder", SONNET, "cancelled", 0, at(10, 9), None, None, []),
    run("r6", "globex", "coder", SONNET, "succeeded", 1, at(31, 23, 55), 1, 240, [2.0],
        files=["b.py", "c.py"], quality=0.9, coverage=90.0),
    run("r7", "globex", "coder", SONNET, "budget_exceeded", 1, at(15, 3), 2, 50, [0.75],
        known=False),
    run("r8", "globex", "coder", SONNET, "running", 1, at(31, 12), 30, None, []),
    run("r9", "acme", "coder", SONNET, "succeeded", 1, NOV, 1, 10, [7.0]),
]
# Gateway calls: (id, tenant, model, status, created, cost, duration, ttfb, cache_read, run)
CALLS: list[tuple[Any, ...]] = [
    ("g0", "acme", SONNET, 200, at(30, 23, month=9), "9", 100.0, 10.0, 0, None),
    ("g1", "acme", SONNET, 200, at(3, 9), "0.30", 1000.0, 200.0, 0, None),
    ("g2", "acme", SONNET, 529, at(3, 10), "0", 500.0, None, 0, None),
    ("g3", "globex", HAIKU, 200, at(20, 1), "0.05", 300.0, 100.0, 2_000_000, None),
    ("g4", "globex", HAIKU, 200, at(31, 23, 58), "0.10", 700.0, 90.0, 0, "r6"),
    ("g9", "acme", SONNET, 200, NOV, "9", 100.0, 10.0, 0, None),
]
# Incidents: (id, severity, source, opened, resolved, resolved_by, acknowledged_by)
INCIDENTS: list[tuple[Any, ...]] = [
    ("i0", "critical", "manual", at(1, month=9), at(2, month=9), "human", None),
    ("i1", "critical", "health_check", at(30, 23, month=9), at(1, 1), "auto", None),
    ("i2", "critical", "alertmanager", at(5, 10), at(5, 10, 30), "human", "alice"),
    ("i3", "critical", "manual", at(5, 10, 20), at(5, 11), "auto", None),
    ("i4", "high", "health_check", at(12), at(12, 0, 3), "auto", None),
    ("i5", "medium", "security", at(20), at(21, 2), "human", None),
    ("i6", "critical", "health_check", at(31, 23), at(1, 1, month=11), "auto", None),
    ("i7", "low", "manual", at(2, month=11), None, None, None),
]
# fmt: on


def in_oct(when: datetime) -> bool:
    return OCT <= when < NOV


def turn_time(r: dict[str, Any]) -> datetime:
    """When a run's turns are recorded: a second after it started (r0, submitted a second
    before October, is billed in October: spend counts when it happens)."""
    return r["created"] + timedelta(seconds=r["wait"] + 1)


def billed(tenant: str | None = None, model: str | None = None) -> float:
    """October's turn cost: turns recorded in October, whenever their run was submitted."""
    return sum(
        sum(r["turns"])
        for r in RUNS
        if r["turns"]
        and in_oct(turn_time(r))
        and tenant in (None, r["tenant"])
        and model in (None, r["model"])
    )


def pct(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (percentile_cont's definition)."""
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


async def insert_month(db: Database) -> None:
    async with db.acquire() as conn:
        for r in RUNS:
            started = None if r["wait"] is None else r["created"] + timedelta(seconds=r["wait"])
            finished = None
            if r["status"] == "cancelled":
                started = finished = r["created"] + timedelta(seconds=3)
            elif r["dur"] is not None:
                finished = started + timedelta(seconds=r["dur"])  # type: ignore[operator]
            total = sum(Decimal(str(c)) for c in r["turns"])
            await conn.execute(
                """
                INSERT INTO runs (id, tenant, agent_type, operation, prompt, model, status,
                                  attempts, created_at, started_at, finished_at, cost_usd,
                                  cost_known, changed_files, quality_score, coverage_percent,
                                  cache_read_tokens)
                VALUES ($1, $2, $3, 'op', 'p', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                        $15)
                """,
                r["id"],
                r["tenant"],
                r["agent"],
                r["model"],
                r["status"],
                r["attempts"],
                r["created"],
                started,
                finished,
                total,
                r.get("known", True),
                r.get("files", []),
                r.get("quality"),
                r.get("coverage"),
                r.get("cache_read", 0),
            )
            for n, cost in enumerate(r["turns"], start=1):
                await conn.execute(
                    """
                    INSERT INTO run_turns (run_id, turn, messages, model, input_tokens,
                                           output_tokens, cache_read_tokens, cost_usd, created_at)
                    VALUES ($1, $2, '[]'::jsonb, $3, 1000, 100, $4, $5, $6)
                    """,
                    r["id"],
                    n,
                    r["model"],
                    r.get("cache_read", 0) if n == 1 else 0,
                    Decimal(str(cost)),
                    turn_time(r),
                )
        for cid, tenant, model, status, when, cost, dur, ttfb, cache, run in CALLS:
            await conn.execute(
                """
                INSERT INTO gateway_calls (id, created_at, tenant, model, stream, status,
                                           cost_usd, duration_ms, ttfb_ms, cache_read_tokens,
                                           run_id, input_tokens, output_tokens)
                VALUES ($1, $2, $3, $4, false, $5, $6, $7, $8, $9, $10, 500, 50)
                """,
                cid,
                when,
                tenant,
                model,
                status,
                Decimal(cost),
                dur,
                ttfb,
                cache,
                run,
            )
        for iid, sev, source, opened, resolved, by, ack in INCIDENTS:
            await conn.execute(
                """
                INSERT INTO incidents (id, service, severity, title, status, source, dedup_key,
                                       opened_at, last_seen_at, acknowledged_at,
                                       acknowledged_by, resolved_at, resolved_by)
                VALUES ($1, 'api', $2, $1 || ' down', $3, $4, $1, $5, $5, $6, $7, $8, $9)
                """,
                iid,
                sev,
                "resolved" if resolved else "open",
                source,
                opened,
                opened + timedelta(minutes=5) if ack else None,
                ack,
                resolved,
                by,
            )
        await conn.execute(
            "INSERT INTO tenant_budgets (tenant, daily_usd, monthly_usd) VALUES ('acme', 1, 10)"
        )
        for when, cur, desired, applied, direction, error in [
            (at(29, month=9), 2, 3, 3, "up", None),
            (at(4), 2, 3, 3, "up", None),
            (at(5), 3, 2, None, "down", "boom"),
            (at(6), 3, 3, None, "hold", None),
            (at(7), 3, 3, None, "hold", None),
        ]:
            await conn.execute(
                """
                INSERT INTO scaling_decisions (at, policy, mode, target, current, desired, applied,
                                               direction, reason, error)
                VALUES ($1, 'quarterdeck', 'dry-run', 'w', $2, $3, $4, $5, 'r', $6)
                """,
                when,
                cur,
                desired,
                applied,
                direction,
                error,
            )
        for rid, phase, when in [
            ("ro0", "completed", at(20, month=9)),
            ("ro1", "completed", at(3)),
            ("ro2", "rolled_back", at(9)),
            ("ro3", "progressing", at(30)),
        ]:
            await conn.execute(
                """
                INSERT INTO rollouts (id, target, image, strategy, spec, spec_hash, phase,
                                      step_index, step_started_at, weight, created_at)
                VALUES ($1, $1, 'img', 'canary', '{}'::jsonb, 'h', $2, 0, $3, 0, $3)
                """,
                rid,
                phase,
                when,
            )


@pytest.fixture
def settings(make_settings: Any) -> Settings:
    s: Settings = make_settings()
    return s


@pytest.fixture
async def service(db: Database, settings: Settings) -> ReportService:
    await insert_month(db)
    return ReportService(db, settings, clock=lambda: NOW)


def oct_runs(tenant: str | None = None) -> list[dict[str, Any]]:
    return [r for r in RUNS if in_oct(r["created"]) and tenant in (None, r["tenant"])]


async def test_every_figure_of_the_month_matches_a_hand_computation(service: ReportService):
    report = await service.monthly("2026-10")
    assert (report.month, report.tenant, report.partial) == ("2026-10", None, False)
    assert (report.period_start, report.period_end) == (OCT, NOV)

    runs = oct_runs()
    ended = [r for r in runs if r["status"] in ENDED]
    ok = [r for r in runs if r["status"] == "succeeded"]
    s = report.runs
    assert s.has_data and s.total == len(runs) == 8
    assert s.terminal == len(ended) and s.succeeded == len(ok)
    assert s.success_rate == pytest.approx(len(ok) / len(ended))
    assert s.first_attempt_succeeded == sum(1 for r in ok if r["attempts"] <= 1)
    assert s.retried_succeeded == sum(1 for r in ok if r["attempts"] > 1)
    assert s.retried_runs == sum(1 for r in runs if r["attempts"] > 1)
    assert len(s.per_day) == 31
    by_day = {d.day.day: d for d in s.per_day}
    assert (by_day[2].total, by_day[2].succeeded, by_day[2].failed) == (2, 1, 1)
    assert (by_day[10].timed_out, by_day[10].cancelled) == (1, 1)
    assert (by_day[31].total, by_day[31].succeeded, by_day[31].unfinished) == (2, 1, 1)
    assert sum(d.total for d in s.per_day) == len(runs)
    coder = next(g for g in s.by_agent_type if g.key == "coder")
    coder_runs = [r for r in runs if r["agent"] == "coder"]
    assert coder.total == len(coder_runs)
    assert coder.terminal == sum(1 for r in coder_runs if r["status"] in ENDED)
    assert coder.cost_usd == pytest.approx(sum(sum(r["turns"]) for r in coder_runs))
    assert {g.key for g in s.by_model} == {SONNET, HAIKU}

    g = report.gateway
    calls = [c for c in CALLS if in_oct(c[4])]
    assert (g.calls, g.ok) == (len(calls), sum(1 for c in calls if 200 <= c[3] < 300))
    assert g.success_rate == pytest.approx(3 / 4)
    assert g.by_tenant is not None
    assert {t.key: (t.calls, t.ok) for t in g.by_tenant} == {"acme": (2, 1), "globex": (2, 2)}
    assert sum(d.calls for d in g.per_day) == len(calls)

    lat = report.latency
    durations = [float(r["dur"]) for r in ended]
    waits = [float(r["wait"]) for r in runs if r["status"] != "cancelled" and r["wait"] is not None]
    assert lat.run_duration_s.count == len(durations)
    assert lat.run_duration_s.p50 == pytest.approx(pct(durations, 0.5))
    assert lat.run_duration_s.p95 == pytest.approx(pct(durations, 0.95))
    assert lat.run_duration_s.p99 == pytest.approx(pct(durations, 0.99))
    assert lat.queue_wait_s.count == len(waits)
    assert lat.queue_wait_s.p50 == pytest.approx(pct(waits, 0.5))
    call_ms = [c[6] for c in calls]
    assert lat.gateway_duration_ms.p95 == pytest.approx(pct(call_ms, 0.95))
    assert lat.gateway_ttfb_ms.count == sum(1 for c in calls if c[7] is not None)
    assert sum(w.runs for w in lat.weekly) == len(durations)
    assert lat.weekly[0].week_start == OCT.date()  # the week of Monday 28 Sep, clipped

    av = report.availability
    # i1: 00:00-01:00 on the 1st (opened in September); i2 and i3 overlap: 10:00-11:00 on the
    # 5th, counted once; i6: 23:00-24:00 on the 31st (resolved in November).
    assert av.unscheduled_downtime_minutes == pytest.approx(60 + 60 + 60)
    assert av.period_minutes == 31 * 1440
    assert av.uptime == pytest.approx(1 - 180 / (31 * 1440))
    assert [o.incident_ids for o in av.outages] == [["i1"], ["i2", "i3"], ["i6"]]
    assert av.scheduled_downtime_minutes == 0 and "maintenance windows" in (av.note or "")

    inc = report.incidents
    opened = [i for i in INCIDENTS if in_oct(i[3])]
    resolved = [i for i in opened if i[4] is not None and i[4] < NOV]
    minutes = [(i[4] - i[3]).total_seconds() / 60 for i in resolved]
    assert inc.total == len(opened) == 5
    assert {c.key: c.count for c in inc.by_severity} == {"critical": 3, "high": 1, "medium": 1}
    assert {c.key: c.count for c in inc.by_source} == {
        "alertmanager": 1,
        "health_check": 2,
        "manual": 1,
        "security": 1,
    }
    assert (inc.resolved, inc.open_at_end) == (len(resolved), 1)
    assert inc.resolution.p50_minutes == pytest.approx(pct(minutes, 0.5))
    assert inc.resolution.p90_minutes == pytest.approx(pct(minutes, 0.9))
    assert inc.resolution.max_minutes == pytest.approx(max(minutes))
    assert inc.resolution.mean_minutes == pytest.approx(sum(minutes) / len(minutes))
    assert {b.label: b.count for b in inc.resolution_histogram if b.count} == {
        "0 min - 5 min": 1,
        "30 min - 1 h": 2,
        ">= 1 d": 1,
    }
    assert inc.auto_recovered == sum(1 for i in resolved if i[5] == "auto") == 2
    assert inc.auto_recovered_share == pytest.approx(0.5)
    assert inc.human_interventions == 2  # i2 (acknowledged, resolved by a human), i5
    assert [r.id for r in inc.longest] == ["i5", "i6", "i3", "i2", "i4"]
    assert inc.longest[1].ongoing and inc.longest[1].minutes == pytest.approx(60)

    c = report.cost
    turn_cost = billed()
    assert turn_cost == pytest.approx(5.0 + 4.6)  # r0's turn counts, r9's does not
    call_cost = sum(float(x[5]) for x in calls)
    runs_cost = sum(sum(r["turns"]) for r in runs)  # per run: runs submitted in October
    assert c.runs_usd == pytest.approx(turn_cost)
    assert c.gateway_usd == pytest.approx(call_cost)
    assert c.total_usd == pytest.approx(turn_cost + call_cost)
    assert c.per_run_usd == pytest.approx(runs_cost / len(runs))
    assert c.per_successful_run_usd == pytest.approx(runs_cost / len(ok))
    assert c.unknown_cost_runs == 1
    acme = next(t for t in c.by_tenant if t.key == "acme")
    assert acme.runs_usd == pytest.approx(billed("acme"))
    assert acme.gateway_usd == pytest.approx(0.30)
    haiku = next(m for m in c.by_model if m.key == HAIKU)
    assert haiku.runs_usd == pytest.approx(billed(model=HAIKU))
    assert haiku.gateway_usd == pytest.approx(0.05 + 0.10)
    price = PriceTable.load().price_for(HAIKU)
    assert price is not None
    cache_tokens = 1_000_000 + 2_000_000
    assert c.cache.cache_read_tokens == cache_tokens
    assert c.cache.savings_usd == pytest.approx(
        float(cache_tokens * (price.input - price.cache_read) / 1_000_000)
    )
    assert [(b.tenant, b.monthly_usd) for b in c.budgets] == [("acme", 10.0)]
    assert c.budgets[0].spent_usd == pytest.approx(billed("acme") + 0.30)
    assert c.budgets[0].used == pytest.approx((billed("acme") + 0.30) / 10)

    d = report.delivery
    finished = [r for r in runs if r["status"] not in ("queued", "running")]
    assert d.finished_runs == len(finished)
    assert d.runs_with_diff == sum(1 for r in finished if r.get("files"))
    quality = [r["quality"] for r in runs if r.get("quality") is not None]
    assert d.quality_score.count == len(quality)
    assert (d.quality_score.p10, d.quality_score.p50, d.quality_score.p90) == (
        pytest.approx(pct(quality, 0.1)),
        pytest.approx(pct(quality, 0.5)),
        pytest.approx(pct(quality, 0.9)),
    )
    assert d.coverage_percent.p50 == pytest.approx(80.0)

    ops = report.operations
    assert ops.scaler.decisions == 4 and ops.scaler.errors == 1 and ops.scaler.applied == 1
    assert {x.key: x.count for x in ops.scaler.by_direction} == {"up": 1, "down": 1, "hold": 2}
    assert (ops.rollouts.started, ops.rollouts.completed, ops.rollouts.rolled_back) == (3, 1, 1)
    assert ops.rollouts.in_progress == 1

    assert not report.roi.has_data and "QUARTERDECK_REPORT_HOURLY_COST_USD" in (
        report.roi.note or ""
    )
    json.loads(report.model_dump_json())  # the whole report is JSON


async def test_a_tenant_report_leaves_out_the_other_tenant(service: ReportService):
    report = await service.monthly("2026-10", "acme")
    runs = oct_runs("acme")
    assert report.tenant == "acme" and report.runs.total == len(runs) == 5
    assert {g.key for g in report.cost.by_tenant} == {"acme"}
    assert report.cost.total_usd == pytest.approx(billed("acme") + 0.30)
    assert report.gateway.calls == 2 and report.gateway.by_tenant is None
    assert [b.tenant for b in report.cost.budgets] == ["acme"]
    assert not report.incidents.has_data and not report.operations.has_data
    assert all(o.incident_ids == [] for o in report.availability.outages)


async def test_an_empty_month_says_so_in_every_section(service: ReportService):
    report = await service.monthly("2026-08")
    for name in (
        "runs",
        "gateway",
        "latency",
        "availability",
        "incidents",
        "cost",
        "delivery",
        "operations",
        "roi",
    ):
        section = getattr(report, name)
        assert not section.has_data, name
        assert section.note, name
    assert "2026-08" in (report.runs.note or "")


async def test_roi_only_from_inputs_and_labelled_an_estimate(service: ReportService):
    report = await service.monthly("2026-10", hourly_cost=100.0, minutes_saved=30.0)
    roi = report.roi
    assert roi.has_data and roi.estimate is True
    assert roi.inputs.hourly_cost_usd == 100.0 and roi.inputs.source == "request"
    succeeded = len([r for r in oct_runs() if r["status"] == "succeeded"])
    assert roi.hours_saved == pytest.approx(succeeded * 0.5)
    value = succeeded * 0.5 * 100.0
    assert roi.value_usd == pytest.approx(value)
    assert roi.roi == pytest.approx((value - report.cost.total_usd) / report.cost.total_usd)


async def test_focus_csv_sums_to_the_report_total(service: ReportService):
    report = await service.monthly("2026-10")
    text = (await service.focus("2026-10")).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(next(csv.reader(io.StringIO(text)))) == FOCUS_COLUMNS
    billed = sum(Decimal(r["BilledCost"]) for r in rows)
    assert float(billed) == pytest.approx(report.cost.total_usd)
    assert {r["ChargeCategory"] for r in rows} == {"Usage"}
    assert {r["SubAccountId"] for r in rows} == {"acme", "globex"}
    assert all(r["ChargePeriodStart"].startswith("2026-10-") for r in rows)
    g4 = [r for r in rows if json.loads(r["Tags"]) == {"agent_type": "coder", "source": "gateway"}]
    assert len(g4) == 1 and Decimal(g4[0]["BilledCost"]) == Decimal("0.1")
    acme = await service.focus("2026-10", "acme")
    assert {r["SubAccountId"] for r in csv.DictReader(io.StringIO(acme.decode()))} == {"acme"}


async def test_a_stored_report_is_served_until_other_inputs_are_asked(
    service: ReportService, db: Database
):
    stored = await service.generate_and_store("2026-10")
    listed = await service.stored()
    assert [(s.month, s.tenant) for s in listed] == [("2026-10", None)]
    async with db.acquire() as conn:  # a late row: the stored report must not change
        await conn.execute(
            "INSERT INTO runs (id, tenant, agent_type, operation, prompt, model, created_at) "
            "VALUES ('late', 'acme', 'coder', 'op', 'p', $1, $2)",
            SONNET,
            at(12),
        )
    again = await service.monthly("2026-10")
    assert again.model_dump() == stored.model_dump()
    fresh = await service.monthly("2026-10", hourly_cost=50.0, minutes_saved=10.0)
    assert fresh.runs.total == stored.runs.total + 1


async def test_months_are_validated(service: ReportService):
    for bad in ("2026-13", "26-10", "2026-1", "2026-12"):
        with pytest.raises(ValidationFailed) as caught:
            await service.monthly(bad)
        assert caught.value.extra["errors"][0]["field"] == "month"
    partial = await service.monthly("2026-11")
    assert partial.partial and partial.runs.total == 1
    with pytest.raises(ValidationFailed):
        await service.generate_and_store("2026-11")


def test_due_month_is_last_month_once_over_and_not_stored():
    first = datetime(2026, 11, 1, 0, 0, 1, tzinfo=UTC)
    assert due_month(first, set()) == "2026-10"
    assert due_month(first, {"2026-10"}) is None
    assert due_month(datetime(2027, 1, 5, tzinfo=UTC), {"2026-10"}) == "2026-12"
    assert due_month(datetime(2026, 10, 31, 23, 59, tzinfo=UTC), set()) == "2026-09"


async def test_the_scheduler_stores_the_month_and_each_active_tenant_once_leading(
    service: ReportService, db: Database
):
    elector = LeaderElector(db.url, key=0x51D_0005, retry_s=0.05, role="reports-test")
    scheduler = ReportScheduler(service, elector, clock=lambda: NOW)
    assert await scheduler.tick() == []  # not leading: nothing
    import asyncio

    task = asyncio.create_task(elector.run())
    try:
        assert await elector.wait_until(True, 5.0)
        assert await scheduler.tick() == ["acme", "globex", None]
        assert await scheduler.tick() == []  # stored: not due any more
    finally:
        await elector.stop()
        task.cancel()
        await asyncio.wait([task], timeout=5)
    stored = {(s.month, s.tenant) for s in await service.stored()}
    assert stored == {("2026-10", None), ("2026-10", "acme"), ("2026-10", "globex")}
