"""Compare scaling policies on one trace: the table, the JSON, and a hand-drawn SVG chart.

Why here and not in the CLI: the comparison is what ``quarterdeck scaler simulate`` and
``make bench`` print, and what the issue's goal is judged by (Quarterdeck's queue wait p99 at
least 5x lower than the guide's HPA, with no more worker-hours and no flapping), so it is plain
data the CLI only formats.  The chart is SVG written by hand (no plotting library to install):
one panel per policy, sharing both axes, so the panels can be compared at a glance.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any
from xml.sax.saxutils import escape

from quarterdeck.scaling.policy import PolicyName, ScalerConfig, make_policy
from quarterdeck.scaling.simulate import Sample, SimResult, simulate
from quarterdeck.scaling.trace import Trace

__all__ = ["GOAL_P99_FACTOR", "Comparison", "compare", "render_svg"]

GOAL_P99_FACTOR = 5.0
"""The issue's goal: Quarterdeck's p99 queue wait at least this many times lower than the HPA's."""


@dataclass(frozen=True, slots=True)
class Comparison:
    """The results of several policies over one trace, same config, same start."""

    trace: str
    config: ScalerConfig
    settings: dict[str, Any]  # the simulate() keyword arguments every run used
    results: dict[str, SimResult]  # in the order the policies were asked for

    def ratios(self) -> dict[str, Any] | None:
        """Quarterdeck against the guide's HPA, if both ran: the issue's goal, clause by clause.

        ``p99_wait_ratio`` is HPA p99 / Quarterdeck p99 (higher is better; ``None`` when
        Quarterdeck's p99 is 0, which meets the clause whenever the HPA's is not 0 too),
        ``worker_hours_ratio`` Quarterdeck / HPA (at most 1 is the goal), ``flaps`` Quarterdeck's
        direction changes within the flap window.  Each clause has its own ``*_ok`` flag, so a
        miss says which clause missed; ``goal_met`` is all three.
        """
        ours, theirs = self.results.get("quarterdeck"), self.results.get("guide-hpa")
        if ours is None or theirs is None:
            return None
        p99 = theirs.wait_p99_s / ours.wait_p99_s if ours.wait_p99_s > 0 else None
        hours = ours.worker_hours / theirs.worker_hours if theirs.worker_hours > 0 else None
        p99_ok = theirs.wait_p99_s >= GOAL_P99_FACTOR * ours.wait_p99_s and (
            ours.wait_p99_s > 0 or theirs.wait_p99_s > 0
        )
        hours_ok = ours.worker_hours <= theirs.worker_hours
        flaps_ok = ours.flaps == 0
        return {
            "p99_wait_ratio": p99,
            "p99_ok": p99_ok,
            "worker_hours_ratio": hours,
            "worker_hours_ok": hours_ok,
            "flaps": ours.flaps,
            "flaps_ok": flaps_ok,
            "goal_met": p99_ok and hours_ok and flaps_ok,
        }

    def goal_lines(self) -> list[str]:
        """The goal's clauses as short lines a person reads (empty without both policies)."""
        r = self.ratios()
        if r is None:
            return []
        ours, theirs = self.results["quarterdeck"], self.results["guide-hpa"]

        def mark(ok: bool) -> str:
            return "yes" if ok else "NO"

        p99 = "inf" if r["p99_wait_ratio"] is None else f"{r['p99_wait_ratio']:.1f}"
        hours = "n/a" if r["worker_hours_ratio"] is None else f"{r['worker_hours_ratio']:.2f}"
        return [
            f"wait p99, guide-hpa / quarterdeck: {p99}x "
            f"({_duration(theirs.wait_p99_s)} vs {_duration(ours.wait_p99_s)}); "
            f">= {GOAL_P99_FACTOR:g}: {mark(r['p99_ok'])}",
            f"worker-hours, quarterdeck / guide-hpa: {hours} "
            f"({ours.worker_hours:.1f} vs {theirs.worker_hours:.1f}); <= 1: {mark(r['worker_hours_ok'])}",
            f"quarterdeck flaps (direction change within {ours.flap_window_s:g} s): {ours.flaps}; "
            f"= 0: {mark(r['flaps_ok'])}",
            f"goal met: {mark(r['goal_met'])}",
        ]

    def to_dict(self, *, series: bool = True) -> dict[str, Any]:
        """Everything, JSON-ready; ``series`` adds each policy's per-minute samples as columns."""
        policies: dict[str, Any] = {}
        for name, result in self.results.items():
            entry = result.summary()
            entry["events"] = [
                {"at": d.at, "from": d.current, "to": d.desired, "reason": d.reason}
                for d in result.events
            ]
            if series:
                entry["series"] = _columns(result.series)
            policies[name] = entry
        return {
            "trace": self.trace,
            "config": asdict(self.config),
            "settings": self.settings,
            "policies": policies,
            "ratios": self.ratios(),
        }

    def to_json(self, *, series: bool = True, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(series=series), indent=indent)

    def table_rows(self) -> list[dict[str, str]]:
        """One row per policy, as formatted text keyed by column title (insertion-ordered)."""
        rows = []
        for name, r in self.results.items():
            rows.append(
                {
                    "policy": name,
                    "wait p50": _duration(r.wait_p50_s),
                    "wait p95": _duration(r.wait_p95_s),
                    "wait p99": _duration(r.wait_p99_s),
                    "wait max": _duration(r.wait_max_s),
                    f"min > {_duration(r.wait_target_s)}": str(r.minutes_over_target),
                    "worker-hours": f"{r.worker_hours:.1f}",
                    "scale events": str(r.scale_events),
                    "flaps": str(r.flaps),
                    "peak replicas": str(r.peak_replicas),
                    "unfinished": str(r.unfinished),
                }
            )
        return rows

    def table_columns(self) -> tuple[list[str], list[list[str]]]:
        """The table transposed — metrics as rows, policies as columns — so it fits 80 columns
        whatever the metric names: ``(header, rows)``, header ``["", policy, ...]``."""
        per_policy = self.table_rows()
        if not per_policy:
            return [""], []
        metrics = [k for k in per_policy[0] if k != "policy"]
        header = ["", *(row["policy"] for row in per_policy)]
        return header, [[m, *(row[m] for row in per_policy)] for m in metrics]


