"""``make bench``: run every benchmark, write JSON to benchmarks/results/, print a table.

Goals are reported beside measurements, never asserted: timing belongs here, not in tests.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import (
    audit,
    caching,
    checkpoint,
    core_runs,
    gateway,
    policy,
    resilience,
    scaling,
    tracing,
    ui_pages,
)

RESULTS = Path(__file__).parent / "results"
SUITES: dict[str, Callable[[], dict[str, Any]]] = {
    "core.throughput": core_runs.throughput,
    "core.submit_to_start": core_runs.submit_to_start,
    "core.worker_memory": core_runs.worker_memory,
    "resilience.overhead": resilience.overhead,
    "resilience.chaos": resilience.chaos,
    "security.policy_gate": policy.gate_latency,
    "security.audit_appends": audit.appends,
    "security.audit_verify_million": audit.verify_million,
    "gateway.overhead": gateway.overhead,
    "workspace.checkpoint": checkpoint.per_turn,
    "caching.savings": caching.savings,
    "ui.pages": ui_pages.pages,
    "scaling.policies": scaling.policies,
    "tracing.overhead": tracing.overhead,
    "tracing.overhead_latency_bound": tracing.overhead_latency_bound,
}


USAGE = """usage: python -m benchmarks.run [PREFIX ...]   (make bench: all of them)

Runs the benchmarks whose names start with a PREFIX (all without one), writes
benchmarks/results/bench-*.json and latest.json, and prints a table. Benchmarks:
"""


def main(selected: list[str]) -> None:
    if any(arg in ("-h", "--help") for arg in selected):
        print(USAGE + "".join(f"  {name}\n" for name in SUITES))
        return
    unknown = [s for s in selected if not any(name.startswith(s) for name in SUITES)]
    if unknown:
        print(
            f"error: no benchmark starts with {', '.join(unknown)}; --help lists them",
            file=sys.stderr,
        )
        raise SystemExit(2)
    RESULTS.mkdir(exist_ok=True)
    results: dict[str, Any] = {}
    for name, fn in SUITES.items():
        if selected and not any(name.startswith(s) for s in selected):
            continue
        print(f"running {name} ...", flush=True)
        started = time.time()
        try:
            results[name] = fn()
        except Exception as exc:  # report and go on: one broken bench must not hide the rest
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        results[name]["wall_seconds"] = round(time.time() - started, 1)
    meta = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpus": __import__("os").cpu_count(),
    }
    out = RESULTS / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    (RESULTS / "latest.json").write_text(out.read_text())
    print(f"\n{'benchmark':<28} {'metric':<26} {'value':>12}")
    for name, data in results.items():
        for key, value in data.items():
            print(f"{name:<28} {key:<26} {value!s:>12}")
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
