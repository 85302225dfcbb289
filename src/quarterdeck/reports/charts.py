"""The monthly report's charts, drawn with matplotlib and no display.

Why this shape: the report is rendered in the API, the CLI and the leader's monthly job, often in
threads, so nothing here touches pyplot (its global figure registry and backend switch are not
thread-safe and other code may rely on them). Each builder makes a plain
``matplotlib.figure.Figure`` from plain sequences, which keeps the charts independent of how the
report model names its fields, and :func:`to_svg` / :func:`to_png` serialise it. SVG goes inline
into the HTML (crisp at any zoom, and WeasyPrint draws it into the PDF as vectors); PNG exists for
consumers that cannot take SVG. matplotlib is imported inside the functions, so importing this
module (and starting the CLI) costs nothing until a chart is drawn.

Builders never receive an empty series: a section without data renders its note instead of a
chart, and that decision belongs to the renderer, so here an empty input is a caller's bug.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING

from quarterdeck.exceptions import QuarterdeckError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Print-friendly, colour-blind-safe (Okabe-Ito) colours; green/red only where the meaning is
# success/failure, and then paired with a legend.
SUCCEEDED = "#009E73"
FAILED = "#D55E00"
NEUTRAL = "#0072B2"
OTHER = "#BBBBBB"
PERCENTILES = ("#56B4E9", "#E69F00", "#CC79A7")
WIDTH_IN, HEIGHT_IN = 7.0, 2.6

Number = int | float | Decimal


def _figure(width: float = WIDTH_IN, height: float = HEIGHT_IN) -> tuple[Figure, Axes]:
    """A figure bound to the Agg canvas, never registered with pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=8)
    return fig, ax


def _require(name: str, *series: Sequence[object]) -> int:
    lengths = {len(s) for s in series}
    if len(lengths) != 1:
        raise QuarterdeckError(f"chart {name}: series of different lengths {sorted(lengths)}")
    (n,) = lengths
    if n == 0:
        raise QuarterdeckError(f"chart {name}: no data (render the section's note instead)")
    return n


def _legend(fig: Figure) -> None:
    """A legend above the plot, outside it, so it never hides a bar or a line."""
    fig.legend(fontsize=8, frameon=False, loc="outside upper left", ncols=4)


def _day_labels(days: Sequence[date]) -> list[str]:
    return [f"{d.day}" for d in days]


def _thin_ticks(ax: Axes, labels: Sequence[str], every: int = 1) -> None:
    positions = list(range(len(labels)))
    ax.set_xticks(positions[::every], [labels[i] for i in positions[::every]])


def runs_per_day(
    days: Sequence[date],
    succeeded: Sequence[int],
    failed: Sequence[int],
    other: Sequence[int] | None = None,
    *,
    other_label: str = "cancelled / unfinished",
) -> Figure:
    """Runs per day, stacked: succeeded, then failed, then (when given) the rest."""
    _require("runs_per_day", days, succeeded, failed, *([other] if other is not None else []))
    fig, ax = _figure()
    x = range(len(days))
    ax.bar(x, succeeded, color=SUCCEEDED, label="succeeded", width=0.8)
    ax.bar(x, failed, bottom=succeeded, color=FAILED, label="failed", width=0.8)
    if other is not None:
        base = [s + f for s, f in zip(succeeded, failed, strict=True)]
        ax.bar(x, other, bottom=base, color=OTHER, label=other_label, width=0.8)
    _thin_ticks(ax, _day_labels(days), every=2 if len(days) > 16 else 1)
    ax.set_xlabel(f"day of {days[0]:%B %Y}", fontsize=8)
    ax.set_ylabel("runs", fontsize=8)
    _legend(fig)
    return fig


def gateway_calls_per_day(
    days: Sequence[date], calls: Sequence[int], errors: Sequence[int] | None = None
) -> Figure:
    """Gateway calls per day; errors, when given, drawn as the failed part of each bar."""
    _require("gateway_calls_per_day", days, calls, *([errors] if errors is not None else []))
    fig, ax = _figure()
    x = range(len(days))
    if errors is None:
        ax.bar(x, calls, color=NEUTRAL, width=0.8, label="calls")
    else:
        ok = [c - e for c, e in zip(calls, errors, strict=True)]
        ax.bar(x, ok, color=NEUTRAL, width=0.8, label="answered")
        ax.bar(x, errors, bottom=ok, color=FAILED, width=0.8, label="errors")
        _legend(fig)
    _thin_ticks(ax, _day_labels(days), every=2 if len(days) > 16 else 1)
    ax.set_xlabel(f"day of {days[0]:%B %Y}", fontsize=8)
    ax.set_ylabel("gateway calls", fontsize=8)
    return fig


def latency_percentiles(
    labels: Sequence[str],
    p50: Sequence[float | None],
    p95: Sequence[float | None],
    p99: Sequence[float | None],
    *,
    unit: str = "s",
) -> Figure:
    """p50/p95/p99 per period (a week, usually); a period without samples is a gap, not a 0."""
    _require("latency_percentiles", labels, p50, p95, p99)
    fig, ax = _figure()
    x = list(range(len(labels)))
    for name, values, colour in zip(
        ("p50", "p95", "p99"), (p50, p95, p99), PERCENTILES, strict=True
    ):
        ys = [float("nan") if v is None else float(v) for v in values]
        ax.plot(x, ys, marker="o", markersize=3.5, color=colour, label=name, linewidth=1.6)
    _thin_ticks(ax, labels)
    ax.set_ylim(bottom=0)
    ax.set_ylabel(f"latency ({unit})", fontsize=8)
    _legend(fig)
    return fig


def cost_per_model(models: Sequence[str], cost_usd: Sequence[Number]) -> Figure:
    """Spend per model, largest first, as horizontal bars (model names are long)."""
    n = _require("cost_per_model", models, cost_usd)
    pairs = sorted(zip(models, (float(c) for c in cost_usd), strict=True), key=lambda p: p[1])
    fig, ax = _figure(height=max(1.4, 0.35 * n + 0.7))
    ax.barh(range(n), [c for _, c in pairs], color=NEUTRAL, height=0.6)
    ax.set_yticks(range(n), [m for m, _ in pairs])
    ax.grid(axis="y", visible=False)
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    ax.set_xlabel("cost (USD)", fontsize=8)
    return fig


def mttr_histogram(labels: Sequence[str], counts: Sequence[int]) -> Figure:
    """Incidents per time-to-resolve bucket: the distribution, since a mean hides the one long
    outage. Buckets come labelled from the report, so the chart and its table agree."""
    from matplotlib.ticker import MaxNLocator

    _require("mttr_histogram", labels, counts)
    fig, ax = _figure()
    ax.bar(range(len(labels)), counts, color=NEUTRAL, width=0.85)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel("time to resolve", fontsize=8)
    ax.set_ylabel("incidents", fontsize=8)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


_XML_PROLOGUE = re.compile(r"\A.*?(?=<svg\b)", re.DOTALL)


def to_svg(fig: Figure) -> str:
    """The figure as an ``<svg>`` element ready to inline in HTML (XML prologue and DOCTYPE cut,
    no creation date so the same data gives the same bytes)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    return _XML_PROLOGUE.sub("", buf.getvalue(), count=1)


def to_png(fig: Figure, *, dpi: int = 150) -> bytes:
    """The figure as PNG bytes (Agg), for consumers that cannot take SVG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()
