"""``scaling.policies``: the sample days through Quarterdeck's scaling policy and the guide's two.

The issue's goal, reported beside the figures (never asserted): on the sample day, queue wait
p99 at least 5 times lower than the guide's HPA with no more worker-hours, and no flapping.
"""

from __future__ import annotations

from typing import Any

from quarterdeck.scaling.policy import ScalerConfig
from quarterdeck.scaling.report import compare
from quarterdeck.scaling.trace import SAMPLES_DIR, load_trace

DAYS = ("synthetic-day", "coding-agent-day")
POLICIES = ("quarterdeck", "guide-hpa", "guide-pressure")


def policies() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for day in DAYS:
        trace = load_trace(SAMPLES_DIR / f"{day}.csv.gz")
        result = compare(trace, POLICIES, ScalerConfig())
        for name, r in result.results.items():
            prefix = f"{day}.{name}"
            out[f"{prefix}.wait_p99_s"] = round(r.wait_p99_s, 1)
            out[f"{prefix}.worker_hours"] = round(r.worker_hours, 1)
            out[f"{prefix}.scale_events"] = r.scale_events
            out[f"{prefix}.flaps"] = r.flaps
        for key, value in (result.ratios() or {}).items():
            out[f"{day}.{key}"] = round(value, 2) if isinstance(value, float) else value
    return out


if __name__ == "__main__":
    for metric, value in policies().items():
        print(f"{metric:<50} {value}")
