"""The building blocks of the report's human-readable formats: formatted values and views.

Why separate from the layout: Markdown, HTML and PDF print every figure through these formatters,
so a number reads the same in all three, and the view types are the whole contract between the
layout (what is shown) and the renderers (how). Values are unescaped text; each renderer escapes
for its own format.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from quarterdeck.reports.models import Count, GatewayGroup, Quantiles, RunGroup, Section, Spread

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NA = "n/a"
NO_DATA = "no data"


# ---------------------------------------------------------------------------------------------
# Formatting: one place, so Markdown and HTML print a figure identically.


def count(value: int | None) -> str:
    return NA if value is None else f"{value:,}"


def pct(value: float | None, places: int = 1) -> str:
    return NA if value is None else f"{value * 100:,.{places}f} %"


def usd(value: float | None) -> str:
    if value is None:
        return NA
    sign, size = ("-" if value < 0 else ""), abs(value)
    return f"{sign}${size:,.4f}" if 0 < size < 1 else f"{sign}${size:,.2f}"


def number(value: float | None, unit: str = "", places: int = 1) -> str:
    if value is None:
        return NA
    return f"{value:,.{places}f}" + (f" {unit}" if unit else "")


def when(value: datetime | None) -> str:
    if value is None:
        return NA
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return f"{value:%Y-%m-%d %H:%M} UTC"


def month_title(month: str) -> str:
    return f"{datetime.strptime(month, '%Y-%m'):%B %Y}"


# ---------------------------------------------------------------------------------------------
# The views


@dataclass(frozen=True)
class Table:
    caption: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...] = ()
    """Per column: right-aligned (a number)."""
    detail: bool = False
    """A long listing the HTML/PDF shows as a chart instead; only Markdown prints it."""


@dataclass(frozen=True)
class Chart:
    title: str
    draw: Callable[[], Figure]


@dataclass(frozen=True)
class SectionView:
    key: str
    title: str
    has_data: bool
    note: str | None
    stats: tuple[tuple[str, str], ...] = ()
    tables: tuple[Table, ...] = ()
    charts: tuple[Chart, ...] = ()
    definition: str | None = None


@dataclass(frozen=True)
class ReportView:
    title: str
    scope: str
    period: str
    generated: str
    partial_note: str | None
    headline: tuple[tuple[str, str], ...]
    sections: tuple[SectionView, ...] = field(default_factory=tuple)


def table(
    caption: str,
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    numeric_from: int = 1,
    detail: bool = False,
) -> list[Table]:
    """A table, or nothing when it has no rows (an empty table reads like a measured zero)."""
    body = tuple(tuple(r) for r in rows)
    if not body:
        return []
    flags = tuple(i >= numeric_from for i in range(len(headers)))
    return [Table(caption, tuple(headers), body, flags, detail)]


def counts(caption: str, heading: str, items: Sequence[Count]) -> list[Table]:
    return table(caption, (heading, "count"), ((c.key, count(c.count)) for c in items))


def empty(key: str, title: str, section: Section, what: str) -> SectionView:
    note = section.note or f"No {what} was recorded in this period."
    return SectionView(key, title, has_data=False, note=note)


def run_groups(caption: str, heading: str, groups: Sequence[RunGroup]) -> list[Table]:
    head = (heading, "runs", "succeeded", "ended", "success rate", "cost")
    rows = (
        (
            g.key,
            count(g.total),
            count(g.succeeded),
            count(g.terminal),
            pct(g.success_rate),
            usd(g.cost_usd),
        )
        for g in groups
    )
    return table(caption, head, rows)


def gateway_groups(caption: str, heading: str, groups: Sequence[GatewayGroup]) -> list[Table]:
    head = (heading, "calls", "2xx", "success rate", "input tokens", "output tokens", "cost")
    rows = (
        (
            g.key,
            count(g.calls),
            count(g.ok),
            pct(g.success_rate),
            count(g.input_tokens),
            count(g.output_tokens),
            usd(g.cost_usd),
        )
        for g in groups
    )
    return table(caption, head, rows)


def quantile_row(name: str, q: Quantiles, unit: str, places: int) -> tuple[str, ...]:
    return (name, count(q.count), *(number(v, unit, places) for v in (q.p50, q.p95, q.p99)))


def spread_row(name: str, s: Spread, unit: str) -> tuple[str, ...]:
    values = (s.p10, s.p50, s.p90, s.min, s.max)
    return (name, count(s.count), *(number(v, unit, 1 if unit else 2) for v in values))


def nonzero(values: Iterable[float | int | None]) -> bool:
    return any(v not in (None, 0) for v in values)
