"""A run killed on one replica finishes on another, with its workspace, billed once per turn.

Two ``quarterdeck up`` processes with different data dirs share one Postgres (the first one's
embedded server). A six-turn run edits the workspace on each of its first five turns (the sixth
is the answer); the process running it is SIGKILLed while turn 4's model call hangs. The other
replica has never seen the run's files: it rebuilds the tree and its diff baseline from the
checkpoints in Postgres, and the final diff holds every turn's edits.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from quarterdeck.chaos.deploy import stop_postgres
from quarterdeck.chaos.messages_api import MessagesAPIServer, make_usage, message, text, tool_use
from tests.conftest import world_readable_tmpdir
from tests.e2e.conftest import Deployment

pytest_plugins = ["tests.support.fixtures"]
pytestmark = pytest.mark.e2e

CALC = "def add(a, b):\n    return a + b\n"


def script() -> list:
    """Five editing turns and an answer; distinct usage per turn; turn 4's first copy hangs."""
    turns = [
        [text("Notes first."), tool_use("write_file", {"path": "notes.txt", "content": "t1\n"})],
        [tool_use("edit_file", {"path": "notes.txt", "old": "t1\n", "new": "t1\nt2\n"})],
        [tool_use("write_file", {"path": "src/calc.py", "content": CALC})],
        [
            tool_use(
                "run_command",
                {
                    "command": "printf 't4\\n' >> notes.txt && ln -s src/calc.py link.py && rm gone.txt"
                },
            )
        ],
        [tool_use("edit_file", {"path": "src/calc.py", "old": "a + b", "new": "a + b  # t5"})],
        [text("Done: notes, calc, link; gone.txt removed.")],
    ]
    replies = []
    for i, blocks in enumerate(turns, start=1):
        usage = make_usage(input_tokens=1000 * i, output_tokens=100 * i)
        if i == 4:  # the killed worker's request: it never answers in time
            replies.append(message(*blocks, usage=usage, delay=60))
        replies.append(message(*blocks, usage=usage))
    return replies


def _socket_dir(pgdata: Path) -> str:
    return (pgdata / "postmaster.pid").read_text().splitlines()[4].strip()


async def _billed(url: str, run_id: str) -> tuple[int, list[int]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT turn FROM run_turns WHERE run_id = $1 ORDER BY turn", run_id
        )
        files = await conn.fetchval(
            "SELECT count(*) FROM run_workspace_files WHERE run_id = $1", run_id
        )
    finally:
        await conn.close()
    return int(files), [r["turn"] for r in rows]


def test_a_run_killed_on_one_replica_resumes_on_another_with_its_workspace(
    messages_api: MessagesAPIServer,
) -> None:
    messages_api.script(script())
    real = {
        "QUARTERDECK_PROVIDER": "anthropic",
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "QUARTERDECK_ANTHROPIC_BASE_URL": messages_api.base_url,
        "QUARTERDECK_DEFAULT_MODEL": "claude-sonnet-4-5",
        "QUARTERDECK_WORKER_HEARTBEAT_TIMEOUT": "3",
    }
    one = Deployment(world_readable_tmpdir("qd-e2e-one-"))
    two = Deployment(world_readable_tmpdir("qd-e2e-two-"))
    pgdata = one.pgdata
    try:
        # The source is a server directory only the first replica may read (and it is gone by
        # the time the second resumes): the second must rebuild from Postgres, not re-fetch.
        source = world_readable_tmpdir("qd-e2e-source-")
        (source / "README.md").write_text("# calc\n")
        (source / "gone.txt").write_text("x\n")
        for f in source.iterdir():
            f.chmod(0o644)
        first = one.start("up", QUARTERDECK_WORKSPACE_ROOTS=str(source), **real)
        url = f"postgresql://postgres:@/postgres?host={_socket_dir(pgdata)}"
        workspace = {"type": "path", "value": str(source)}
        with httpx.Client(base_url=one.url, timeout=30) as client:
            r = client.post("/v1/runs", json={"prompt": "build calc", "workspace": workspace})
            assert r.status_code == 202, r.text
            run_id = r.json()["id"]
            deadline = time.monotonic() + 60
            turns = 0
            while time.monotonic() < deadline:  # turn 3 checkpointed, turn 4's call in flight
                turns = client.get(f"/v1/runs/{run_id}").json()["turns"]
                calls = [r for r in messages_api.requests if r.path == "/v1/messages"]
                if turns == 3 and len(calls) == 4:
                    break
                time.sleep(0.05)
            assert turns == 3, "the run never reached turn 3"

        # The other replica: its own data dir, the same database and the same audit keys (in
        # production both come from the configured secrets). Then the first one dies.
        shutil.copytree(one.data_dir / "keys", two.data_dir / "keys")
        second = two.start("up", POSTGRES_URL=url, **real)
        assert not (two.data_dir / "workspaces" / run_id).exists()
        first.kill()
        shutil.rmtree(source)

        with httpx.Client(base_url=two.url, timeout=150) as client:
            done = client.get(
                f"/v1/runs/{run_id}/wait", params={"timeout": 120}, timeout=150
            ).json()
            assert done["status"] == "succeeded", done
            assert done["attempts"] == 2 and done["turns"] == 6
            diff = client.get(f"/v1/runs/{run_id}/diff").text
            events = client.get(f"/v1/runs/{run_id}/events").json()

        # The diff, made on the second replica, holds every turn's edit, the first three too.
        assert sorted(done["changed_files"]) == ["gone.txt", "link.py", "notes.txt", "src/calc.py"]
        assert "+t1\n+t2\n+t4\n" in diff  # turns 1 and 2 (first replica), 4 (second)
        assert "+def add(a, b):\n+    return a + b  # t5" in diff  # turns 3 and 5
        assert "deleted file mode" in diff and "-x" in diff  # gone.txt, removed in turn 4
        assert "+src/calc.py" in diff  # the symlink's target text
        restored = two.data_dir / "workspaces" / run_id
        assert (restored / "notes.txt").read_text() == "t1\nt2\nt4\n"
        assert "workspace_restored" in (two.root / "up-0.log").read_text()

        # Billed once per turn: six checkpoints, six distinct usages, seven requests (turn 4's
        # first call died with the first replica).
        files, billed = asyncio.run(_billed(url, run_id))
        assert billed == [1, 2, 3, 4, 5, 6] and files > 0
        assert (done["input_tokens"], done["output_tokens"]) == (21000, 2100)
        costs = [e["data"]["cost_usd"] for e in events if e["type"] == "turn"]
        assert len(costs) == 6 and len(set(costs)) == 6
        assert done["cost_usd"] == pytest.approx(sum(costs))
        sent = [r for r in messages_api.requests if r.path == "/v1/messages"]
        assert len(sent) == 7
        starts = [e["data"] for e in events if e["type"] == "status"]
        workers = [s["worker"] for s in starts if s["status"] == "running"]
        assert len(workers) == 2 and workers[0] != workers[1]
        second.stop()
    finally:
        two.close()
        one.stop_all()
        if (pgdata / "postmaster.pid").exists():
            stop_postgres(pgdata)  # the replica that owned it was killed
        shutil.rmtree(one.root, ignore_errors=True)
