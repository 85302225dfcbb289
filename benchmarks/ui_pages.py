"""Dashboard page times at 100,000 runs: the runs list (first page, filtered, deep, searched), a
run's page, and the API's ``GET /v1/runs`` beside them for scale.

Runs are seeded straight into Postgres (``COPY``): spread over 8 tenants, every status, 3
agent types and 3 models, 30 days of ``created_at`` (ids are ULIDs of that time, so the id order
is the time order as for real runs) and prompts of a few words (one word in six prompts and one
in a thousand, to search for); 2,000 of them get ~20 events each (status changes, turns, tool
calls, a result), as a run page shows them. Then an admin session (all tenants) and a tenant's
submitter session ask for each page in turn, in process through httpx's ASGI transport: the
server's own time, no network. Goal: p99 < 100 ms per page.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from benchmarks.harness import percentile
from quarterdeck.config import load_settings
from quarterdeck.kit.ids import ulid
from quarterdeck.security.auth import Role
from quarterdeck.store import migrations
from quarterdeck.store.embedded import start_embedded

ADMIN = "bench-ui-pages-bootstrap-admin-key-0123456789"
GOAL_MS = 100.0
HTML = {"accept": "text/html"}
LOGIN_TOKEN = re.compile(r'name="login_token" value="([^"]+)"')
TENANTS = [f"tenant-{i}" for i in range(8)]
STATUSES = [
    ("succeeded", 55),
    ("failed", 12),
    ("cancelled", 5),
    ("timed_out", 3),
    ("max_turns", 3),
    ("budget_exceeded", 2),
    ("running", 5),
    ("queued", 15),
]
AGENTS = ["coder", "reviewer", "test-writer"]
MODELS = ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"]
VERBS = ["fix", "add", "refactor", "document", "speed up", "review", "test", "remove"]
THINGS = ["the parser", "the tokenizer", "billing", "the login flow", "retries", "the cache"]
PLACES = [f"module_{i}" for i in range(40)] + ["the CLI", "the API", "the worker"]
SEARCH_WORD = "tokenizer"  # in one prompt in six: the page fills from the newest runs
RARE_WORD = "urgent"  # in one prompt in 1,000: the page comes from the prompt index


def _prompt(rng: random.Random) -> str:
    return f"{rng.choice(VERBS)} {rng.choice(THINGS)} in {rng.choice(PLACES)}"


def _runs(n: int, now: datetime, rng: random.Random) -> list[tuple[Any, ...]]:
    names = [s for s, _ in STATUSES]
    weights = [w for _, w in STATUSES]
    start = now - timedelta(days=30)
    span_ms = int((now - start).total_seconds() * 1000)
    offsets = sorted(rng.randrange(span_ms) for _ in range(n))
    rows = []
    for i, offset in enumerate(offsets):
        created = start + timedelta(milliseconds=offset)
        status = rng.choices(names, weights)[0]
        started = created + timedelta(seconds=rng.uniform(0.1, 5)) if status != "queued" else None
        terminal = status not in ("queued", "running")
        finished = (
            started + timedelta(seconds=rng.uniform(5, 600)) if terminal and started else None
        )
        turns = rng.randrange(1, 25) if started else 0
        tokens_in = turns * rng.randrange(2_000, 20_000)
        rows.append(
            (
                "run_" + ulid(int(created.timestamp() * 1000)),
                rng.choice(TENANTS),
                rng.choice(AGENTS),
                "task",
                _prompt(rng) + (f" {RARE_WORD}" if i % 1000 == 7 else ""),
                rng.choice(MODELS),
                status,
                1 if started else 0,
                created,
                started,
                finished,
                tokens_in,
                turns * rng.randrange(200, 3_000),
                tokens_in // 10,
                tokens_in // 2,
                Decimal(tokens_in) / Decimal(250_000),
                turns,
                "model said no" if status == "failed" else None,
            )
        )
    return rows


RUN_COLUMNS = [
    "id",
    "tenant",
    "agent_type",
    "operation",
    "prompt",
    "model",
    "status",
    "attempts",
    "created_at",
    "started_at",
    "finished_at",
    "input_tokens",
    "output_tokens",
    "cache_creation_tokens",
    "cache_read_tokens",
    "cost_usd",
    "turns",
    "error",
]


def _events(run_id: str, model: str, at: datetime) -> list[tuple[Any, ...]]:
    """About 20 events: a run of 6 turns, each with a tool call, and its status changes."""
    rows: list[tuple[Any, ...]] = [
        (run_id, at, "status", None, {"status": "queued"}),
        (run_id, at, "status", None, {"status": "running", "attempt": 1, "worker": "w-1"}),
    ]
    for turn in range(1, 7):
        usage = {
            "input_tokens": 1200 * turn,
            "output_tokens": 300,
            "cache_read_input_tokens": 9000 * turn,
            "cache_creation_input_tokens": 800,
        }
        turn_data = {
            "model": model,
            "usage": usage,
            "cost_usd": 0.0123 * turn,
            "latency_s": 1.5 + turn / 10,
            "stop_reason": "tool_use",
            "text": f"Turn {turn}: I will look at src/module_{turn}.py and run the tests." * 3,
        }
        rows.append((run_id, at, "turn", turn, turn_data))
        rows.append(
            (
                run_id,
                at,
                "tool_call",
                turn,
                {
                    "tool": "run_command",
                    "input": {"command": f"pytest -q tests/test_module_{turn}.py"},
                    "policy": {"action": "allow"},
                    "output": "3 passed in 0.41s\n" * 5,
                    "is_error": False,
                },
            )
        )
        rows.append((run_id, at, "tool_results", turn, {"count": 1}))
    rows.append((run_id, at, "result", None, {"changed_files": ["src/module_1.py"]}))
    rows.append((run_id, at, "status", None, {"status": "succeeded"}))
    return rows


async def _seed(url: str, n: int, with_events: int) -> dict[str, Any]:
    rng = random.Random(18)
    now = datetime.now(UTC)
    rows = _runs(n, now, rng)
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        await conn.copy_records_to_table("runs", records=rows, columns=RUN_COLUMNS)
        sample = rng.sample(rows, with_events)
        events = [(*e[:4], json.dumps(e[4])) for r in sample for e in _events(r[0], r[5], r[8])]
        # COPY has no binary jsonb: the events go through a text column, in order (ids ascend).
        await conn.execute(
            "CREATE TEMP TABLE seed_events (n serial, run_id text, ts timestamptz, type text,"
            " turn integer, data text)"
        )
        await conn.copy_records_to_table(
            "seed_events", records=events, columns=["run_id", "ts", "type", "turn", "data"]
        )
        await conn.execute(
            "INSERT INTO run_events (run_id, ts, type, turn, data)"
            " SELECT run_id, ts, type, turn, data::jsonb FROM seed_events ORDER BY n"
        )
        await conn.execute("ANALYZE runs")
        await conn.execute("ANALYZE run_events")
        seeded_s = time.perf_counter() - started
        ordered = await conn.fetch(
            "SELECT id FROM runs ORDER BY id DESC OFFSET $1 LIMIT 1", n - 500
        )
        matches = await conn.fetchval(
            "SELECT count(*) FROM runs WHERE prompt LIKE $1", f"%{SEARCH_WORD}%"
        )
    finally:
        await conn.close()
    return {
        "seeded": n,
        "events": len(events),
        "seed_s": round(seeded_s, 1),
        "deep_cursor": ordered[0]["id"],
        "detail_ids": [r[0] for r in sample[:50]],
        "tenant": sample[0][1],
        "search_matches": matches,
    }


async def _sign_in(client: httpx.AsyncClient, key: str) -> None:
    form = await client.get("/ui/login", headers=HTML)
    match = LOGIN_TOKEN.search(form.text)
    assert match, form.text[:300]
    signed = await client.post(
        "/ui/login", data={"api_key": key, "login_token": match.group(1)}, headers=HTML
    )
    assert signed.status_code == 303, signed.text[:300]


async def _time(
    call: Callable[[int], Awaitable[httpx.Response]], n: int, warmup: int = 20
) -> dict[str, Any]:
    for i in range(warmup):
        response = await call(i)
        assert response.status_code == 200, f"{response.status_code} {response.text[:300]}"
    times = []
    for i in range(n):
        started = time.perf_counter()
        response = await call(i)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, f"{response.status_code} {response.text[:300]}"
    p99 = percentile(times, 99)
    return {
        "p50_ms": round(percentile(times, 50), 1),
        "p95_ms": round(percentile(times, 95), 1),
        "p99_ms": round(p99, 1),
        "goal_met": p99 < GOAL_MS,
    }


async def _measure(root: Path, n_runs: int, requests: int) -> dict[str, Any]:
    from quarterdeck.app import create_app
    from quarterdeck.runtime import Runtime

    url = start_embedded(root / "pg")
    await migrations.upgrade(url)
    seeded = await _seed(url, n_runs, 2_000)
    settings = load_settings(
        None,
        postgres_url=url,
        data_dir=root / "data",
        metrics_port=0,
        auth_enabled=True,
        admin_api_key=ADMIN,
        rate_limit_key_per_minute=0,
        rate_limit_tenant_per_minute=0,
        health_monitor_enabled=False,
        maintenance_enabled=False,
    )
    rt = Runtime(settings, with_workers=False)
    await rt.start()
    try:
        app = create_app(settings, rt)
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://qd") as admin,
            httpx.AsyncClient(transport=transport, base_url="http://qd") as tenant,
            httpx.AsyncClient(transport=transport, base_url="http://qd") as api,
        ):
            await _sign_in(admin, ADMIN)
            submitter = await rt.auth.create("bench", Role.submitter, seeded["tenant"])
            await _sign_in(tenant, submitter.api_key)
            detail = seeded["detail_ids"]
            bearer = {"authorization": f"Bearer {ADMIN}"}
            cases: dict[str, Callable[[int], Awaitable[httpx.Response]]] = {
                "list_first_page": lambda i: admin.get("/ui/runs", headers=HTML),
                "list_first_page_tenant": lambda i: tenant.get("/ui/runs", headers=HTML),
                "list_filtered": lambda i: admin.get(
                    "/ui/runs?status=failed&agent_type=reviewer", headers=HTML
                ),
                "list_deep_keyset": lambda i: admin.get(
                    f"/ui/runs?cursor={seeded['deep_cursor']}", headers=HTML
                ),
                "list_prompt_search": lambda i: admin.get(
                    f"/ui/runs?q={SEARCH_WORD}", headers=HTML
                ),
                "list_prompt_search_rare": lambda i: admin.get(
                    f"/ui/runs?q={RARE_WORD}", headers=HTML
                ),
                "run_detail": lambda i: admin.get(
                    f"/ui/runs/{detail[i % len(detail)]}", headers=HTML
                ),
                "api_list_runs": lambda i: api.get("/v1/runs", headers=bearer),
            }
            timed = {name: await _time(call, requests) for name, call in cases.items()}
    finally:
        await rt.stop()
    result: dict[str, Any] = {
        "runs": seeded["seeded"],
        "events": seeded["events"],
        "seed_s": seeded["seed_s"],
        "search_matches": seeded["search_matches"],
        "requests_per_case": requests,
        # Tails depend on what else the machine runs: its load, to read them by.
        "load_avg_1m": round(os.getloadavg()[0], 1),
        "cpus": os.cpu_count(),
    }
    for name, figures in timed.items():
        for key, value in figures.items():
            result[f"{name}.{key}"] = value
    api_p99 = timed["api_list_runs"]["p99_ms"]
    result["list_vs_api_p99_ratio"] = round(timed["list_first_page"]["p99_ms"] / api_p99, 1)
    result["goal_p99_ms"] = GOAL_MS
    return result


def pages(n_runs: int | None = None, requests: int = 300) -> dict[str, Any]:
    """p50/p95/p99 of each page over ``requests`` sequential requests (after 20 to warm up),
    with ``n_runs`` runs seeded (default 100,000; ``BENCH_UI_RUNS`` to try 1,000,000)."""
    if n_runs is None:
        n_runs = int(os.environ.get("BENCH_UI_RUNS", "100000"))
    root = Path(tempfile.mkdtemp(prefix="qd-bench-ui-", dir="/tmp"))
    root.chmod(0o755)
    try:
        return asyncio.run(_measure(root, n_runs, requests))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    for metric, value in pages().items():
        print(f"{metric:<40} {value}")
