# SHAPE FROZEN
"""The shapes every section of the monthly report is written in (issue 21).

Separate from :mod:`quarterdeck.reports.models` because they are the report's vocabulary, not
one of its sections: the :class:`Section` base (``has_data`` and a ``note`` instead of a zero
that looks like a measurement) and the distributions and counts several sections share. The
section modules build on them, and the renderers (``render_view``) format them alone, whatever
section they sit in. ``models`` re-exports every name, so importers need not know the split.

Frozen like the report itself: fields may be added, never renamed or removed.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class Section(BaseModel):
    """What every section has: whether anything was recorded, and a sentence when not."""

    has_data: bool = Field(description="false when nothing this section measures was recorded")
    note: str | None = Field(
        default=None,
        description="a sentence for the reader: why there is no data, or a caveat on a figure",
    )


class Quantiles(BaseModel):
    """p50/p95/p99 of one measurement (``None`` without samples)."""

    count: int = Field(description="number of samples")
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


class Spread(BaseModel):
    """p10/p50/p90 of a score (quality, coverage) and how many runs had one."""

    count: int = Field(description="runs with a value")
    p10: float | None = None
    p50: float | None = None
    p90: float | None = None
    min: float | None = None
    max: float | None = None


class HistogramBucket(BaseModel):
    """One bar of a histogram: ``lower <= value < upper`` (``upper`` None: no upper bound)."""

    label: str = Field(description='what a reader sees, e.g. "5-15 min"')
    lower: float
    upper: float | None
    count: int


class Count(BaseModel):
    """One labelled count, kept as a list (not a dict) so the order is the one to show."""

    key: str
    count: int
