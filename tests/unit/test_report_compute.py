"""The monthly report's pure rules: months, 0/0, and the union of outage intervals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from quarterdeck.exceptions import ValidationFailed
from quarterdeck.reports.compute import (
    last_full_month,
    month_bounds,
    parse_month,
    ratio,
    union_minutes,
)

NOW = datetime(2026, 11, 15, tzinfo=UTC)
START, END = month_bounds(2026, 10)


def t(day: int, hour: int = 0) -> datetime:
    return datetime(2026, 10, day, hour, tzinfo=UTC)


def test_months():
    assert parse_month("2026-11", NOW) == (2026, 11)
    assert month_bounds(2026, 12) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert last_full_month(datetime(2027, 1, 1, tzinfo=UTC)) == "2026-12"
    for bad in ("2026-00", "2026-13", "2026-12", "x", " 2026-1"):
        with pytest.raises(ValidationFailed):
            parse_month(bad, NOW)


def test_ratio_of_nothing_is_unknown_not_zero():
    assert ratio(0, 0) is None
    assert ratio(1, 4) == 0.25


def test_union_merges_overlaps_and_touching_spans_and_clips_to_the_period():
    spans = [
        ("a", t(2), t(2, 2)),
        ("b", t(2, 1), t(2, 3)),  # overlaps a
        ("c", t(2, 3), t(2, 4)),  # touches b
        ("d", START - timedelta(hours=1), t(1, 1)),  # starts before the period
        ("e", t(31, 23), None),  # still open: to the end
        ("f", t(5), t(5)),  # zero length: nothing
    ]
    merged = union_minutes(spans, START, END)
    assert [(i.ids, i.minutes) for i in merged] == [
        (("d",), 60.0),
        (("a", "b", "c"), 240.0),
        (("e",), 60.0),
    ]