def compare(
    trace: Trace, policies: Sequence[PolicyName], config: ScalerConfig, **settings: Any
) -> Comparison:
    """Run each named policy, fresh, over ``trace`` with ``config``; ``settings`` go to
    :func:`~quarterdeck.scaling.simulate.simulate` unchanged (``step_s``, ``pod_start_s``, ...)
    so every policy starts from the same replicas and sees the same world."""
    if not policies:
        raise ValueError("compare needs at least one policy")
    results: dict[str, SimResult] = {
        name: simulate(trace, make_policy(name, config), config, **settings) for name in policies
    }
    return Comparison(trace=trace.name, config=config, settings=dict(settings), results=results)


def _columns(series: Sequence[Sample]) -> dict[str, list[float | int]]:
    return {
        "t": [s.t for s in series],
        "arrivals": [s.arrivals for s in series],
        "queued": [s.queued for s in series],
        "running": [s.running for s in series],
        "replicas": [s.replicas for s in series],
        "ready": [s.ready for s in series],
    }


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "never"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# --- the chart --------------------------------------------------------------------------------

_WIDTH, _PANEL_H, _LEFT, _RIGHT, _TOP, _BOTTOM = 960, 230, 64, 64, 34, 30
_MAX_POINTS = 720
_DEMAND, _BACKLOG, _REPLICAS = "#c8ccd2", "#d1453b", "#2f6fd0"


def _buckets(series: Sequence[Sample]) -> list[tuple[float, int, int, int]]:
    """(t, demand, queued, replicas) with at most ``_MAX_POINTS`` points: each bucket keeps its
    maxima, so a short burst stays visible however long the trace."""
    size = max(1, math.ceil(len(series) / _MAX_POINTS))
    points = []
    for i in range(0, len(series), size):
        chunk = series[i : i + size]
        points.append(
            (
                chunk[0].t,
                max(s.queued + s.running for s in chunk),
                max(s.queued for s in chunk),
                max(s.replicas for s in chunk),
            )
        )
    return points


def _nice_step(top: float, ticks: int = 4) -> float:
    """A 1/2/5 x 10^k step that splits ``[0, top]`` into about ``ticks`` parts."""
    raw = max(top, 1.0) / ticks
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


@dataclass(frozen=True, slots=True)
class _Frame:
    """The shared scales of every panel: hours across, runs on the left, replicas on the right."""

    end_h: float
    runs_max: float
    runs_step: float
    reps_max: float
    reps_step: float

    def x(self, t_s: float) -> float:
        return _LEFT + (_WIDTH - _LEFT - _RIGHT) * (t_s / 3600.0) / self.end_h

    def y(self, value: float, top: float, scale_max: float) -> float:
        return top + (_PANEL_H - _TOP - _BOTTOM) * (1 - value / scale_max)


