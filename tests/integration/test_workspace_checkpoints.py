"""Workspace checkpoints: capture and restore on another data dir, dedup, caps, fencing, erasure.

Real workspaces (git baseline, the run's uid when root), the real Postgres run store where the
rule is the store's, the in-memory twin where only the files matter.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import stat
import tarfile
import zlib
from pathlib import Path
from typing import Any

import pytest

from quarterdeck.agents.checkpoint import WorkspaceCheckpoints, write_tree
from quarterdeck.agents.sandbox import run_identity
from quarterdeck.agents.workspace import Workspace
from quarterdeck.exceptions import Fenced
from quarterdeck.providers.types import (
    Message,
    ModelRequest,
    ModelResponse,
    TextBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
    Usage,
)
from quarterdeck.runs.executor import ExecutorConfig, Outcome, RunExecutor, RunPlan
from quarterdeck.runs.memory import InMemoryRunStore
from quarterdeck.runs.models import Run, RunStatus
from quarterdeck.runs.store import Finish, PostgresRunStore, RunStore
from quarterdeck.runs.workspace_memory import InMemoryWorkspaces
from quarterdeck.runs.workspace_state import (
    Blob,
    CheckpointTooLarge,
    Entry,
    RestoreFailed,
    WorkspaceDelta,
    cap_problem,
)
from quarterdeck.store.pool import Database
from tests.unit.test_run_store import row

APP = "def add(a, b):\n    return a + b\n" * 20


def _tar(files: dict[str, bytes | str | None], modes: dict[str, int] | None = None) -> bytes:
    """A tar source: bytes are files, a str a symlink target, None a directory."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), (modes or {}).get(name, 0o644)
                tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def tree(root: Path) -> dict[str, tuple[str, int, bytes | str | None]]:
    """Every path under ``root`` (build caches aside): kind, permission bits, content/target."""
    found: dict[str, tuple[str, int, bytes | str | None]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            full = Path(dirpath, name)
            rel = str(full.relative_to(root))
            if "__pycache__" in rel:
                continue
            info = full.lstat()
            if stat.S_ISLNK(info.st_mode):
                found[rel] = ("symlink", 0, os.readlink(full))
            elif stat.S_ISDIR(info.st_mode):
                found[rel] = ("dir", stat.S_IMODE(info.st_mode), None)
            else:
                found[rel] = ("file", stat.S_IMODE(info.st_mode), full.read_bytes())
    return found


def checkpoints(ws: Workspace, turn: int = 1 << 26, total: int = 1 << 28) -> WorkspaceCheckpoints:
    return WorkspaceCheckpoints(ws, turn_max_bytes=turn, run_max_bytes=total, max_entries=10_000)


async def workspace(data_dir: Path, run_id: str, source: bytes | None = None) -> Workspace:
    return await Workspace(data_dir, run_id).create(source)


def loader(store: InMemoryWorkspaces, tenant: str = "t1") -> Any:
    async def load(shas: list[str]) -> dict[str, bytes]:
        return store.load(tenant, shas)

    return load


async def test_a_workspace_restored_on_another_data_dir_is_the_same_tree_and_diff(
    tmp_path: Path,
) -> None:
    binary = random.Random(1).randbytes(50_000)
    source = _tar(
        {
            "src": None,
            "src/app.py": APP.encode(),
            "run.sh": b"#!/bin/sh\necho hi\n",
            "data.bin": binary,
            "old.txt": b"to be deleted\n",
            "link": "src/app.py",
            "empty": None,
            "src/__pycache__": None,
            "src/__pycache__/app.cpython-311.pyc": b"\0cache",
        },
        modes={"run.sh": 0o755},
    )
    run_id = "run_ckpt_roundtrip"
    here = await workspace(tmp_path / "a", run_id, source)
    store = InMemoryWorkspaces()
    capture = checkpoints(here)
    base = await capture.capture()
    assert base.full and capture.started
    paths = {e.path for e in base.entries}
    assert {"src", "src/app.py", "run.sh", "data.bin", "link", "empty"} <= paths
    assert not any("__pycache__" in p for p in paths)  # build caches are left out
    store.save(run_id, "t1", 0, base)

    # Turn 1 edits, adds, deletes, re-links, re-modes; turn 2 changes nothing.
    (here.path / "src" / "app.py").write_text(APP + "def sub(a, b):\n    return a - b\n")
    (here.path / "old.txt").unlink()
    (here.path / "new" / "deep").mkdir(parents=True)
    (here.path / "new" / "deep" / "file.txt").write_text("fresh\n")
    (here.path / "run.sh").chmod(0o700)
    (here.path / "link").unlink()
    (here.path / "link").symlink_to("run.sh")
    (here.path / "empty").rmdir()
    (here.path / "kept-empty").mkdir()
    (here.path / "data.bin").write_bytes(binary[::-1])
    delta = await capture.capture()
    kinds = {e.path: e.kind for e in delta.entries}
    assert kinds == {
        "src/app.py": "file",
        "old.txt": "deleted",
        "new": "dir",
        "new/deep": "dir",
        "new/deep/file.txt": "file",
        "run.sh": "file",
        "link": "symlink",
        "empty": "deleted",
        "kept-empty": "dir",
        "data.bin": "file",
    }, kinds
    assert not delta.full and len(delta.blobs) == 3  # run.sh only changed its mode
    store.save(run_id, "t1", 1, delta)
    assert (await capture.capture()).entries == ()
    state = store.state(run_id)
    assert state is not None and state.turn == 1

    # A fresh replica: the planner prepared the source anew; restore replaces it.
    there = await workspace(tmp_path / "b", run_id, _tar({"stale.txt": b"from the source\n"}))
    resumed = checkpoints(there)
    assert await resumed.restore(state, loader(store)) is True
    assert tree(there.path) == {k: v for k, v in tree(here.path).items()}
    assert await there.diff() == await here.diff()
    assert sorted(await there.changed_files()) == sorted(await here.changed_files())
    assert "sub(a, b)" in await there.diff() and "old.txt" in await there.diff()

    # Owned and permissioned as the sandbox expects: the tree is the run's uid's, 0700.
    owner = run_identity(run_id)
    if owner is not None:
        assert stat.S_IMODE(there.path.stat().st_mode) == 0o700
        for dirpath, dirs, files in os.walk(there.path):
            for name in [*dirs, *files]:
                assert os.lstat(os.path.join(dirpath, name)).st_uid == owner[0], name
        assert there.path.stat().st_uid == owner[0]

    # Primed: nothing changed since, so nothing to capture; a change is a one-path delta.
    assert (await resumed.capture()).entries == ()
    (there.path / "new" / "deep" / "file.txt").write_text("changed after resume\n")
    after = await resumed.capture()
    assert [e.path for e in after.entries] == ["new/deep/file.txt"]


async def test_a_resume_on_the_same_data_dir_keeps_the_local_tree(tmp_path: Path) -> None:
    run_id = "run_ckpt_same"
    ws = await workspace(tmp_path, run_id, _tar({"a.txt": b"a\n"}))
    store = InMemoryWorkspaces()
    first = checkpoints(ws)
    store.save(run_id, "t1", 0, await first.capture())
    (ws.path / "a.txt").write_text("edited\n")
    store.save(run_id, "t1", 1, await first.capture())
    state = store.state(run_id)
    assert state is not None
    inode = (ws.path / "a.txt").stat().st_ino
    assert await checkpoints(ws).restore(state, loader(store)) is False
    assert (ws.path / "a.txt").stat().st_ino == inode  # not rewritten
    # Tools of turn 2 that were cut short left a change behind: the checkpoint wins.
    (ws.path / "a.txt").write_text("half-done turn 2\n")
    assert await checkpoints(ws).restore(state, loader(store)) is True
    assert (ws.path / "a.txt").read_text() == "edited\n"


async def test_the_same_content_is_one_blob(tmp_path: Path) -> None:
    ws = await workspace(tmp_path, "run_ckpt_dedup", _tar({"a.txt": b"same\n", "b.txt": b"same\n"}))
    capture = checkpoints(ws)
    base = await capture.capture()
    assert len(base.blobs) == 1 and len(base.entries) == 2
    (ws.path / "c.txt").write_text("same\n")  # content already carried: a row, no blob
    (ws.path / "a.txt").write_text("other\n")
    (ws.path / "d.txt").write_text("other\n")
    delta = await capture.capture()
    assert len(delta.blobs) == 1 and {e.path for e in delta.entries} == {"a.txt", "c.txt", "d.txt"}


def test_the_caps_rule() -> None:
    assert cap_problem(100, 0, 1000, 5000) is None
    turn = cap_problem(1001, 0, 1000, 5000)
    assert turn and "QUARTERDECK_WORKSPACE_CHECKPOINT_TURN_MAX_BYTES=1000" in turn
    total = cap_problem(900, 4200, 1000, 5000)
    assert total and "QUARTERDECK_WORKSPACE_CHECKPOINT_MAX_BYTES=5000" in total
    assert cap_problem(800, 4200, 1000, 5000) is None


async def test_a_capture_past_a_cap_raises_before_anything_is_kept(tmp_path: Path) -> None:
    ws = await workspace(tmp_path, "run_ckpt_cap", _tar({"a.txt": b"a\n"}))
    capture = checkpoints(ws, turn=20_000, total=30_000)
    await capture.capture()
    (ws.path / "noise.bin").write_bytes(random.Random(2).randbytes(25_000))  # incompressible
    with pytest.raises(CheckpointTooLarge, match="TURN_MAX_BYTES=20000"):
        await capture.capture()
    (ws.path / "noise.bin").write_bytes(random.Random(3).randbytes(15_000))
    (ws.path / "more.bin").write_bytes(random.Random(4).randbytes(15_000))
    with pytest.raises(CheckpointTooLarge):
        await capture.capture()
    (ws.path / "more.bin").unlink()
    first = await capture.capture()  # 15 kB fits both caps
    assert {e.path for e in first.entries} == {"noise.bin"}
    (ws.path / "noise2.bin").write_bytes(random.Random(5).randbytes(15_000))
    with pytest.raises(CheckpointTooLarge, match="CHECKPOINT_MAX_BYTES=30000"):
        await capture.capture()  # the run's total would pass 30 kB


def test_a_manifest_path_out_of_the_tree_is_refused(tmp_path: Path) -> None:
    for bad in ("../evil", "/etc/evil", "a/../../evil", "a//b", "./a"):
        with pytest.raises(RestoreFailed):
            write_tree(tmp_path, {bad: Entry(bad, "dir", 0o755)}, {})
    assert list(tmp_path.iterdir()) == []


def test_a_manifest_entry_under_a_symlink_is_refused(tmp_path: Path) -> None:
    # Written in order (dirs, files, links), "d/x" would be created through "d" -> outside.
    outside = tmp_path / "outside"
    outside.mkdir()
    tree = tmp_path / "tree"
    tree.mkdir()
    manifest = {
        "d": Entry("d", "symlink", 0o777, target=str(outside)),
        "d/x": Entry("d/x", "symlink", 0o777, target="/etc/passwd"),
    }
    with pytest.raises(RestoreFailed, match="under the symlink 'd'"):
        write_tree(tree, manifest, {})
    assert list(outside.iterdir()) == [] and list(tree.iterdir()) == []


# -- the executor: a cap fails the run, clearly ---------------------------------------------
class OneToolCall:
    name = "scripted"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        first = len(request.messages) == 1
        content: list[Any] = (
            [ToolUseBlock(id="t1", name="write_big", input={})] if first else [TextBlock("done")]
        )
        return ModelResponse(
            id="r",
            model=request.model,
            message=Message(role="assistant", content=content),
            stop_reason="tool_use" if first else "end_turn",
            usage=Usage(input_tokens=10, output_tokens=5),
        )

    def stream(self, request: ModelRequest) -> Any:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


class WriteBig:
    def __init__(self, root: Path) -> None:
        self.root = root

    def specs(self) -> list[ToolSpec]:
        return []

    async def run(self, run: Run, call: ToolUseBlock) -> tuple[ToolResultBlock, dict[str, Any]]:
        (self.root / "big.bin").write_bytes(random.Random(6).randbytes(200_000))
        return ToolResultBlock(tool_use_id=call.id, content="wrote"), {"tool": call.name}


class CheckpointedPlanner:
    def __init__(self, ws: Workspace) -> None:
        self.ws = ws

    async def plan(self, run: Run) -> RunPlan:
        cp = checkpoints(self.ws, turn=100_000, total=1 << 20)
        return RunPlan("sys", WriteBig(self.ws.path), 5, 60.0, checkpoints=cp)

    async def finalize(self, run: Run, outcome: Outcome) -> None:
        return None


async def test_a_turn_past_the_cap_fails_the_run_with_a_clear_error(tmp_path: Path) -> None:
    store = InMemoryRunStore()
    await store.create([(row("run_ckpt_exec"), None)])
    claimed = await store.claim("run_ckpt_exec", "w")
    assert claimed is not None
    ws = await workspace(tmp_path, "run_ckpt_exec", _tar({"a.txt": b"a\n"}))
    executor = RunExecutor(
        store, OneToolCall(), CheckpointedPlanner(ws), lambda m, u: None, ExecutorConfig()
    )
    outcome = await executor.execute(claimed[0])
    assert outcome.status is RunStatus.failed
    assert outcome.error_type == "workspace_checkpoint_too_large"
    assert outcome.error and "TURN_MAX_BYTES=100000" in outcome.error
    events = [e.type for e in await store.events("run_ckpt_exec")]
    assert "tool_results" in events  # the calls that ran are still on the record
    state = await store.workspace_state("run_ckpt_exec")
    assert state is not None and state.turn == 0  # only the base; no partial delta


# -- Postgres: fencing, dedup per tenant, erasure --------------------------------------------
def _delta(full: bool, files: dict[str, bytes]) -> WorkspaceDelta:
    entries, blobs = [], {}
    for path, data in files.items():
        sha = hashlib.sha256(data).hexdigest()
        entries.append(Entry(path, "file", 0o644, sha, size=len(data)))
        blobs[sha] = Blob(sha, len(data), zlib.compress(data))
    return WorkspaceDelta(tuple(entries), tuple(blobs.values()), full)


async def scenario(store: RunStore) -> dict[str, Any]:
    """Fencing, dedup per tenant and erasure, as the callers above the store see them."""
    seen: dict[str, Any] = {}
    rows = [row("run_w_a1", tenant="ta"), row("run_w_a2", tenant="ta"), row("run_w_b", tenant="tb")]
    await store.create([(r, None) for r in rows])
    for r in rows:
        await store.claim(r["id"], "w")
        await store.save_workspace_base(r["id"], _delta(True, {"lib.py": b"shared\n"}), epoch=1)
    tool = [("tool_results", 1, {"message": {"role": "user", "content": []}})]
    x = _delta(False, {"x.py": b"x\n"})
    with pytest.raises(Fenced):  # a lost attempt writes nothing: neither events nor delta
        await store.save_tool_results("run_w_a1", 1, tool, x, epoch=2)
    with pytest.raises(Fenced):
        await store.save_workspace_base("run_w_a1", x, epoch=2)
    seen["events_after_fenced"] = [e.type for e in await store.events("run_w_a1")]
    state = await store.workspace_state("run_w_a1")
    seen["state_after_fenced"] = state and (state.turn, sorted(state.current), state.bytes)
    await store.save_tool_results("run_w_a1", 1, tool, x, epoch=1)
    seen["events"] = [e.type for e in await store.events("run_w_a1")]
    state = await store.workspace_state("run_w_a1")
    assert state is not None
    seen["state"] = (state.turn, sorted(state.current), sorted(state.base), state.bytes)
    seen["own_blobs"] = sorted(await store.workspace_blobs("run_w_a1", sorted(state.blob_shas)))
    # tb asks for ta's shas: it gets its own copy of lib.py, never ta's x.py.
    seen["other_tenant"] = sorted(await store.workspace_blobs("run_w_b", sorted(state.blob_shas)))
    for r in rows:
        await store.finish(Finish(r["id"], RunStatus.succeeded), epoch=1)
    erased = await store.erase_tenant("ta")
    seen["erased"] = {k: v for k, v in erased.counts.items() if "workspace" in k}
    seen["b_kept"] = await store.workspace_state("run_w_b") is not None
    return seen


async def test_postgres_and_the_twin_fence_dedup_per_tenant_and_erase(db: Database) -> None:
    postgres = PostgresRunStore(db)
    try:
        real = await scenario(postgres)
        blobs = "SELECT count(*) FROM workspace_blobs WHERE tenant = $1"
        assert await _count(db, blobs, "ta") == 0 and await _count(db, blobs, "tb") == 1
    finally:
        await postgres.aclose()
    twin = await scenario(InMemoryRunStore())
    assert twin == real
    assert real["events_after_fenced"] == ["status", "status"]
    assert real["state_after_fenced"][:2] == (0, ["lib.py"])
    assert real["events"][-1] == "tool_results"
    assert real["state"][:3] == (1, ["lib.py", "x.py"], ["lib.py"])
    assert len(real["own_blobs"]) == 2 and len(real["other_tenant"]) == 1
    # Two runs of ta shared lib.py's blob: three manifest rows, two runs, two blobs in all.
    assert real["erased"] == {"run_workspace_files": 3, "run_workspaces": 2, "workspace_blobs": 2}
    assert real["b_kept"]


async def _count(db: Database, sql: str, *args: Any) -> int:
    async with db.acquire() as conn:
        return int(await conn.fetchval(sql, *args))
