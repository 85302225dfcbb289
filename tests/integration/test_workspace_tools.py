"""WorkspaceTools and Workspace on a real filesystem with real subprocesses and real git.

Hostile calls must come back as error results (never exceptions), be recorded in the event, and
leave the host untouched.
"""

from __future__ import annotations

import base64
import io
import itertools
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from quarterdeck.agents.egress.policy import address_refusal as address_denied
from quarterdeck.agents.fetch import host_allowed
from quarterdeck.agents.sandbox import capabilities
from quarterdeck.agents.tools import WorkspaceTools
from quarterdeck.agents.workspace import Workspace, WorkspaceError
from quarterdeck.config import Settings, load_settings
from quarterdeck.providers.types import ToolResultBlock, ToolUseBlock
from quarterdeck.runs.models import Run, RunStatus
from tests.support.runs import running_run

_ids = itertools.count()


def exists(path: str) -> bool:
    """Whether a host path exists (sync helper: the check is instant)."""
    return Path(path).exists()


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="qd-ws-", dir="/tmp"))
    path.chmod(0o755)  # the sandbox uid must be able to traverse to its workspace
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def source_root() -> Iterator[Path]:
    """A configured workspace root (QUARTERDECK_WORKSPACE_ROOTS), outside the data dir."""
    path = Path(tempfile.mkdtemp(prefix="qd-src-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def settings_for(data_dir: Path, **overrides: Any) -> Settings:
    return load_settings(None, data_dir=data_dir, command_timeout=20, **overrides)


@pytest.fixture
def tools(data_dir: Path, source_root: Path) -> WorkspaceTools:
    return WorkspaceTools(settings_for(data_dir, workspace_roots=[source_root]))


def make_run(workspace: dict[str, Any] | None = None) -> Run:
    return running_run(
        f"run-{os.getpid()}-{next(_ids)}",
        tenant="t",
        params={"workspace": workspace} if workspace else {},
    )


async def call(
    tools: WorkspaceTools, run: Run, name: str, **args: Any
) -> tuple[ToolResultBlock, dict[str, Any]]:
    result, event = await tools.run(run, ToolUseBlock(id=f"tu_{next(_ids)}", name=name, input=args))
    assert result.is_error == event["is_error"]
    assert event["tool"] == name
    return result, event


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


# -- path containment -----------------------------------------------------------------------


async def test_traversal_and_absolute_paths_are_refused(tools: WorkspaceTools) -> None:
    run = make_run()
    for path in ("../../etc/passwd", "/etc/passwd", "a/../../../etc/shadow"):
        result, event = await call(tools, run, "read_file", path=path)
        assert result.is_error
        assert "outside the workspace" in result.content
        assert "root:" not in result.content
        assert event["permissions"] == ["fs.read"]
    result, _ = await call(tools, run, "write_file", path="/tmp/qd-escape.txt", content="x")
    assert result.is_error and not exists("/tmp/qd-escape.txt")
    # An absolute path inside the workspace is fine.
    ws = await tools.workspace(run)
    result, _ = await call(tools, run, "write_file", path=str(ws.path / "ok.txt"), content="hi")
    assert not result.is_error
    assert (await call(tools, run, "read_file", path="ok.txt"))[0].content == "hi"


async def test_symlinks_out_of_the_workspace_are_refused(tools: WorkspaceTools) -> None:
    run = make_run()
    ws = await tools.workspace(run)
    os.symlink("/etc", ws.path / "etc_link")
    os.symlink("/etc/hostname", ws.path / "host_link")
    for path in ("etc_link/passwd", "host_link"):
        result, _ = await call(tools, run, "read_file", path=path)
        assert result.is_error and "outside the workspace" in result.content
    result, _ = await call(tools, run, "write_file", path="etc_link/qd-evil", content="x")
    assert result.is_error and not exists("/etc/qd-evil")
    result, _ = await call(tools, run, "edit_file", path="host_link", old="a", new="b")
    assert result.is_error
    # A symlink that stays inside is followed.
    (ws.path / "real").mkdir()
    (ws.path / "real" / "f.txt").write_text("inside")
    os.symlink("real", ws.path / "alias")
    assert (await call(tools, run, "read_file", path="alias/f.txt"))[0].content == "inside"
    listing, _ = await call(tools, run, "list_files", path=".")
    assert "etc_link -> /etc" in listing.content


async def test_hard_links_and_special_files_are_refused(tools: WorkspaceTools) -> None:
    run = make_run()
    ws = await tools.workspace(run)
    (ws.path / "a").write_text("x")
    os.link(ws.path / "a", ws.path / "b")
    os.mkfifo(ws.path / "fifo")
    assert "hard-linked" in (await call(tools, run, "read_file", path="b"))[0].content
    assert "not a regular file" in (await call(tools, run, "read_file", path="fifo"))[0].content


# -- file tools and diff --------------------------------------------------------------------


async def test_write_edit_diff_and_changed_files(tools: WorkspaceTools, source_root: Path) -> None:
    src = source_root / "src"
    src.mkdir()
    (src / "keep.txt").write_text("unchanged\n")
    (src / "edit.txt").write_text("alpha\nbeta\n")
    (src / "gone.txt").write_text("bye\n")
    (src / "blob.bin").write_bytes(b"\0\1\2")
    run = make_run({"type": "path", "value": str(src)})

    result, event = await call(tools, run, "write_file", path="new/dir/c.txt", content="hello\n")
    assert not result.is_error, result.content
    change = event["files_changed"][0]
    assert change["path"] == "new/dir/c.txt" and change["bytes"] == 6
    assert change["sha256_before"] is None and len(change["sha256_after"]) == 64
    assert event["permissions"] == ["fs.write"]

    result, event = await call(tools, run, "edit_file", path="edit.txt", old="beta", new="gamma")
    assert not result.is_error, result.content
    assert event["files_changed"][0]["sha256_before"] != event["files_changed"][0]["sha256_after"]

    result, event = await call(
        tools, run, "run_command", command="rm gone.txt && printf '\\0\\3' > blob.bin"
    )
    assert not result.is_error, result.content
    assert event["exit_code"] == 0 and event["isolation"]

    ws = await tools.workspace(run)
    assert sorted(await ws.changed_files()) == ["blob.bin", "edit.txt", "gone.txt", "new/dir/c.txt"]
    diff = await ws.diff()
    assert "+++ b/new/dir/c.txt" in diff and "+hello" in diff
    assert "-beta" in diff and "+gamma" in diff
    assert "deleted file mode" in diff and "-bye" in diff
    assert "Binary files a/blob.bin and b/blob.bin differ" in diff
    assert "keep.txt" not in diff
    assert ".sandbox-tmp" not in diff  # the sandbox's TMPDIR is not the agent's work


async def test_edit_file_absent_and_ambiguous(tools: WorkspaceTools) -> None:
    run = make_run()
    await call(tools, run, "write_file", path="f.py", content="x = 1\nx = 1\ny = 2\n")
    result, _ = await call(tools, run, "edit_file", path="f.py", old="z = 3", new="z = 4")
    assert result.is_error and "not found" in result.content
    result, _ = await call(tools, run, "edit_file", path="f.py", old="x = 1", new="x = 2")
    assert result.is_error and "appears 2 times" in result.content
    result, _ = await call(tools, run, "edit_file", path="missing.py", old="a", new="b")
    assert result.is_error
    result, _ = await call(tools, run, "edit_file", path="f.py", old="y = 2", new="y = 3")
    assert not result.is_error
    assert (await call(tools, run, "read_file", path="f.py"))[0].content.endswith("y = 3\n")


async def test_read_ranges_list_and_search(tools: WorkspaceTools) -> None:
    run = make_run()
    body = "".join(f"line {i}\n" for i in range(10))
    await call(tools, run, "write_file", path="pkg/mod.py", content=body)
    await call(tools, run, "write_file", path="pkg/notes.md", content="line 99\n")
    result, _ = await call(tools, run, "read_file", path="pkg/mod.py", offset=2, limit=3)
    assert result.content.startswith("line 2\nline 3\nline 4\n")
    assert "offset=5" in result.content
    listing, _ = await call(tools, run, "list_files", path=".", recursive=True)
    assert listing.content.splitlines()[:3] == ["pkg/", "pkg/mod.py", "pkg/notes.md"]
    found, event = await call(tools, run, "search", pattern=r"line \d{2}", glob="*.md")
    assert found.content.strip() == "pkg/notes.md:1:line 99", found.content
    assert event["isolation"]
    found, _ = await call(tools, run, "search", pattern=r"line [7-8]$")
    assert found.content.splitlines() == ["pkg/mod.py:8:line 7", "pkg/mod.py:9:line 8"]
    assert (await call(tools, run, "search", pattern="nomatch"))[0].content == "no matches"
    bad, _ = await call(tools, run, "search", pattern="(unclosed")
    assert bad.is_error
    escape, _ = await call(tools, run, "search", pattern="root", path="/etc")
    assert escape.is_error and "outside" in escape.content


async def test_bad_calls_become_error_results(tools: WorkspaceTools) -> None:
    run = make_run()
    result, _ = await call(tools, run, "rm_rf", path="/")
    assert result.is_error and "unknown tool" in result.content
    result, _ = await call(tools, run, "read_file", path="x", sneaky=True)
    assert result.is_error and "sneaky" in result.content
    result, _ = await call(tools, run, "write_file", path="x")
    assert result.is_error and "content" in result.content
    result, _ = await call(tools, run, "read_file", path="x\0y")
    assert result.is_error


def test_specs_come_from_the_input_models(tools: WorkspaceTools) -> None:
    specs = {s.name: s for s in tools.specs()}
    assert set(specs) == {
        "read_file",
        "write_file",
        "edit_file",
        "list_files",
        "search",
        "run_command",
        "http_fetch",
    }
    for spec in specs.values():
        assert spec.input_schema["additionalProperties"] is False
        assert spec.description
    assert specs["edit_file"].input_schema["required"] == [
        "path",
        "old",
        "new",
    ]


# -- commands -------------------------------------------------------------------------------


async def test_run_command_timeout_and_output_cap(data_dir: Path) -> None:
    tools = WorkspaceTools(settings_for(data_dir, tool_output_limit=1000))
    run = make_run()
    result, event = await call(tools, run, "run_command", command="sleep 1000", timeout_s=2)
    assert result.is_error and "timed out" in result.content
    assert event["timed_out"] is True and event["exit_code"] is None
    assert event["permissions"] == ["process.exec"]
    result, event = await call(tools, run, "run_command", command="yes | head -c 50000")
    assert not result.is_error
    assert len(result.content) < 1000 + 200 and "truncated" in result.content
    assert len(event["output"]) <= 4000 + 100
    result, _ = await call(tools, run, "write_file", path="big.txt", content="y" * 5000)
    assert event["input"]["command"] == "yes | head -c 50000"
    _, event = await call(tools, run, "write_file", path="big.txt", content="z" * 5000)
    assert len(event["input"]["content"]) < 2100


async def test_run_command_has_no_network_by_default(tools: WorkspaceTools) -> None:
    run = make_run()
    result, event = await call(
        tools,
        run,
        "run_command",
        command="python3 -c \"import socket; socket.create_connection(('127.0.0.1', 9), 2)\"",
    )
    if capabilities().netns:
        assert "netns" in event["isolation"].split(" ")[0].split("+")
        assert "unreachable" in result.content.lower() or "refused" in result.content.lower()
    else:
        assert "no network namespace" in event["isolation"]


# -- workspace sources ----------------------------------------------------------------------


async def test_tar_sources(tools: WorkspaceTools, data_dir: Path) -> None:
    good = tar_of((member("src", tarfile.DIRTYPE), None), (member("src/a.txt"), b"A"))
    run = make_run({"type": "tar", "value": base64.b64encode(good).decode()})
    assert (await call(tools, run, "read_file", path="src/a.txt"))[0].content == "A"

    hostile = {
        "..": tar_of((member("../evil"), b"x")),
        "absolute": tar_of((member("/tmp/qd-evil-abs"), b"x")),
        "points outside": tar_of((member("l", tarfile.SYMTYPE, "../../etc"), None)),
        "device": tar_of((member("dev", tarfile.CHRTYPE), None)),
    }
    for reason, data in hostile.items():
        with pytest.raises(WorkspaceError, match=reason):
            await Workspace(data_dir, f"tar-{next(_ids)}").create(data)
        run = make_run({"type": "tar", "value": base64.b64encode(data).decode()})
        result, _ = await call(tools, run, "list_files")
        assert result.is_error and reason in result.content
    assert not (data_dir / "workspaces" / "evil").exists()
    assert not (data_dir / "evil").exists() and not exists("/tmp/qd-evil-abs")


@pytest.fixture
def bare_repo(source_root: Path) -> Path:
    work, bare = source_root / "work", source_root / "bare.git"
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    (work / "README").write_text("from git\n")
    subprocess.run(["git", "-C", str(work), "add", "."], check=True)
    subprocess.run(["git", "-C", str(work), "commit", "-qm", "init"], check=True, env=env)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    return bare


async def test_git_clone_from_a_local_bare_repo(tools: WorkspaceTools, bare_repo: Path) -> None:
    run = make_run({"type": "git", "value": bare_repo.as_uri()})
    assert (await call(tools, run, "read_file", path="README"))[0].content == "from git\n"
    log, _ = await call(tools, run, "run_command", command="git log --oneline | wc -l")
    assert ws_ok(log)
    ws = await tools.workspace(run)
    assert await ws.changed_files() == []  # the clone's own .git is not part of the baseline

    for url in ("ext::sh -c touch% /tmp/qd-pwned", "http://example.com/r.git", "--upload-pack=x"):
        run = make_run({"type": "git", "value": url})
        result, _ = await call(tools, run, "list_files")
        assert result.is_error and "git URL" in result.content
    assert not exists("/tmp/qd-pwned")


def ws_ok(result: ToolResultBlock) -> bool:
    return not result.is_error and "exit code: 0" in result.content


async def test_resume_reopens_and_cleanup_follows_retention(data_dir: Path) -> None:
    settings = settings_for(data_dir, workspace_retention="delete_succeeded")
    run = make_run()
    first = WorkspaceTools(settings)
    await call(first, run, "write_file", path="progress.txt", content="turn 1")
    second = WorkspaceTools(settings)  # a new worker after a crash
    assert (await call(second, run, "read_file", path="progress.txt"))[0].content == "turn 1"
    ws = Workspace.open_existing(data_dir, run.id)
    assert await ws.changed_files() == ["progress.txt"]  # baseline kept from the first create
    assert second.cleanup(run, "failed") is False and ws.path.exists()
    assert second.cleanup(run, RunStatus.succeeded) is True
    assert not ws.path.exists() and not ws.git_dir.exists()
    with pytest.raises(WorkspaceError):
        Workspace.open_existing(data_dir, run.id)


# -- http_fetch -----------------------------------------------------------------------------


async def test_http_fetch_denies_internal_addresses(tools: WorkspaceTools) -> None:
    run = make_run()
    for url in (
        "http://127.0.0.1:8080/",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost/",
        "http://[::1]/",
        "http://10.0.0.1/",
        "http://[::ffff:127.0.0.1]/",
    ):
        result, event = await call(tools, run, "http_fetch", url=url)
        assert result.is_error, url
        assert event["permissions"] == ["net.connect"]
        [record] = event["network"]
        assert record["allowed"] is False and record["reason"], record
    result, event = await call(tools, run, "http_fetch", url="file:///etc/passwd")
    assert result.is_error and "scheme" in event["network"][0]["reason"]


async def test_http_fetch_allowlist(data_dir: Path) -> None:
    tools = WorkspaceTools(settings_for(data_dir, http_fetch_allowlist=["example.com"]))
    result, event = await call(tools, make_run(), "http_fetch", url="https://evil.test/x")
    assert result.is_error and "allowlist" in event["network"][0]["reason"]
    assert host_allowed("docs.example.com", ["example.com"])
    assert not host_allowed("example.com.evil.test", ["example.com"])
    assert address_denied("8.8.8.8") is None
    assert address_denied("192.168.1.1") and address_denied("224.0.0.1")


# -- what a command changed, and the workspace size limit -----------------------------------


def changes_of(event: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c["path"], c["change"]) for c in event["files_changed"] if "path" in c}


async def test_run_command_records_what_it_created_changed_and_deleted(
    tools: WorkspaceTools, source_root: Path
) -> None:
    src = source_root / "src"
    (src / "d").mkdir(parents=True)
    for name in ("keep.txt", "edit.txt", "gone.txt", "same.txt", "d/old.txt"):
        (src / name).write_text("unchanged\n")
    run = make_run({"type": "path", "value": str(src)})
    script = (
        "echo new > new.txt && mkdir -p made/deep && echo x > made/deep/f"
        " && echo more >> edit.txt && rm gone.txt && rm -r d"
        # Ignoring everything hides nothing from this audit (it is not the git diff).
        " && echo '*' > .gitignore && echo hidden > hidden.txt"
        # Same size, mtime put back: only the ctime shows the rewrite.
        " && touch -r same.txt ref && printf 'Unchanged\\n' > same.txt && touch -r ref same.txt"
        " && rm ref"
    )
    result, event = await call(tools, run, "run_command", command=script)
    assert not result.is_error, result.content
    assert changes_of(event) == {
        ("new.txt", "created"),
        ("made/", "created"),
        ("made/deep/", "created"),
        ("made/deep/f", "created"),
        (".gitignore", "created"),
        ("hidden.txt", "created"),
        ("edit.txt", "modified"),
        ("same.txt", "modified"),
        ("gone.txt", "deleted"),
        ("d/", "deleted"),
        ("d/old.txt", "deleted"),
    }
    created = next(c for c in event["files_changed"] if c["path"] == "new.txt")
    assert created["bytes"] == 4
    assert event["file_changes"] == {
        "created": 6,
        "modified": 2,
        "deleted": 3,
        "omitted": 0,
        "complete": True,
    }
    # A command that changes nothing records nothing; reads are not changes.
    _, event = await call(tools, run, "run_command", command="cat keep.txt edit.txt > /dev/null")
    assert event["files_changed"] == []
    # The list is bounded; the counts are not.
    _, event = await call(
        tools,
        run,
        "run_command",
        command="mkdir many && for i in $(seq 250); do : > many/f$i; done",
    )
    listed = [c for c in event["files_changed"] if "path" in c]
    assert len(listed) == 200 and listed[0] == {"path": "many/", "change": "created"}
    assert event["files_changed"][-1] == {
        "created": 251,
        "modified": 0,
        "deleted": 0,
        "omitted": 51,
    }


async def test_a_command_that_overfills_the_workspace_is_an_error(data_dir: Path) -> None:
    tools = WorkspaceTools(
        settings_for(data_dir, workspace_max_bytes=1024**2, workspace_max_files=100)
    )
    run = make_run()
    result, event = await call(tools, run, "run_command", command="head -c 3000000 /dev/zero > big")
    assert result.is_error and "workspace now holds" in result.content, result.content
    assert event["exit_code"] == 0 and event["workspace_bytes"] >= 3_000_000
    assert changes_of(event) == {("big", "created")}
    result, _ = await call(tools, run, "write_file", path="more.txt", content="x")
    assert result.is_error and "over its size limit" in result.content
    result, event = await call(tools, run, "run_command", command="rm big")
    assert not result.is_error and event["workspace_bytes"] < 1024**2
    assert not (await call(tools, run, "write_file", path="more.txt", content="x"))[0].is_error
    result, _ = await call(
        tools, run, "run_command", command="for i in $(seq 150); do : > f$i; done"
    )
    assert result.is_error and "more than 100 files" in result.content