def render_svg(comparison: Comparison) -> str:
    """Replicas (blue, right axis) and backlog (red) against load (grey: queued + running runs,
    left axis) over time, one panel per policy; all panels share both axes."""
    results = list(comparison.results.values())
    runs_top = max((s.queued + s.running for r in results for s in r.series), default=0)
    reps_top = max([comparison.config.max_replicas, *(r.peak_replicas for r in results)])
    runs_step, reps_step = _nice_step(runs_top), _nice_step(reps_top)
    frame = _Frame(
        end_h=max((r.end_s for r in results), default=0.0) / 3600.0 or 1.0,
        runs_max=runs_step * math.ceil(max(runs_top, 1) / runs_step),
        runs_step=runs_step,
        reps_max=reps_step * math.ceil(reps_top / reps_step),
        reps_step=reps_step,
    )
    height = _PANEL_H * len(results) + 28
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" '
        f'viewBox="0 0 {_WIDTH} {height}" font-family="sans-serif" font-size="11">',
        f"<title>{escape(f'Scaling policies on {comparison.trace}')}</title>",
        '<rect width="100%" height="100%" fill="white"/>',
        *_legend(),
    ]
    for index, result in enumerate(results):
        out.extend(_panel(result, 28 + index * _PANEL_H + _TOP, frame))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _panel(result: SimResult, top: float, f: _Frame) -> list[str]:
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _PANEL_H - _TOP - _BOTTOM
    title = (
        f"{result.policy}: wait p99 {_duration(result.wait_p99_s)}, "
        f"{result.worker_hours:.1f} worker-hours, {result.scale_events} scale events, "
        f"{result.flaps} flaps"
    )
    out = [
        f'<text x="{_LEFT}" y="{top - 8:.1f}" font-weight="bold">{escape(title)}</text>',
        f'<rect x="{_LEFT}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
        'stroke="#888"/>',
        *_axes(top, f),
    ]
    points = _buckets(result.series)
    if not points:
        return out
    base = f.y(0, top, f.runs_max)
    area = " ".join(f"{f.x(t):.1f},{f.y(d, top, f.runs_max):.1f}" for t, d, _, _ in points)
    first, last = f.x(points[0][0]), f.x(points[-1][0])
    out.append(
        f'<polygon fill="{_DEMAND}" stroke="none" '
        f'points="{first:.1f},{base:.1f} {area} {last:.1f},{base:.1f}"/>'
    )
    backlog = " ".join(f"{f.x(t):.1f},{f.y(q, top, f.runs_max):.1f}" for t, _, q, _ in points)
    out.append(f'<polyline fill="none" stroke="{_BACKLOG}" stroke-width="1.2" points="{backlog}"/>')
    steps: list[str] = []
    previous: float | None = None
    for t, _, _, reps in points:
        px, py = f.x(t), f.y(reps, top, f.reps_max)
        if previous is not None:
            steps.append(f"{px:.1f},{previous:.1f}")  # a step: hold, then jump
        steps.append(f"{px:.1f},{py:.1f}")
        previous = py
    out.append(
        f'<polyline fill="none" stroke="{_REPLICAS}" stroke-width="1.6" '
        f'points="{" ".join(steps)}"/>'
    )
    return out


def _legend() -> list[str]:
    items = [
        (_DEMAND, "load: queued + running runs"),
        (_BACKLOG, "backlog: queued runs"),
        (_REPLICAS, "replicas (right axis)"),
    ]
    parts = []
    for i, (color, label) in enumerate(items):
        left = _LEFT + 230 * i
        parts.append(f'<rect x="{left}" y="9" width="14" height="10" fill="{color}"/>')
        parts.append(f'<text x="{left + 19}" y="18">{escape(label)}</text>')
    return parts


def _ticks(top: float, step: float) -> list[float]:
    count = math.floor(top / step + 1e-9)
    return [i * step for i in range(count + 1)]


def _axes(top: float, f: _Frame) -> list[str]:
    """Tick labels: hours below, runs on the left, replicas on the right."""
    bottom = top + _PANEL_H - _TOP - _BOTTOM
    parts = []
    for h in _ticks(f.end_h, _nice_step(f.end_h, 8)):
        px = f.x(h * 3600.0)
        parts.append(
            f'<line x1="{px:.1f}" y1="{bottom}" x2="{px:.1f}" y2="{bottom + 4}" stroke="#888"/>'
        )
        parts.append(f'<text x="{px:.1f}" y="{bottom + 16}" text-anchor="middle">{h:g} h</text>')
    for v in _ticks(f.runs_max, f.runs_step):
        py = f.y(v, top, f.runs_max)
        parts.append(f'<text x="{_LEFT - 6}" y="{py + 4:.1f}" text-anchor="end">{v:g}</text>')
    for v in _ticks(f.reps_max, f.reps_step):
        py = f.y(v, top, f.reps_max)
        parts.append(
            f'<text x="{_WIDTH - _RIGHT + 6}" y="{py + 4:.1f}" fill="{_REPLICAS}">{v:g}</text>'
        )
    return parts
