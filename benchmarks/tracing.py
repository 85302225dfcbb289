"""Issue 21 benchmark: what OpenTelemetry tracing with OTLP export costs a run.

The same deployment is measured with tracing off and on in one benchmark run, in the order
off, on, on-without-query-spans, on-sampled, then the reverse, so a drift of the machine (other
load, the runs table growing) weighs on every side alike. "On" is the OTLP/HTTP exporter sending to a
local receiver (:mod:`tests.support.otlp_receiver`, which decodes every request as a collector
would) with every span sampled: HTTP server spans, ``invoke_agent``, ``chat`` and
``execute_tool`` spans, and the asyncpg query spans inside them; the third side turns the query
spans off (``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=asyncpg``), the first lever to pull; the
fourth samples a tenth of the traces (``parentbased_traceidratio``, 0.1), the second.

Two figures per side: end-to-end runs/s, and the server process's CPU time per run (user +
system from ``/proc``, so neither Postgres nor the load generator is counted), which moves
less with the machine's other load than a rate does.
"""

from __future__ import annotations

import statistics
from typing import Any

from tests.support.otlp_receiver import OtlpReceiver

from benchmarks.core_runs import _measure
from benchmarks.harness import Bench, cpu_seconds

RUN_SETTINGS = {
    "QUARTERDECK_SIMULATED_LATENCY": "0",
    "QUARTERDECK_SIMULATED_TURNS": "1",
    "QUARTERDECK_WORKER_CONCURRENCY": "200",
    "QUARTERDECK_WORKER_BATCH_SIZE": "50",
    "QUARTERDECK_DB_POOL_MAX": "20",
    # One process: one event loop carries the whole run path, so whatever tracing adds to it
    # shows in full (more processes would hide it behind spare cores).
    "QUARTERDECK_WORKER_PROCESSES": "1",
}
SIDES = ("off", "on", "on_no_query_spans", "on_sampled_10pct")


def _otel(side: str, endpoint: str) -> dict[str, str]:
    if side == "off":
        return {"OTEL_SDK_DISABLED": "true"}
    env = {
        "OTEL_SDK_DISABLED": "false",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "",
    }
    if side == "on_no_query_spans":
        env["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "asyncpg"
    if side == "on_sampled_10pct":  # a tenth of the requests' traces, runs with their parent
        env["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
        env["OTEL_TRACES_SAMPLER_ARG"] = "0.1"
    return env


def overhead(n: int = 3000, warmup: int = 1000, rounds: int = 2) -> dict[str, Any]:
    """Runs/s end to end (batched HTTP submission through to succeeded, one turn, zero model
    latency: the worst case for tracing, since no model time dilutes it) and server CPU per
    run, each side measured ``rounds`` times; means, and what export costs against off."""
    return _compare("tracing", SIDES, RUN_SETTINGS, n, warmup, rounds)


LATENCY_BOUND = {
    **RUN_SETTINGS,
    # A model call that takes what a real one does (the simulated provider's lognormal around
    # 1.5 s) and the script's 2 to 6 turns: what a worker's run throughput is made of in
    # production, where the model's time, not the worker's CPU, bounds it.
    "QUARTERDECK_SIMULATED_LATENCY": "lognormal:1.5s:0.6",
    "QUARTERDECK_SIMULATED_TURNS": "0",
}


def overhead_latency_bound(n: int = 1500, rounds: int = 2) -> dict[str, Any]:
    """The same comparison with realistic model latency: runs/s and server CPU per run, tracing
    off and on (every span exported), alternating order over ``rounds``."""
    return _compare("tracing-latency", ("off", "on"), LATENCY_BOUND, n, 0, rounds)


def _compare(
    name: str,
    sides: tuple[str, ...],
    settings: dict[str, str],
    n: int,
    warmup: int,
    rounds: int,
) -> dict[str, Any]:
    """Each side ``rounds`` times (in reverse order every other round), on a fresh server:
    ``warmup`` runs first (not measured), then ``n`` measured."""
    bench = Bench(name)
    receiver = OtlpReceiver(keep=False)
    rates: dict[str, list[float]] = {side: [] for side in sides}
    cpu_ms: dict[str, list[float]] = {side: [] for side in sides}
    spans: dict[str, list[float]] = {side: [] for side in sides}
    try:
        for i in range(rounds):
            for side in sides if i % 2 == 0 else sides[::-1]:
                before = receiver.count
                replica = bench.start("up", True, **settings, **_otel(side, receiver.url))
                try:
                    if warmup:
                        _measure(bench, warmup, 4, 100)  # pool grown, statements prepared
                    cpu_before = cpu_seconds(replica.pid)
                    result = _measure(bench, n, 4, 100)
                    cpu_ms[side].append(1000.0 * (cpu_seconds(replica.pid) - cpu_before) / n)
                finally:
                    replica.stop()  # SIGTERM: the exporter's queue is flushed on the way out
                if result["succeeded"] < n:
                    raise RuntimeError(f"{result['succeeded']} of {n} runs succeeded ({side})")
                rates[side].append(float(result["runs_per_s"]))
                spans[side].append((receiver.count - before) / (warmup + n))
    finally:
        bench.stop()
        receiver.close()
    rate = {side: statistics.mean(values) for side, values in rates.items()}
    cpu = {side: statistics.mean(values) for side, values in cpu_ms.items()}
    out: dict[str, Any] = {"runs_per_measurement": n, "rounds": rounds}
    for side in sides:
        out[f"{side}_runs_per_s"] = round(rate[side], 1)
        out[f"{side}_runs_per_s_each"] = rates[side]
        out[f"{side}_cpu_ms_per_run"] = round(cpu[side], 3)
        if side != "off":
            out[f"{side}_spans_per_run"] = round(statistics.mean(spans[side]), 1)
            out[f"{side}_overhead_percent"] = round(100.0 * (1.0 - rate[side] / rate["off"]), 1)
            out[f"{side}_cpu_overhead_percent"] = round(100.0 * (cpu[side] / cpu["off"] - 1), 1)
    out["goal_overhead_percent"] = "< 5 (on)"
    return out
