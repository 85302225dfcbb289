"""The report's availability section from critical incidents, maintenance windows and the
health monitor's probe history, inserted straight into the embedded Postgres for October 2026,
with rows and windows just outside the month that must not count.

Every expected figure is worked out by hand in the comments (minutes and seconds of the
timeline below), not by calling the report's SQL.

    Sep 30 22:00 - Oct 1 00:10  window w_sep          (10 min inside October)
    Sep 30 23:30 - Oct 1 00:20  critical c0           (00:10-00:20 unscheduled: 10 min)
    Oct 3 09:00 - 10:00         ticks, healthy        (3,600 s)
    Oct 3 10:00 - 11:00         critical c1; ticks with database (critical) and redis failing
    Oct 3 10:30 - 12:00         window w1             (90 min; c1's last 30 min scheduled)
    Oct 3 11:00 - 12:00         no ticks: unknown
    Oct 3 12:00 - 13:00         ticks healthy; redis (not critical) failing 12:00-12:10
    Oct 5 00:00 - 01:00         a *high* incident: not downtime
    Oct 10 00:00:00 / 00:00:07  two overlapping ticks: healthy 7 s, then database failing 10 s
    Oct 31 23:00 - Nov 1 01:00  window w2             (60 min inside October)
    Oct 31 23:59:55             one healthy tick      (5 s inside October, inside w2)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from quarterdeck.reports.service import ReportService
from quarterdeck.store.pool import Database

NOW = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
PERIOD_MIN = 31 * 1440


def at(month: int, day: int, h: int = 0, m: int = 0, s: float = 0.0) -> datetime:
    return datetime(2026, month, day, h, m, tzinfo=UTC) + timedelta(seconds=s)


WINDOWS = [
    ("w_aug", at(8, 1), at(8, 1, 2)),
    ("w_sep", at(9, 30, 22), at(10, 1, 0, 10)),
    ("w1", at(10, 3, 10, 30), at(10, 3, 12)),
    ("w2", at(10, 31, 23), at(11, 1, 1)),
    ("w_nov", at(11, 3), at(11, 3, 2)),
]
INCIDENTS = [  # id, severity, opened, resolved
    ("c0", "critical", at(9, 30, 23, 30), at(10, 1, 0, 20)),
    ("c1", "critical", at(10, 3, 10), at(10, 3, 11)),
    ("h1", "high", at(10, 5), at(10, 5, 1)),
    ("c_nov", "critical", at(11, 2), at(11, 2, 1)),
]


async def ticks(
    db: Database,
    start: datetime,
    count: int,
    *,
    healthy: bool = True,
    failing: tuple[str, ...] = (),
    critical: tuple[str, ...] = (),
    interval_s: float = 10.0,
) -> None:
    """``count`` ticks every ``interval_s`` from ``start``, all in one state."""
    async with db.acquire() as conn:
        await conn.execute(
            "INSERT INTO health_probes (at, interval_s, healthy, failing, critical_failing) "
            "SELECT $1::timestamptz + make_interval(secs => k * $3::float8), $3, $4, $5, $6 "
            "FROM generate_series(0, $2 - 1) AS k",
            start,
            count,
            interval_s,
            healthy,
            list(failing) or None,
            list(critical) or None,
        )


@pytest.fixture
async def seeded(db: Database) -> Database:
    async with db.acquire() as conn:
        for wid, lo, hi in WINDOWS:
            await conn.execute(
                "INSERT INTO maintenance_windows (id, starts_at, ends_at, reason, created_by, "
                "created_at) VALUES ($1, $2, $3, $1 || ' upgrade', 'key_ops', $2)",
                wid,
                lo,
                hi,
            )
        for iid, sev, opened, resolved in INCIDENTS:
            await conn.execute(
                "INSERT INTO incidents (id, service, severity, title, status, source, dedup_key, "
                "opened_at, last_seen_at, resolved_at, resolved_by) "
                "VALUES ($1, 'api', $2, $1, 'resolved', 'manual', $1, $3, $3, $4, 'human')",
                iid,
                sev,
                opened,
                resolved,
            )
    db_down = ("database", "redis")
    await ticks(db, at(9, 15), 100, healthy=False, failing=db_down, critical=("database",))
    await ticks(db, at(9, 30, 23, 59, 55), 1)
    await ticks(db, at(10, 3, 9), 360)
    await ticks(db, at(10, 3, 10), 360, healthy=False, failing=db_down, critical=("database",))
    await ticks(db, at(10, 3, 12), 60, failing=("redis",))
    await ticks(db, at(10, 3, 12, 10), 300)
    await ticks(db, at(10, 10), 1)
    await ticks(
        db, at(10, 10, 0, 0, 7), 1, healthy=False, failing=("database",), critical=("database",)
    )
    await ticks(db, at(10, 31, 23, 59, 55), 1)
    await ticks(db, at(11, 1, 0, 0, 5), 50, healthy=False, failing=db_down, critical=("database",))
    return db


async def test_every_figure_of_the_section_matches_the_timeline(seeded: Database, make_settings):
    service = ReportService(seeded, make_settings(), clock=lambda: NOW)
    av = (await service.monthly("2026-10")).availability
    assert av.has_data and av.period_minutes == PERIOD_MIN
    # scheduled: w_sep 10 + w1 90 + w2 60; unscheduled: c0 00:10-00:20 + c1 10:00-10:30
    assert av.scheduled_downtime_minutes == pytest.approx(160)
    assert av.unscheduled_downtime_minutes == pytest.approx(40)
    assert av.uptime == pytest.approx(1 - 40 / (PERIOD_MIN - 160))
    assert av.critical_incidents == 2
    assert [(o.start, o.end, o.minutes, o.incident_ids) for o in av.outages] == [
        (at(10, 1, 0, 10), at(10, 1, 0, 20), pytest.approx(10), ["c0"]),
        (at(10, 3, 10), at(10, 3, 10, 30), pytest.approx(30), ["c1"]),
    ]
    assert [(w.id, w.minutes, w.created_by) for w in av.maintenance] == [
        ("w_sep", pytest.approx(10), "key_ops"),
        ("w1", pytest.approx(90), "key_ops"),
        ("w2", pytest.approx(60), "key_ops"),
    ]
    assert av.maintenance[1].reason == "w1 upgrade"
    # ticks: 1 (Sep 30, 5 s inside) + 360 + 360 + 60 + 300 + 2 + 1 (Oct 31, 5 s inside)
    assert av.probe_ticks == 1 + 360 + 360 + 360 + 2 + 1
    covered_s = 5 + 3600 + 3600 + 3600 + 17 + 5
    assert av.probe_covered_minutes == pytest.approx(covered_s / 60)
    assert av.probe_coverage == pytest.approx(covered_s / 60 / PERIOD_MIN)
    # outside windows: 09:00-10:00 healthy 3600; 10:00-10:30 unhealthy 1800; 12:00-13:00
    # healthy 3600 (redis is not critical); Oct 10: 7 s healthy then 10 s unhealthy; the two
    # 5-second ticks at the month's edges are inside w_sep and w2
    healthy_s, unhealthy_s = 3600 + 3600 + 7, 1800 + 10
    assert av.probe_uptime == pytest.approx(healthy_s / (healthy_s + unhealthy_s))
    assert av.probe_unhealthy_minutes == pytest.approx(unhealthy_s / 60)
    assert [(c.key, c.minutes) for c in av.unhealthy_by_check] == [
        ("redis", pytest.approx((1800 + 600) / 60)),
        ("database", pytest.approx((1800 + 10) / 60)),
    ]
    assert "maintenance windows" in (av.note or "")


async def test_a_partial_month_counts_only_what_has_happened(seeded: Database, make_settings):
    now = at(10, 3, 10, 45)
    service = ReportService(seeded, make_settings(), clock=lambda: now)
    report = await service.monthly("2026-10")
    av = report.availability
    assert report.partial and av.period_minutes == pytest.approx(2 * 1440 + 645)
    # w_sep 10 + w1 10:30-10:45; c0 10 + c1 10:00-10:30; w2 has not begun (0 min, listed)
    assert av.scheduled_downtime_minutes == pytest.approx(10 + 15)
    assert av.unscheduled_downtime_minutes == pytest.approx(10 + 30)
    assert av.uptime == pytest.approx(1 - 40 / (2 * 1440 + 645 - 25))
    assert [(w.id, w.minutes) for w in av.maintenance] == [
        ("w_sep", pytest.approx(10)),
        ("w1", pytest.approx(15)),
        ("w2", pytest.approx(0)),
    ]
    # 5 s + 09:00-10:00 + 10:00-10:45 (ticks after "now" do not exist yet)
    assert av.probe_covered_minutes == pytest.approx((5 + 3600 + 2700) / 60)
    assert av.probe_uptime == pytest.approx(3600 / (3600 + 1800))


async def test_a_tenant_report_shows_no_incident_ids_or_who_declared(
    seeded: Database, make_settings
):
    service = ReportService(seeded, make_settings(), clock=lambda: NOW)
    av = (await service.monthly("2026-10", "acme")).availability
    assert av.unscheduled_downtime_minutes == pytest.approx(40)
    assert all(o.incident_ids == [] for o in av.outages)
    assert [w.created_by for w in av.maintenance] == [None, None, None]


async def test_a_month_without_probes_says_probe_figures_are_unknown(db: Database, make_settings):
    async with db.acquire() as conn:
        await conn.execute(
            "INSERT INTO incidents (id, service, severity, title, status, source, dedup_key, "
            "opened_at, last_seen_at, resolved_at, resolved_by) VALUES ('c', 'api', "
            "'critical', 'c', 'resolved', 'manual', 'c', $1, $1, $2, 'auto')",
            at(10, 7),
            at(10, 7, 1),
        )
    service = ReportService(db, make_settings(), clock=lambda: NOW)
    av = (await service.monthly("2026-10")).availability
    assert av.scheduled_downtime_minutes == 0 and av.unscheduled_downtime_minutes == 60
    assert av.uptime == pytest.approx(1 - 60 / PERIOD_MIN)
    assert (av.probe_ticks, av.probe_coverage, av.probe_uptime) == (0, None, None)
    assert av.probe_unhealthy_minutes is None and av.unhealthy_by_check == []
    assert "no probes" in (av.note or "")
    empty = (await service.monthly("2026-09")).availability
    assert not empty.has_data and "maintenance windows" in (empty.note or "")


async def test_a_finished_month_s_probes_are_summed_once_for_every_tenant_s_report(
    seeded: Database, make_settings
):
    """The leader stores a report per active tenant on the 1st; the probe totals (most of a
    second for a month of ticks) are the platform's, so they are summed once per month. With the
    month's ticks gone after the first report, the tenant's still has them, a new process's
    (another replica) does not, and a running month is always summed afresh."""
    service = ReportService(seeded, make_settings(), clock=lambda: NOW)
    running = ReportService(seeded, make_settings(), clock=lambda: at(10, 20))
    platform = (await service.monthly("2026-10")).availability
    assert (await running.monthly("2026-10")).availability.probe_ticks == platform.probe_ticks - 1
    async with seeded.acquire() as conn:
        await conn.execute("DELETE FROM health_probes")
    tenant = (await service.monthly("2026-10", "acme")).availability
    assert tenant.probe_ticks == platform.probe_ticks == 1 + 360 * 3 + 2 + 1
    assert tenant.probe_uptime == platform.probe_uptime
    fresh = ReportService(seeded, make_settings(), clock=lambda: NOW)
    assert (await fresh.monthly("2026-10", "acme")).availability.probe_ticks == 0
    assert (await running.monthly("2026-10")).availability.probe_ticks == 0
