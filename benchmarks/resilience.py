"""Issue 4 benchmark: the latency the resilience layer adds to a healthy model call.

Compares ``provider.complete`` with ``ResilientCaller.call`` (retry policy, circuit breaker,
no rate limit configured, in-process breaker store) on the simulated provider at zero latency, in
one process, so the difference is the layer's own cost.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from benchmarks.harness import percentile
from quarterdeck.kit.latency import parse_latency
from quarterdeck.providers.simulated import SimulatedProvider
from quarterdeck.providers.types import Message, ModelRequest, TextBlock
from quarterdeck.resilience.calls import ResilientCaller


def overhead(n: int = 20_000) -> dict[str, Any]:
    async def measure() -> tuple[list[float], list[float]]:
        provider = SimulatedProvider(parse_latency("0"), 0.0, 1)
        caller = ResilientCaller(provider)
        request = ModelRequest(
            model="simulated-sonnet",
            messages=[Message("user", [TextBlock("x")])],
            metadata={"run_id": "run_bench", "turn": "0"},
        )
        direct, wrapped = [], []
        for _ in range(2_000):  # warm up both paths
            await provider.complete(request)
            await caller.call("coder", request)
        for _ in range(n):
            t = time.perf_counter()
            await provider.complete(request)
            direct.append(time.perf_counter() - t)
            t = time.perf_counter()
            await caller.call("coder", request)
            wrapped.append(time.perf_counter() - t)
        return direct, wrapped

    direct, wrapped = asyncio.run(measure())
    added = [w - d for w, d in zip(wrapped, direct, strict=True)]
    return {
        "calls": n,
        "direct_p50_us": round(percentile(direct, 50) * 1e6, 1),
        "resilient_p50_us": round(percentile(wrapped, 50) * 1e6, 1),
        "resilient_p99_us": round(percentile(wrapped, 99) * 1e6, 1),
        "added_p50_us": round(percentile(added, 50) * 1e6, 1),
        "added_p99_us": round(percentile(added, 99) * 1e6, 1),
        "goal_added_p99_us": 1000,
    }


def chaos(runs: int = 100, fast: bool = True) -> dict[str, Any]:
    """Detection and recovery time per chaos scenario, and the share of incidents resolved
    without a human (the guide claims 89.3 %). Fast mode (1 s checks, 5 s breakers, 10 s
    faults) keeps ``make bench`` to minutes; ``quarterdeck chaos run`` without ``--fast`` uses
    production timings."""
    from quarterdeck.chaos.runner import Runner
    from quarterdeck.chaos.scenarios import SCENARIOS

    runner = Runner(runs=runs, fast=fast, keep=False, log=lambda _m: None)
    out: dict[str, Any] = {"mode": "fast" if fast else "production", "runs_per_scenario": runs}
    resolved = auto = 0
    try:
        for name, scenario in SCENARIOS.items():
            r = runner.run(scenario)
            out[f"{name}.passed"] = r.passed
            out[f"{name}.lost"] = len(r.lost)
            out[f"{name}.duplicated"] = len(r.duplicated)
            out[f"{name}.detection_s"] = None if r.detection_s is None else round(r.detection_s, 1)
            out[f"{name}.recovery_s"] = None if r.recovery_s is None else round(r.recovery_s, 1)
            for incident in r.incidents:
                if incident.get("status") == "resolved":
                    resolved += 1
                    auto += incident.get("resolved_by") == "auto"
    finally:
        runner.close()
    out["incidents_resolved"] = resolved
    out["auto_resolved_share_pct"] = round(100 * auto / resolved, 1) if resolved else None
    out["goal"] = "detect <= 20 s, recover <= 60 s (production timings)"
    return out
