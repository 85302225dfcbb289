"""The pure rules behind the report's availability: interval differences (outages minus
maintenance windows), the row one health-monitor tick becomes, and what a valid maintenance
window is. Exact numbers, worked out by hand in the comments."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from quarterdeck.exceptions import ValidationFailed
from quarterdeck.health.checks import CheckResult
from quarterdeck.health.history import probe_of
from quarterdeck.health.maintenance import check_instant, check_window
from quarterdeck.incidents.models import Severity
from quarterdeck.reports.compute import (
    Interval,
    subtract_intervals,
    total_minutes,
    union_minutes,
)
from quarterdeck.reports.models import CheckMinutes, MaintenanceRow, MonthlyReport
from quarterdeck.reports.render import render
from tests.support.report_samples import full_report

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def t(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def spans(pairs: list[tuple[float, float]]) -> list[Interval]:
    return [Interval(t(a), t(b), (f"i{a:g}",)) for a, b in pairs]


def test_subtract_cuts_partial_overlaps_and_drops_covered_intervals():
    kept = spans([(0, 60), (100, 130), (200, 260), (300, 310)])
    # windows: 30-110 (cuts the tail of the 1st, the head of the 2nd), 210-220 (a hole in the
    # 3rd), 290-400 (covers the 4th wholly)
    removed = spans([(30, 110), (210, 220), (290, 400)])
    out = subtract_intervals(kept, removed)
    assert [(i.start, i.end) for i in out] == [
        (t(0), t(30)),
        (t(110), t(130)),
        (t(200), t(210)),
        (t(220), t(260)),
    ]
    assert [i.ids for i in out] == [("i0",), ("i100",), ("i200",), ("i200",)]
    assert total_minutes(out) == 30 + 20 + 10 + 40


def test_subtract_with_nothing_removed_or_nothing_kept():
    kept = spans([(0, 10), (20, 25)])
    assert subtract_intervals(kept, []) == kept
    assert subtract_intervals([], spans([(0, 100)])) == []
    # a window touching an interval's ends removes nothing of it
    assert subtract_intervals(kept, spans([(10, 20)])) == kept


def test_union_then_subtract_counts_overlapping_windows_once():
    # two windows overlapping (10-40, 30-50) are one 40-minute stretch of scheduled downtime
    windows = union_minutes(
        [("w1", t(10), t(40)), ("w2", t(30), t(50)), ("w3", t(-30), t(5))], t(0), t(1440)
    )
    assert total_minutes(windows) == 5 + 40  # w3 clipped to the period start
    outages = union_minutes([("c1", t(0), t(20)), ("c2", t(45), None)], t(0), t(60))
    assert total_minutes(subtract_intervals(outages, windows)) == (10 - 5) + (60 - 50)


class Check:
    def __init__(self, name: str, severity: Severity) -> None:
        self.name = name
        self.severity = severity

    async def check(self) -> CheckResult:  # pragma: no cover - not called here
        return CheckResult(self.name, True)


def test_a_tick_is_unhealthy_only_when_a_critical_check_fails():
    checks = [
        Check("database", Severity.critical),
        Check("redis", Severity.medium),
        Check("filesystem", Severity.high),
    ]
    ok = {c.name: CheckResult(c.name, True) for c in checks}
    p = probe_of(T0, 10.0, checks, ok)
    assert (p.healthy, p.failing, p.critical_failing) == (True, (), ())
    redis_down = {**ok, "redis": CheckResult("redis", False, "refused")}
    p = probe_of(T0, 10.0, checks, redis_down)
    assert (p.healthy, p.failing, p.critical_failing) == (True, ("redis",), ())
    db_down = {**redis_down, "database": CheckResult("database", False, "timeout")}
    p = probe_of(T0, 10.0, checks, db_down)
    assert (p.healthy, p.failing, p.critical_failing) == (
        False,
        ("database", "redis"),
        ("database",),
    )
    missing = {k: v for k, v in ok.items() if k != "database"}  # no answer counts as failing
    assert probe_of(T0, 10.0, checks, missing).critical_failing == ("database",)


def test_window_rules():
    check_window(t(0), t(60), "upgrade")
    check_window(t(0), t(7 * 1440), "exactly seven days is allowed")
    cases = [
        ((t(60), t(0), "r"), "ends_at"),
        ((t(0), t(0), "r"), "ends_at"),
        ((t(0), t(7 * 1440 + 1), "r"), "ends_at"),
        ((datetime(2026, 10, 1), t(60), "r"), "starts_at"),
        ((t(0), datetime(2026, 10, 2), "r"), "ends_at"),
        ((t(0), t(60), "   "), "reason"),
    ]
    for args, field in cases:
        with pytest.raises(ValidationFailed) as caught:
            check_window(*args)
        assert caught.value.status == 422
        assert [e["field"] for e in caught.value.extra["errors"]] == [field], args
    # A window years away cannot touch a report: a typo for a year, refused with ``now``.
    check_window(t(0), t(60), "r", now=t(0) + timedelta(days=731))
    for start, field in ((t(0) - timedelta(days=732), "starts_at"), (t(0), "ends_at")):
        far = (start, start + timedelta(hours=1))
        now = t(0) if field == "starts_at" else t(0) - timedelta(days=731)
        with pytest.raises(ValidationFailed) as caught:
            check_window(*far, "r", now=now)
        assert [e["field"] for e in caught.value.extra["errors"]] == [field]
    other_zone = datetime(2026, 10, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    assert check_instant("from", other_zone) == T0


def _availability_md(report: MonthlyReport) -> str:
    md = render(report, "md").decode()
    match = re.search(r"^## Availability\n(.*?)(?=^## |\Z)", md, re.MULTILINE | re.DOTALL)
    assert match, "no Availability section"
    return match.group(1)


def test_the_section_renders_windows_probe_figures_and_failing_checks():
    report = full_report(tenant=None)
    av = report.availability.model_copy(
        update={
            "scheduled_downtime_minutes": 90.0,
            "maintenance": [
                MaintenanceRow(
                    id="mw_1",
                    starts_at=datetime(2026, 11, 3, 10, 30, tzinfo=UTC),
                    ends_at=datetime(2026, 11, 3, 12, tzinfo=UTC),
                    minutes=90.0,
                    reason="Postgres upgrade",
                    created_by="key_ops",
                    created_at=datetime(2026, 11, 2, tzinfo=UTC),
                )
            ],
            "probe_ticks": 1084,
            "probe_covered_minutes": 180.45,
            "probe_coverage": 0.004042,
            "probe_uptime": 0.79926,
            "probe_unhealthy_minutes": 30.1667,
            "unhealthy_by_check": [
                CheckMinutes(key="redis", minutes=40.0),
                CheckMinutes(key="database", minutes=30.1667),
            ],
        }
    )
    md = _availability_md(report.model_copy(update={"availability": av}))
    assert "| scheduled downtime | 90.0 min |" in md
    assert "| probe coverage | 0.40 % (1,084 ticks) |" in md
    assert "| probe uptime | 79.926 % |" in md
    assert "| probe unhealthy time | 30.2 min |" in md
    assert "| 2026-11-03 10:30 UTC | 2026-11-03 12:00 UTC | Postgres upgrade | " in md
    assert "| 2026-11-02 00:00 UTC by key_ops | 90.0 |" in md
    assert "| redis | 40.0 |" in md and "| database | 30.2 |" in md
    html = render(report.model_copy(update={"availability": av}), "html").decode()
    assert "Postgres upgrade" in html and "probe uptime" in html


def test_a_version_1_report_renders_without_probe_rows():
    md = _availability_md(full_report(tenant=None))  # no windows, no probes: as stored before
    assert "| scheduled downtime | not recorded" in md
    assert "| probe coverage |" not in md and "| probe uptime |" not in md
    assert "Maintenance windows" not in md
