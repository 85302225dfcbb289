"""Workspace checkpoints: what a turn costs in time and database space for a 10 MB workspace.

The workspace is a realistic mix: ~9 MB of source-like text in ~700 files (Python, JS, Markdown,
JSON) under nested packages, plus a few binaries (random bytes, incompressible: images, a
sqlite file, a wheel). Each of ``turns`` turns edits three source files (one line each) and adds
a small new one, as an agent's turn does. Measured through the real pieces: the agent runtime's
capture (:class:`~quarterdeck.agents.checkpoint.WorkspaceCheckpoints`) and the Postgres run
store (an embedded Postgres of its own), fenced writes and all:

* the base: raw and compressed bytes, capture and save time;
* per turn: capture time (stat walk + reading and compressing only what changed), save time,
  compressed bytes carried, and the bytes the three tables grew by (heap, TOAST and indexes);
* a restore on a fresh data dir (fetch, decompress, write, baseline commit), as a resumed run on
  another replica does it;
* what a second run of the tenant on the same tree adds (its blobs are already stored);
* zlib levels 1 and 6 over the same files, for the choice of level.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import statistics
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from quarterdeck.agents.checkpoint import WorkspaceCheckpoints
from quarterdeck.agents.workspace import Workspace
from quarterdeck.chaos.deploy import stop_postgres
from quarterdeck.runs.store import PostgresRunStore
from quarterdeck.store.embedded import start_embedded
from quarterdeck.store.migrations import upgrade
from quarterdeck.store.pool import Database

TABLES = ("workspace_blobs", "run_workspace_files", "run_workspaces")
WORDS = (
    "self return def class import from if else for while in not and or None True False "
    "value result items config request response client server handler error data path "
    "name index count total user session token cache query field model schema parse"
).split()


def _source(rng: random.Random, lines: int) -> str:
    out = []
    for i in range(lines):
        indent = "    " * rng.randint(0, 3)
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10)))
        out.append(f"{indent}{words}  # {i}" if i % 7 == 0 else f"{indent}{words}")
    return "\n".join(out) + "\n"


def make_workspace(root: Path, seed: int = 15) -> tuple[int, list[Path]]:
    """~10 MB: source text in nested packages plus a few incompressible binaries."""
    rng = random.Random(seed)
    sources: list[Path] = []
    total = 0
    exts = (".py", ".py", ".py", ".js", ".md", ".json")
    while total < 9 * 1024 * 1024:
        pkg = root / "src" / f"pkg{rng.randint(0, 19)}" / f"mod{rng.randint(0, 4)}"
        pkg.mkdir(parents=True, exist_ok=True)
        path = pkg / f"file{len(sources)}{rng.choice(exts)}"
        text = _source(rng, rng.randint(80, 500))
        path.write_text(text)
        sources.append(path)
        total += len(text)
    (root / "assets").mkdir()
    for name, size in (("logo.png", 200_000), ("db.sqlite", 500_000), ("dep.whl", 300_000)):
        (root / "assets" / name).write_bytes(rng.randbytes(size))
        total += size
    return total, sources


async def _table_bytes(db: Database) -> int:
    async with db.acquire() as conn:
        return int(
            await conn.fetchval(
                "SELECT sum(pg_total_relation_size(t::regclass)) FROM unnest($1::text[]) t",
                list(TABLES),
            )
        )


def _levels(root: Path) -> dict[str, Any]:
    files = [p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()]
    out: dict[str, Any] = {}
    for level in (1, 6):
        started = time.perf_counter()
        size = sum(len(zlib.compress(f, level)) for f in files)
        out[f"zlib{level}_bytes"] = size
        out[f"zlib{level}_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return out


async def _bench(turns: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="qd-bench-checkpoint-", dir="/tmp"))
    os.chmod(tmp, 0o755)  # the embedded Postgres runs as its own user under root
    url = start_embedded(tmp / "pg-data")
    await upgrade(url)
    db = Database(url, min_size=1, max_size=4)
    await db.open()
    store = PostgresRunStore(db)
    result: dict[str, Any] = {"turns": turns}
    try:
        run_id = "run_bench_checkpoint"
        row: dict[str, Any] = {
            "id": run_id,
            "tenant": "bench",
            "agent_type": "coder",
            "operation": "task",
            "prompt": "p",
            "model": "m",
            "max_attempts": 3,
            "idempotency_key": None,
            "request_hash": None,
            "job_id": 0,
            "params": {},
            "budget_usd": None,
            "key_id": None,
        }
        await store.create([(dict(row), None)])
        claimed = await store.claim(run_id, "bench")
        assert claimed is not None
        epoch = claimed[0].attempts
        ws = await Workspace(tmp / "a", run_id).create(None)
        raw, sources = make_workspace(ws.path)
        result["workspace_bytes"] = raw
        result["workspace_files"] = len(sources) + 3
        result.update(_levels(ws.path))
        caps = {"turn_max_bytes": 1 << 30, "run_max_bytes": 1 << 30, "max_entries": 1_000_000}
        cp = WorkspaceCheckpoints(ws, **caps)
        empty = await _table_bytes(db)

        started = time.perf_counter()
        base = await cp.capture()
        result["base_capture_ms"] = round((time.perf_counter() - started) * 1000, 1)
        result["base_compressed_bytes"] = base.bytes
        started = time.perf_counter()
        await store.save_workspace_base(run_id, base, epoch=epoch)
        result["base_save_ms"] = round((time.perf_counter() - started) * 1000, 1)
        after_base = await _table_bytes(db)
        result["base_db_bytes"] = after_base - empty

        rng = random.Random(7)
        captures, saves, carried = [], [], []
        for turn in range(1, turns + 1):
            for path in rng.sample(sources, 3):
                lines = path.read_text().splitlines(keepends=True)
                lines[rng.randrange(len(lines))] = f"    changed in turn {turn}\n"
                path.write_text("".join(lines))
            new = ws.path / "src" / f"new_{turn}.py"
            new.write_text(_source(rng, 40))
            sources.append(new)
            started = time.perf_counter()
            delta = await cp.capture()
            captures.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            events = [("tool_results", turn, {"message": {"role": "user", "content": []}})]
            await store.save_tool_results(run_id, turn, events, delta, epoch=epoch)
            saves.append((time.perf_counter() - started) * 1000)
            carried.append(delta.bytes)
        grown = await _table_bytes(db) - after_base
        result["turn_capture_ms_p50"] = round(statistics.median(captures), 1)
        result["turn_capture_ms_max"] = round(max(captures), 1)
        result["turn_save_ms_p50"] = round(statistics.median(saves), 1)
        result["turn_compressed_bytes_mean"] = round(statistics.mean(carried))
        result["turn_db_bytes_mean"] = round(grown / turns)
        result["total_db_bytes"] = await _table_bytes(db) - empty

        state = await store.workspace_state(run_id)
        assert state is not None
        fresh = await Workspace(tmp / "b", run_id).create(None)
        started = time.perf_counter()

        async def load(shas: list[str]) -> dict[str, bytes]:
            return await store.workspace_blobs(run_id, shas)

        await WorkspaceCheckpoints(fresh, **caps).restore(state, load)
        result["restore_on_fresh_replica_ms"] = round((time.perf_counter() - started) * 1000, 1)

        # Another run of the tenant on the same tree: its blobs exist, only its rows are new.
        second = "run_bench_checkpoint_2"
        await store.create([({**row, "id": second}, None)])
        claimed = await store.claim(second, "bench")
        assert claimed is not None
        before = await _table_bytes(db)
        twin = await Workspace(tmp / "b", second).create(None)
        shutil.copytree(fresh.path, twin.path, symlinks=True, dirs_exist_ok=True)
        base2 = await WorkspaceCheckpoints(twin, **caps).capture()
        await store.save_workspace_base(second, base2, epoch=claimed[0].attempts)
        result["second_run_same_tree_db_bytes"] = await _table_bytes(db) - before
        result["goal"] = "report only: checkpoint size and time per turn (issue 15)"
    finally:
        await store.aclose()
        await db.close()
        stop_postgres(tmp / "pg-data" / "pg")
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def per_turn(turns: int = 20) -> dict[str, Any]:
    return asyncio.run(_bench(turns))


if __name__ == "__main__":
    for key, value in per_turn().items():
        print(f"{key:<32} {value}")
