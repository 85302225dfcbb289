"""``scaling.policies``: every sample day through Quarterdeck's scaling policy and the guide's two.

The issue's goal, reported beside the figures clause by clause (never asserted here; the unit
test ``test_scaling_goal`` asserts it on the default sample day): on the sample day, queue wait
p99 at least 5 times lower than the guide's HPA, with no more worker-hours, and no flapping.
``overload-day`` is reported too, as the day where nobody can meet the worker-hours clause (see
``quarterdeck/scaling/traces/README.md``).
"""

from __future__ import annotations

from typing import Any

from quarterdeck.scaling.policy import ScalerConfig
from quarterdeck.scaling.report import compare
from quarterdeck.scaling.trace import SAMPLES, load_trace, sample_path

POLICIES = ("quarterdeck", "guide-hpa", "guide-pressure")


def policies() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for day in SAMPLES:
        result = compare(load_trace(sample_path(day)), POLICIES, ScalerConfig())
        for name, r in result.results.items():
            prefix = f"{day}.{name}"
            out[f"{prefix}.wait_p50_s"] = round(r.wait_p50_s, 1)
            out[f"{prefix}.wait_p99_s"] = round(r.wait_p99_s, 1)
            out[f"{prefix}.worker_hours"] = round(r.worker_hours, 1)
            out[f"{prefix}.scale_events"] = r.scale_events
            out[f"{prefix}.flaps"] = r.flaps
            out[f"{prefix}.peak_replicas"] = r.peak_replicas
        for key, value in (result.ratios() or {}).items():
            out[f"{day}.goal.{key}"] = round(value, 2) if isinstance(value, float) else value
    return out


if __name__ == "__main__":
    for metric, value in policies().items():
        print(f"{metric:<50} {value}")
