"""Workspace sources: who may read the server's filesystem, and how the copy is contained.

Through the real API with authentication on: a submitter naming a server path (``path``, a
local git path or ``file://``) gets a 403 problem+json; an admin gets it only under
``QUARTERDECK_WORKSPACE_ROOTS`` (else 422), never ``/proc`` or the data dir, and the run really
gets the copy. The copy itself (a child that drops to the run's uid, follows no symlink, skips
special files and stops at the limits) and git clones (no operator config, allowed hosts only)
are exercised directly on the real filesystem with real git.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from quarterdeck.agents.sources import SourcePolicy, clone, copy_path
from quarterdeck.agents.workspace import Workspace, WorkspaceError
from quarterdeck.app import create_app
from quarterdeck.chaos.messages_api import MessagesAPIServer, message, text, tool_use
from quarterdeck.runs.sources import SourceRefused, check_git
from quarterdeck.runtime import Runtime
from quarterdeck.security.audit.models import EventFilter

pytest_plugins = ["tests.support.fixtures"]
pytestmark = pytest.mark.asyncio
ADMIN = "qd-admin-sources-" + "x" * 40
AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="per-run uids need root")


@pytest.fixture
def root() -> Iterator[Path]:
    """A configured workspace root with a small project in it."""
    path = Path(tempfile.mkdtemp(prefix="qd-root-", dir="/tmp"))
    path.chmod(0o755)
    project = path / "project"
    project.mkdir()
    (project / "hello.txt").write_text("hello from the server\n")
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Api:
    def __init__(self, client: httpx.AsyncClient, submitter: str) -> None:
        self.client = client
        self.admin = {"Authorization": f"Bearer {ADMIN}"}
        self.submitter = {"Authorization": f"Bearer {submitter}"}

    async def submit(self, who: dict[str, str], kind: str, value: str) -> httpx.Response:
        body = {"prompt": "x", "workspace": {"type": kind, "value": value}}
        return await self.client.post("/v1/runs", headers=who, json=body)


@pytest.fixture
async def api(make_settings: Any, root: Path) -> AsyncIterator[Api]:
    settings = make_settings(
        auth_enabled=True,
        admin_api_key=ADMIN,
        workspace_roots=[root],
        rate_limit_key_per_minute=0,
        rate_limit_tenant_per_minute=0,
    )
    rt = Runtime(settings, with_workers=False)
    await rt.start()
    app = create_app(settings, rt)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://qd") as c:
        made = await c.post(
            "/v1/admin/keys",
            headers={"Authorization": f"Bearer {ADMIN}"},
            json={"name": "ci", "role": "submitter", "tenant": "acme"},
        )
        assert made.status_code == 201, made.text
        yield Api(c, made.json()["api_key"])
    await rt.stop()


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    return body


# -- at submission, through the API -----------------------------------------------------------


async def test_a_submitter_cannot_name_server_paths(api: Api, root: Path) -> None:
    project = root / "project"
    for kind, value in (
        ("path", str(project)),
        ("git", project.as_uri()),
        ("git", str(project)),
        ("path", "/etc"),
    ):
        body = problem(await api.submit(api.submitter, kind, value), 403)
        assert "admin role" in body["detail"], body
    batch = await api.client.post(
        "/v1/runs/batch",
        headers=api.submitter,
        json={
            "runs": [{"prompt": "a"}, {"prompt": "b", "workspace": {"type": "path", "value": "/"}}]
        },
    )
    assert "runs.1" in problem(batch, 403)["detail"]
    listed = await api.client.get("/v1/runs", headers=api.submitter)
    assert listed.json()["items"] == []  # nothing was accepted
    # What a submitter may use is untouched: tar uploads and https git to an allowed host.
    ok = await api.submit(api.submitter, "git", "https://github.com/octocat/Hello-World.git")
    assert ok.status_code == 202, ok.text


async def test_an_admins_server_path_must_be_under_a_root(
    api: Api, root: Path, data_dir: Path
) -> None:
    accepted = await api.submit(api.admin, "path", str(root / "project"))
    assert accepted.status_code == 202, accepted.text
    via_git = await api.submit(api.admin, "git", (root / "project").as_uri())
    assert via_git.status_code == 202, via_git.text
    os.symlink("/etc", root / "etc-link")
    (root / "file.txt").write_text("x")
    refused = {
        "/etc": "outside the configured workspace roots",
        str(root / "etc-link"): "outside the configured workspace roots",  # resolved first
        str(
            root / "project" / ".." / ".." / ".." / "etc"
        ): "outside the configured workspace roots",
        "/proc/self": "kernel and device trees",
        "/sys/kernel": "kernel and device trees",
        str(data_dir): "data directory",
        "relative/path": "absolute path",
    }
    # Whether a path under a root exists is not said at submission (tests/integration/
    # test_bad_workspaces.py: the run fails instead, the same way for both).
    for hidden in (root / "file.txt", root / "missing"):
        assert (await api.submit(api.admin, "path", str(hidden))).status_code == 202
    for value, reason in refused.items():
        body = problem(await api.submit(api.admin, "path", value), 422)
        assert reason in body["detail"], (value, body)
        assert body["errors"][0]["field"] == "workspace.value"
    body = problem(await api.submit(api.admin, "git", "file:///proc/self"), 422)
    assert "kernel" in body["detail"]
    batch = await api.client.post(
        "/v1/runs/batch",
        headers=api.admin,
        json={
            "runs": [{"prompt": "a"}, {"prompt": "b", "workspace": {"type": "path", "value": "/"}}]
        },
    )
    assert problem(batch, 422)["errors"][0]["field"] == "runs.1.workspace.value"


async def test_git_urls_are_https_to_allowed_hosts(api: Api) -> None:
    refused = {
        "https://evil.example/repo.git": "not in the allowed git hosts",
        "https://127.0.0.1/repo.git": "IP address",
        "https://[::1]/repo.git": "IP address",
        "https://localhost/repo.git": "not a public host name",
        "https://metadata.google.internal/x": "not a public host name",
        "https://user:token@github.com/o/r.git": "credentials",
        "ssh://git@github.com/o/r.git": "without the operator's credentials",
        "git@github.com:o/r.git": "without the operator's credentials",
        "http://github.com/o/r.git": "not allowed",
        "ext::sh -c touch% /tmp/qd-pwned": "refusing git URL",
        "--upload-pack=touch /tmp/qd-pwned": "refusing git URL",
    }
    for url, reason in refused.items():
        for who in (api.submitter, api.admin):
            body = problem(await api.submit(who, "git", url), 422)
            assert reason in body["detail"], (url, body)
    # Empty QUARTERDECK_GIT_ALLOWED_HOSTS admits any public name, still never an address.
    assert check_git("https://git.example.org/r.git", [], []).host == "git.example.org"
    with pytest.raises(SourceRefused, match="IP address"):
        check_git("https://169.254.169.254/r.git", [], [])


# -- a whole run: the admin's copy reaches the agent ------------------------------------------


async def test_an_admins_run_gets_the_copy_and_its_commands_are_audited(
    make_settings: Any, messages_api: MessagesAPIServer, root: Path
) -> None:
    messages_api.script(
        [
            message(tool_use("read_file", {"path": "hello.txt"})),
            message(
                tool_use(
                    "run_command",
                    {"command": "echo bye > hello.txt && mkdir out && echo 1 > out/new.txt"},
                )
            ),
            message(tool_use("run_command", {"command": "rm -r out"})),
            message(text("done")),
        ]
    )
    settings = make_settings(
        provider="anthropic",
        anthropic_api_key="sk-ant-test",
        anthropic_base_url=messages_api.base_url,
        default_model="claude-sonnet-4-5",
        auth_enabled=True,
        admin_api_key=ADMIN,
        workspace_roots=[root],
    )
    rt = Runtime(settings)
    await rt.start()
    try:
        app = create_app(settings, rt)
        admin = {"Authorization": f"Bearer {ADMIN}"}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://qd"
        ) as c:
            body = {"prompt": "read", "workspace": {"type": "path", "value": str(root / "project")}}
            run = (await c.post("/v1/runs", headers=admin, json=body)).json()
            done = (
                await c.get(f"/v1/runs/{run['id']}/wait", headers=admin, params={"timeout": 60})
            ).json()
        assert done["status"] == "succeeded", done
        calls = [e.data for e in await rt.runs.events(run["id"], None) if e.type == "tool_call"]
        assert calls[0]["output"] == "hello from the server\n", calls[0]
        # What each command did, in the run's events and in the audit trail.
        made = [("hello.txt", "modified"), ("out/", "created"), ("out/new.txt", "created")]
        removed = [("out/", "deleted"), ("out/new.txt", "deleted")]
        for call, expected in ((calls[1], made), (calls[2], removed)):
            assert call["exit_code"] == 0, call
            assert sorted((c["path"], c["change"]) for c in call["files_changed"]) == expected
        await rt.audit.flush()
        audited = (
            await rt.audit.search(
                EventFilter(limit=100, event_types=["tool.call"], session_id=run["id"])
            )
        ).items
        commands = [e for e in audited if e.operations == ["run_command"]]  # newest first
        recorded = [sorted((c["path"], c["change"]) for c in e.files_modified) for e in commands]
        assert recorded == [removed, made]
    finally:
        await rt.stop()


async def test_a_run_whose_source_is_too_big_fails_with_the_reason_before_any_model_call(
    make_settings: Any, messages_api: MessagesAPIServer, root: Path
) -> None:
    big = root / "big"
    big.mkdir()
    (big / "blob.bin").write_bytes(os.urandom(2 * 1024**2))
    messages_api.script([message(text("never asked"))])
    settings = make_settings(
        provider="anthropic",
        anthropic_api_key="sk-ant-test",
        anthropic_base_url=messages_api.base_url,
        default_model="claude-sonnet-4-5",
        workspace_roots=[root],
        workspace_max_bytes=1024**2,
    )
    rt = Runtime(settings)
    await rt.start()
    try:
        app = create_app(settings, rt)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://qd"
        ) as c:
            body = {"prompt": "read", "workspace": {"type": "path", "value": str(big)}}
            run = (await c.post("/v1/runs", json=body)).json()
            done = (await c.get(f"/v1/runs/{run['id']}/wait", params={"timeout": 60})).json()
        assert done["status"] == "failed", done
        assert "workspace" in done["error"] and "larger than 1048576 bytes" in done["error"], done
        assert messages_api.requests == []
    finally:
        await rt.stop()


# -- the copy ---------------------------------------------------------------------------------


@pytest.fixture
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="qd-srcdata-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def policy(root: Path, **overrides: Any) -> SourcePolicy:
    return SourcePolicy(roots=(root,), **overrides)


async def test_symlinks_out_of_the_tree_are_neither_followed_nor_kept(
    root: Path, data: Path
) -> None:
    src = root / "project"
    (src / "sub").mkdir()
    (src / "sub" / "inner.txt").write_text("inner")
    os.symlink("/etc", src / "etc")  # a directory outside
    os.symlink("/etc/hostname", src / "host")  # a file outside
    os.symlink("../../..", src / "sub" / "up")  # climbs out
    os.symlink("sub/up/etc", src / "chained")  # lexically inside, really outside
    os.symlink("sub/inner.txt", src / "alias")  # stays inside: kept, as a link
    ws = await Workspace(data, "run-links").create(src, policy=policy(root))
    present = sorted(str(p.relative_to(ws.path)) for p in ws.path.rglob("*"))
    assert present == ["alias", "hello.txt", "sub", "sub/inner.txt"]
    assert os.readlink(ws.path / "alias") == "sub/inner.txt"
    assert (ws.path / "alias").read_text() == "inner"


async def test_special_files_do_not_hang_the_copy(root: Path, data: Path) -> None:
    src = root / "project"
    os.mkfifo(src / "fifo")  # opening it for reading would block forever
    started = time.monotonic()
    ws = await Workspace(data, "run-fifo").create(src, policy=policy(root))
    assert time.monotonic() - started < 10
    assert not (ws.path / "fifo").is_fifo()
    assert "fifo" not in {p.name for p in ws.path.iterdir()}
    assert (ws.path / "hello.txt").exists()


async def test_proc_self_fails_fast_even_under_a_root_of_slash(data: Path) -> None:
    started = time.monotonic()
    for value in ("/proc/self", "/proc", "/dev/shm", "/sys"):
        with pytest.raises(WorkspaceError, match="kernel and device trees"):
            await Workspace(data, "run-proc").create(
                Path(value), policy=SourcePolicy(roots=(Path("/"),))
            )
    assert time.monotonic() - started < 5
    assert not (data / "workspaces" / "run-proc").exists()


async def test_the_size_limits_stop_a_big_source_quickly(root: Path, data: Path) -> None:
    src = root / "project"
    os.truncate(src / "hello.txt", 50 * 1024**3)  # 50 GiB, sparse: copying would take minutes
    started = time.monotonic()
    with pytest.raises(WorkspaceError, match="larger than 1048576 bytes"):
        await Workspace(data, "run-big").create(src, policy=policy(root, max_bytes=1024**2))
    assert time.monotonic() - started < 5
    assert not (data / "workspaces" / "run-big").exists()
    os.truncate(src / "hello.txt", 10)
    for i in range(30):
        (src / f"f{i}").write_text("x")
    with pytest.raises(WorkspaceError, match="more than 20 entries"):
        await Workspace(data, "run-many").create(src, policy=policy(root, max_files=20))


@AS_ROOT
async def test_the_copy_reads_only_what_the_runs_user_may(root: Path, data: Path) -> None:
    src = root / "project"
    secret = src / "secret.key"
    secret.write_text("root only")
    secret.chmod(0o600)  # owned by root: the run's uid may not read it
    with pytest.raises(WorkspaceError, match=r"secret\.key is not readable by the run's user"):
        await Workspace(data, "run-secret").create(src, policy=policy(root))
    assert not (data / "workspaces" / "run-secret").exists()
    secret.chmod(0o644)
    ws = await Workspace(data, "run-secret").create(src, policy=policy(root))
    assert ws.owner is not None
    assert os.stat(ws.path / "secret.key").st_uid == ws.owner[0]


async def test_copy_path_checks_the_roots_again_at_execution(root: Path, data: Path) -> None:
    """Defence in depth: a run accepted earlier is re-checked against today's settings."""
    dest = data / "dest"
    dest.mkdir()
    with pytest.raises(WorkspaceError, match="no workspace roots are configured"):
        await copy_path(root / "project", dest, None, SourcePolicy())
    with pytest.raises(WorkspaceError, match="data directory"):
        await copy_path(data, dest, None, SourcePolicy(roots=(Path("/tmp"),), deny=(data,)))


