"""The report's incidents section, from the incident tables (availability, which also reads
maintenance windows and probe history, is :mod:`.build_availability`).

Why a distribution for time to resolve: a mean is swamped by the heavy tail of a few long
incidents (research notes §4.3), so the section gives p50/p90/max, a histogram and the longest
incidents.
"""

from __future__ import annotations

import asyncpg

from quarterdeck.reports import incident_repository as repo
from quarterdeck.reports.build import PLATFORM_NOTE, Period, none_note, quantile
from quarterdeck.reports.compute import RESOLUTION_EDGES_MINUTES, bucket_label, ratio
from quarterdeck.reports.models import (
    Count,
    HistogramBucket,
    IncidentRow,
    IncidentsSection,
    ResolutionStats,
)

__all__ = ["incidents"]


async def incidents(conn: asyncpg.Connection, p: Period) -> IncidentsSection:
    if p.tenant is not None:
        return IncidentsSection(has_data=False, note=PLATFORM_NOTE)
    end = p.observed_end
    counts = await repo.incident_counts(conn, p.start, end)
    total = sum(int(r["n"]) for r in counts)
    if total == 0:
        return IncidentsSection(has_data=False, note=none_note("incidents", p))
    sev: dict[str, int] = {}
    src: dict[str, int] = {}
    for r in counts:
        sev[r["severity"]] = sev.get(r["severity"], 0) + int(r["n"])
        src[r["source"]] = src.get(r["source"], 0) + int(r["n"])
    order = ["critical", "high", "medium", "low", "info"]
    res = await repo.incident_resolution(conn, p.start, end)
    edges = RESOLUTION_EDGES_MINUTES
    bars = {
        int(b["bar"]): int(b["n"]) for b in await repo.incident_histogram(conn, p.start, end, edges)
    }
    resolved = int(res["resolved"])
    auto = int(res["auto"])
    longest = await repo.longest_incidents(conn, p.start, end)
    return IncidentsSection(
        has_data=True,
        total=total,
        by_severity=[Count(key=k, count=sev[k]) for k in order if k in sev],
        by_source=[Count(key=k, count=v) for k, v in sorted(src.items())],
        resolved=resolved,
        open_at_end=int(res["open_at_end"]),
        resolution=ResolutionStats(
            count=resolved,
            p50_minutes=quantile(res["q"], 0),
            p90_minutes=quantile(res["q"], 1),
            max_minutes=res["max_minutes"],
            mean_minutes=res["mean_minutes"],
        ),
        resolution_histogram=[
            HistogramBucket(
                label=bucket_label(edges, i),
                lower=edges[i],
                upper=edges[i + 1] if i + 1 < len(edges) else None,
                count=bars.get(i + 1, 0),
            )
            for i in range(len(edges))
        ],
        auto_recovered=auto,
        auto_recovered_share=ratio(auto, resolved),
        human_interventions=int(res["human"]),
        longest=[
            IncidentRow(
                id=r["id"],
                title=r["title"],
                service=r["service"],
                severity=r["severity"],
                source=r["source"],
                opened_at=r["opened_at"],
                resolved_at=r["resolved_at"] if not r["ongoing"] else None,
                resolved_by=r["resolved_by"] if not r["ongoing"] else None,
                minutes=float(r["minutes"]),
                ongoing=bool(r["ongoing"]),
            )
            for r in longest
        ],
    )
