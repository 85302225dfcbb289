"""Issue 2 benchmarks: end-to-end throughput, submit-to-start latency, and worker memory.

All use the simulated provider. Figures come from Postgres timestamps (``created_at``,
``started_at``, ``finished_at``), so client-side overhead does not flatter or penalise them.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import asyncpg

from benchmarks.harness import Bench, peak_rss_mib, percentile
from benchmarks.loadgen import Connection, run_load


async def _submit_many(url: str, n: int, concurrency: int, batch: int = 1) -> float:
    """Submit ``n`` runs over HTTP: one per request, or ``batch`` per ``POST /v1/runs/batch``."""
    if batch <= 1:

        def request(i: int) -> tuple[str, str, Any]:
            return "POST", "/v1/runs", {"prompt": f"bench {i}"}

        calls = n
    else:

        def request(i: int) -> tuple[str, str, Any]:
            runs = [{"prompt": f"bench {i * batch + j}"} for j in range(batch)]
            return "POST", "/v1/runs/batch", {"runs": runs}

        calls = -(-n // batch)
    elapsed, _, errors = await run_load(url, calls, concurrency, request)
    if errors:
        raise RuntimeError(f"{errors} of {calls} submissions failed")
    return elapsed


async def _wait_done(db_url: str, n: int, timeout: float, since: float = 0.0) -> dict[str, Any]:
    """Wait for ``n`` terminal runs created after ``since`` (epoch s); their count and span."""
    conn = await asyncpg.connect(db_url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = await conn.fetchval(
                "SELECT count(*) FROM runs WHERE status NOT IN ('queued', 'running')"
                " AND created_at >= to_timestamp($1)",
                since,
            )
            if done >= n:
                break
            await asyncio.sleep(0.2)
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE status = 'succeeded') AS ok, count(*) AS total,"
            " extract(epoch FROM max(finished_at) - min(created_at)) AS span"
            " FROM runs WHERE created_at >= to_timestamp($1)",
            since,
        )
        return dict(row)
    finally:
        await conn.close()


def _measure(bench: Bench, n: int, concurrency: int, batch: int) -> dict[str, Any]:
    since = time.time()
    submit_s = asyncio.run(_submit_many(bench.url, n, concurrency, batch))
    result = asyncio.run(_wait_done(bench.database_url(), n, 600, since))
    span = float(result["span"])
    return {
        "runs": n,
        "succeeded": result["ok"],
        "submit_per_s": round(n / submit_s, 1),
        "end_to_end_s": round(span, 2),
        "runs_per_s": round(n / span, 1),
    }


def _throughput_of(processes: int, n_batched: int, n_single: int) -> dict[str, Any]:
    bench = Bench("throughput")
    try:
        bench.start(
            "up",
            QUARTERDECK_SIMULATED_LATENCY="0",
            QUARTERDECK_SIMULATED_TURNS="1",
            QUARTERDECK_WORKER_CONCURRENCY="200",
            QUARTERDECK_WORKER_BATCH_SIZE="50",
            QUARTERDECK_DB_POOL_MAX="20",
            QUARTERDECK_WORKER_PROCESSES=str(processes),
        )
        if processes > 1:
            time.sleep(5)  # the children start after the parent is ready: let them connect
        _measure(bench, 2000, 4, 100)  # warm-up, not reported
        out = {"batched": _measure(bench, n_batched, 4, 100)}
        if n_single:
            out["single"] = _measure(bench, n_single, 64, 1)
        return out
    finally:
        bench.stop()


def throughput(n_batched: int = 10_000, n_single: int = 3000) -> dict[str, Any]:
    """End-to-end runs/s: HTTP submit through to succeeded, one turn per run, zero latency.

    ``quarterdeck up --worker-processes <cores>``: the API and one worker pool in the parent
    plus one child worker per remaining core (one event loop uses one core; at zero model
    latency the loop is the bottleneck). After a warm-up (the pool grows and every connection
    prepares its statements), two measurements: submissions in batches of 100 through
    ``POST /v1/runs/batch``, and one run per ``POST /v1/runs``. For comparison, the batched
    figure for a single process. The span is Postgres time from the first run's
    ``created_at`` to the last one's ``finished_at``.
    """
    cores = os.cpu_count() or 1
    full = _throughput_of(cores, n_batched, n_single)
    alone = _throughput_of(1, n_batched, 0) if cores > 1 else full
    batched, single = full["batched"], full["single"]
    return {
        "worker_processes": cores,
        "batched_runs": batched["runs"],
        "batched_succeeded": batched["succeeded"],
        "batched_runs_per_s": batched["runs_per_s"],
        "single_runs": single["runs"],
        "single_succeeded": single["succeeded"],
        "single_submit_per_s": single["submit_per_s"],
        "single_runs_per_s": single["runs_per_s"],
        "one_process_batched_runs_per_s": alone["batched"]["runs_per_s"],
        "goal_runs_per_s": 1000,
    }


async def _paced(url: str, rate: float, seconds: float) -> int:
    """Submit at a steady ``rate`` (open loop: a slow answer does not delay the next request)."""
    n = int(rate * seconds)
    conns = [await Connection.open(url) for _ in range(32)]
    free: asyncio.Queue[Connection] = asyncio.Queue()
    for c in conns:
        free.put_nowait(c)

    async def one(i: int) -> None:
        conn = await free.get()
        try:
            status, _ = await conn.request("POST", "/v1/runs", {"prompt": f"p{i}"})
            if status != 202:
                raise RuntimeError(f"submission answered {status}")
        finally:
            free.put_nowait(conn)

    start = time.perf_counter()
    tasks = []
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    for c in conns:
        c.close()
    return n


def submit_to_start(rate: float = 100, seconds: float = 20, warmup_s: float = 3) -> dict[str, Any]:
    """p50/p99 from submission (created_at) to start (started_at) at a steady 100 runs/s.

    The first ``warmup_s`` seconds are reported separately: they include the pool growing from
    its minimum and first-use statement preparation, which is a cold-start cost, not the
    steady-state latency the goal is about.
    """
    bench = Bench("latency")
    try:
        bench.start("up", QUARTERDECK_SIMULATED_LATENCY="0", QUARTERDECK_SIMULATED_TURNS="1")
        n = asyncio.run(_paced(bench.url, rate, seconds + warmup_s))

        async def read() -> list[tuple[float, float]]:
            await _wait_done(bench.database_url(), n, 120)
            conn = await asyncpg.connect(bench.database_url())
            try:
                rows = await conn.fetch(
                    "SELECT extract(epoch FROM created_at - (SELECT min(created_at) FROM runs))"
                    " AS at, extract(epoch FROM started_at - created_at) AS d FROM runs"
                )
            finally:
                await conn.close()
            return [(float(r["at"]), float(r["d"]) * 1000) for r in rows]

        samples = asyncio.run(read())
        steady = [d for at, d in samples if at >= warmup_s]
        cold = [d for at, d in samples if at < warmup_s]
        return {
            "rate_per_s": rate,
            "runs_measured": len(steady),
            "p50_ms": round(percentile(steady, 50), 2),
            "p99_ms": round(percentile(steady, 99), 2),
            "max_ms": round(max(steady), 2),
            "warmup_runs": len(cold),
            "warmup_p99_ms": round(percentile(cold, 99), 2),
            "goal_p99_ms": 50,
        }
    finally:
        bench.stop()


def worker_memory(n: int = 5000) -> dict[str, Any]:
    """Peak RSS of one worker process holding ``n`` in-flight runs at 30 s simulated latency."""
    bench = Bench("memory")
    try:
        bench.start("serve")
        worker = bench.start(
            "worker",
            QUARTERDECK_SIMULATED_LATENCY="30s",
            QUARTERDECK_WORKER_CONCURRENCY=str(n),
            QUARTERDECK_WORKER_BATCH_SIZE="100",
            QUARTERDECK_DB_POOL_MAX="30",
            QUARTERDECK_METRICS_PORT="0",
        )
        asyncio.run(_submit_many(bench.url, n, 64))

        async def in_flight() -> int:
            conn = await asyncpg.connect(bench.database_url())
            try:
                peak, deadline = 0, time.monotonic() + 120
                while time.monotonic() < deadline:
                    running = await conn.fetchval(
                        "SELECT count(*) FROM runs WHERE status = 'running'"
                    )
                    peak = max(peak, running)
                    if running >= n:
                        break
                    await asyncio.sleep(0.5)
                return int(peak)
            finally:
                await conn.close()

        peak = asyncio.run(in_flight())
        time.sleep(2)
        return {
            "in_flight_runs": peak,
            "target_in_flight": n,
            "peak_rss_mib": round(peak_rss_mib(worker.pid), 1),
            "goal_mib": 1024,
        }
    finally:
        bench.stop()