# -- git --------------------------------------------------------------------------------------


def _git(*args: str, cwd: Path | None = None) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    subprocess.run(["git", *args], check=True, cwd=cwd, env=env, capture_output=True)


@pytest.fixture
def bare(root: Path) -> Path:
    work, bare = root / "work", root / "repo.git"
    _git("init", "-q", str(work))
    (work / "README").write_text("from git\n")
    (work / "blob.bin").write_bytes(os.urandom(2 * 1024**2))  # incompressible
    _git("add", ".", cwd=work)
    _git("commit", "-qm", "init", cwd=work)
    _git("clone", "-q", "--bare", str(work), str(bare))
    return bare


async def test_a_local_clone_ignores_the_operators_git_config(
    root: Path, data: Path, bare: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator config that would break the clone (and a credential socket) if it leaked in.
    home = data / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(
        f'[url "file:///nonexistent/"]\n\tinsteadOf = {bare.as_uri()}\n'
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    monkeypatch.setenv("SSH_AUTH_SOCK", str(home / "agent.sock"))
    ws = await Workspace(data, "run-git").create(bare.as_uri(), policy=policy(root))
    assert (ws.path / "README").read_text() == "from git\n"
    assert await ws.changed_files() == []


async def test_a_clone_stops_at_the_size_limit(root: Path, data: Path, bare: Path) -> None:
    dest = data / "clone"
    dest.mkdir()
    with pytest.raises(WorkspaceError, match="larger than"):
        await clone(bare.as_uri(), dest, None, policy(root, max_bytes=1024**2))


async def test_a_clone_is_refused_before_it_starts(root: Path, data: Path) -> None:
    dest = data / "clone"
    dest.mkdir()
    for url, reason in (
        ("https://evil.example/r.git", "allowed git hosts"),
        (str(root / "elsewhere"), "is not available"),
        ("file:///etc", "outside the configured workspace roots"),
    ):
        with pytest.raises(WorkspaceError, match=reason):
            await clone(url, dest, None, policy(root))
    await asyncio.sleep(0)
    assert list(dest.iterdir()) == []
