"""Pure helpers of the monthly report: months, ratios, interval unions and differences,
histogram labels.

Why apart from the SQL: these are the rules a reader checks a figure against (what "a month"
is, that 0/0 is unknown rather than 0 %, that two overlapping outages are one stretch of
downtime, not two), so they are plain functions with their own unit tests, taking their inputs
and ``now`` and never a connection.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from quarterdeck.exceptions import ValidationFailed

__all__ = [
    "RESOLUTION_EDGES_MINUTES",
    "Interval",
    "bucket_label",
    "last_full_month",
    "month_bounds",
    "month_of",
    "parse_month",
    "ratio",
    "subtract_intervals",
    "total_minutes",
    "union_minutes",
]

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")

RESOLUTION_EDGES_MINUTES: tuple[float, ...] = (0.0, 5.0, 15.0, 30.0, 60.0, 240.0, 1440.0)
"""Lower edges of the time-to-resolve histogram's bars; the last bar has no upper bound. Chosen
so the bars a person acts on (under 5 min: automation; over a day: a process problem) stand
apart, whatever the mean does."""


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", errors=[{"field": field, "message": message}])


def parse_month(value: str, now: datetime, *, field: str = "month") -> tuple[int, int]:
    """``"YYYY-MM"`` as (year, month); 422 naming ``field`` when malformed or in the future.

    The current month is allowed (its report is ``partial``); a month after it has no data
    that could exist yet, so asking for one is a mistake worth saying.
    """
    m = _MONTH.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise _invalid(field, f"must be YYYY-MM, got {value!r}")
    year, month = int(m.group(1)), int(m.group(2))
    if not 1 <= month <= 12 or year < 2000:
        raise _invalid(field, f"no such month: {value!r}")
    current = now.astimezone(UTC)
    if (year, month) > (current.year, current.month):
        raise _invalid(field, f"{value} has not started yet")
    return year, month


def month_of(year: int, month: int) -> str:
    return f"{year:04d}-{month:02d}"


def month_bounds(year: int, month: int) -> tuple[datetime, datetime]:
    """``[first instant, first instant of the next month)`` in UTC."""
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def last_full_month(now: datetime) -> str:
    """The month before ``now``'s (UTC): the default report, the first whose data is complete."""
    current = now.astimezone(UTC)
    first = date(current.year, current.month, 1)
    prev = first - timedelta(days=1)
    return month_of(prev.year, prev.month)


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``, or None when there is nothing to divide by (0/0 is unknown,
    not 0 %)."""
    if denominator == 0:
        return None
    return numerator / denominator


@dataclass(frozen=True)
class Interval:
    """A stretch of time and the ids of what caused it (incidents)."""

    start: datetime
    end: datetime
    ids: tuple[str, ...] = ()

    @property
    def minutes(self) -> float:
        return (self.end - self.start).total_seconds() / 60.0


def union_minutes(
    spans: Iterable[tuple[str, datetime, datetime | None]], start: datetime, end: datetime
) -> list[Interval]:
    """The union of ``(id, opened, closed-or-None)`` spans clipped to ``[start, end)``.

    An open span (``None``) lasts to ``end``. Overlapping or touching spans merge into one
    interval carrying every id, so two incidents open at once count their overlap once.
    """
    clipped: list[tuple[datetime, datetime, str]] = []
    for ident, opened, closed in spans:
        lo = max(opened, start)
        hi = min(closed if closed is not None else end, end)
        if hi > lo:
            clipped.append((lo, hi, ident))
    clipped.sort()
    merged: list[Interval] = []
    for lo, hi, ident in clipped:
        if merged and lo <= merged[-1].end:
            last = merged[-1]
            merged[-1] = Interval(last.start, max(last.end, hi), (*last.ids, ident))
        else:
            merged.append(Interval(lo, hi, (ident,)))
    return merged


def subtract_intervals(kept: Sequence[Interval], removed: Sequence[Interval]) -> list[Interval]:
    """The parts of ``kept`` outside every interval of ``removed`` (both sorted and merged, as
    :func:`union_minutes` returns them); each part keeps its interval's ids.

    Why: downtime inside a maintenance window is scheduled, so an outage that a window covers
    partly counts only its uncovered parts as unscheduled, and one it covers wholly vanishes.
    """
    out: list[Interval] = []
    for interval in kept:
        lo = interval.start
        for hole in removed:
            if hole.end <= lo:
                continue
            if hole.start >= interval.end:
                break
            if hole.start > lo:
                out.append(Interval(lo, hole.start, interval.ids))
            lo = max(lo, hole.end)
            if lo >= interval.end:
                break
        if lo < interval.end:
            out.append(Interval(lo, interval.end, interval.ids))
    return out


def total_minutes(intervals: Iterable[Interval]) -> float:
    return sum(i.minutes for i in intervals)


def bucket_label(edges: Sequence[float], index: int) -> str:
    """A readable label for bar ``index`` of a histogram with lower ``edges`` (minutes)."""

    def fmt(minutes: float) -> str:
        if minutes >= 1440 and minutes % 1440 == 0:
            return f"{int(minutes // 1440)} d"
        if minutes >= 60 and minutes % 60 == 0:
            return f"{int(minutes // 60)} h"
        return f"{minutes:g} min"

    lower = edges[index]
    if index + 1 >= len(edges):
        return f">= {fmt(lower)}"
    return f"{fmt(lower)} - {fmt(edges[index + 1])}"
