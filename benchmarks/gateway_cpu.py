"""CPU the gateway's API process spends per relayed call: a before/after measure for a busy box.

Wall-clock latency (``benchmarks.gateway``) means something only on a quiet machine. CPU time
is disturbed less by other processes, though not at all undisturbed (contention for caches and
cores inflates it too), so this compares builds *side by side*: one ``quarterdeck up`` per build
(``--baseline DIR`` runs a second one with ``PYTHONPATH=DIR``, e.g. ``git archive HEAD src``
unpacked there), each relaying to the same stand-in, and the rounds alternate between them so
both see the same load. For each body size (8 KB, 80 KB) and mode (JSON, SSE), every round sends
``n`` requests one at a time on one keep-alive connection and reads the API process's user and
system CPU from ``/proc/<pid>/stat`` before and after; the least CPU per call over the rounds is
the figure (the idle workers in the process add about 1 %).

``python -m benchmarks.gateway_cpu [--n 400] [--rounds 5] [--baseline /tmp/qd-base/src]``
prints microseconds of CPU per call per cell and build.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

from benchmarks.gateway import (
    MODES,
    SIZES,
    UPSTREAM_KEY,
    Conn,
    Target,
    _run,
    claude_code_body,
    start_upstream,
)
from benchmarks.harness import Bench
from quarterdeck.chaos.process import Process

TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of process ``pid`` so far (threads included, children not)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) * TICK_S, int(fields[12]) * TICK_S


async def _round(target: Target, request: bytes, pid: int, n: int) -> float:
    """CPU per call over ``n`` calls on a fresh connection (the server closes one left idle
    while the other build has its round)."""
    conn = await Conn.open(target.port)
    try:
        for _ in range(5):
            status, *_ = await conn.exchange(request)
        await asyncio.sleep(0.3)  # the recorder's batch of earlier calls lands outside the round
        user0, sys0 = cpu_split(pid)
        for _ in range(n):
            status, *_ = await conn.exchange(request)
            assert status == 200, status
        user1, sys1 = cpu_split(pid)
    finally:
        conn.close()
    return (user1 + sys1 - user0 - sys0) / n


async def _cells(
    builds: dict[str, tuple[Target, int]], n: int, warmup: int, rounds: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, size in SIZES.items():
        for mode in MODES:
            body = claude_code_body(size, mode == "sse")
            samples: dict[str, list[float]] = {name: [] for name in builds}
            for target, pid in builds.values():
                await _round(target, target.request(body), pid, warmup)
            for _ in range(rounds):
                for name, (target, pid) in builds.items():
                    samples[name].append(await _round(target, target.request(body), pid, n))
            out[f"{label}.{mode}"] = {
                name: {
                    "cpu_us_min": round(min(s) * 1e6),
                    "cpu_us_median": round(sorted(s)[len(s) // 2] * 1e6),
                }
                for name, s in samples.items()
            }
    return out


def measure(
    n: int = 400,
    warmup: int = 200,
    rounds: int = 5,
    baseline: str | None = None,
    **env: str,
) -> dict[str, Any]:
    upstream: Process | None = None
    benches: list[Bench] = []
    try:
        first = Bench("gateway-cpu")
        benches.append(first)
        upstream, upstream_port = start_upstream(first.root)
        settings = {
            "QUARTERDECK_SIMULATED_LATENCY": "0",
            "QUARTERDECK_GATEWAY_UPSTREAM_URL": f"http://127.0.0.1:{upstream_port}",
            "QUARTERDECK_GATEWAY_UPSTREAM_API_KEY": UPSTREAM_KEY,
            **env,
        }
        builds: dict[str, tuple[Target, int]] = {}
        variants = [("current", {})]
        if baseline is not None:
            variants.insert(0, ("baseline", {"PYTHONPATH": baseline}))
        for index, (name, extra) in enumerate(variants):
            bench = first if index == 0 else Bench(f"gateway-cpu-{name}")
            if bench is not first:
                benches.append(bench)
            replica = bench.start("up", **settings, **extra)
            builds[name] = (Target(name, int(bench.url.rsplit(":", 1)[1])), replica.pid)
        return _run(_cells(builds, n, warmup, rounds))
    finally:
        for bench in reversed(benches):
            bench.stop()
        if upstream is not None:
            upstream.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=400, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", help="a src/ directory to compare against")
    args = parser.parse_args()
    result = measure(args.n, rounds=args.rounds, baseline=args.baseline)
    print(json.dumps(result, indent=2))
