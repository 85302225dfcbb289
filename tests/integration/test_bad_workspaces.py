"""A bad workspace spec is refused at submission when that is cheap and safe to say (422 naming
``workspace.value``), and otherwise fails its run with the workspace error: never a run that
"succeeds" while every tool call fails (issue 16). Whether a server path exists is not told at
submission, and at run time a missing path and a file read the same.

Real API, real embedded Postgres, a real worker pool running the simulated agent.
"""

from __future__ import annotations

import base64
import io
import shutil
import tarfile
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from quarterdeck.app import create_app
from quarterdeck.runtime import Runtime

pytestmark = pytest.mark.asyncio
PROBLEM = "application/problem+json"


@pytest.fixture
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="qd-root-", dir="/tmp"))
    path.chmod(0o755)
    (path / "project").mkdir()
    (path / "project" / "hello.txt").write_text("hello\n")
    (path / "file.txt").write_text("not a directory\n")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def api(make_settings: Callable[..., Any], root: Path) -> AsyncIterator[httpx.AsyncClient]:
    """Authentication off: every caller is an admin, who may name server paths under roots."""
    settings = make_settings(workspace_roots=[root], health_monitor_enabled=False)
    rt = Runtime(settings)
    await rt.start()
    app = create_app(settings, rt)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://qd") as c:
        yield c
    await rt.stop()


def tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


async def submit(api: httpx.AsyncClient, kind: str, value: str) -> httpx.Response:
    body = {"prompt": "look around", "workspace": {"type": kind, "value": value}}
    return await api.post("/v1/runs", json=body)


async def ended(api: httpx.AsyncClient, run_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run once terminal, and the data of its last status event."""
    run = (await api.get(f"/v1/runs/{run_id}/wait", params={"timeout": 30})).json()
    assert run["status"] not in ("queued", "running"), run
    events = (await api.get(f"/v1/runs/{run_id}/events")).json()
    status = [e for e in events if e["type"] == "status"][-1]["data"]
    return run, status


async def test_what_is_cheap_to_check_is_refused_at_submission(api: httpx.AsyncClient) -> None:
    refused = {
        ("tar", "%%% not base64"): "base64",
        ("tar", base64.b64encode(b"just some text, " * 64).decode()): "not a readable tar",
        ("tar", base64.b64encode(b"PK\x03\x04" + b"\x00" * 600).decode()): "not a readable tar",
        ("git", "ftp://github.com/o/r.git"): "not allowed",
        ("git", "https://10.0.0.1/r.git"): "IP address",
        ("path", "relative/dir"): "absolute path",
        ("path", "/etc"): "outside the configured workspace roots",
    }
    for (kind, value), reason in refused.items():
        r = await submit(api, kind, value)
        assert r.status_code == 422, (kind, value, r.text)
        assert r.headers["content-type"].startswith(PROBLEM)
        problem = r.json()
        assert reason in problem["detail"], (kind, value, problem)
        assert [e["field"] for e in problem["errors"]] == ["workspace.value"]
    assert (await api.get("/v1/runs")).json()["items"] == []  # nothing was accepted
    good = base64.b64encode(tar_of({"a.txt": b"a\n"})).decode()
    assert (await submit(api, "tar", good)).status_code == 202


async def test_a_server_path_is_not_probed_at_submission_and_fails_its_run(
    api: httpx.AsyncClient, root: Path
) -> None:
    answers = {}
    for name in ("project", "missing", "file.txt"):
        r = await submit(api, "path", str(root / name))
        assert r.status_code == 202, r.text  # the same answer whether it exists or not
        answers[name] = r.json()
    assert {a["status"] for a in answers.values()} == {"queued"}
    errors = []
    for name in ("missing", "file.txt"):
        run, status = await ended(api, answers[name]["id"])
        assert run["status"] == "failed", run
        assert status["error_type"] == "workspace_unavailable", status
        assert "is not available" in run["error"], run
        errors.append(run["error"].replace(str(root / name), "PATH"))
    assert errors[0] == errors[1]  # a missing path and a file cannot be told apart
    run, _ = await ended(api, answers["project"]["id"])
    assert run["status"] == "succeeded", run


async def test_an_archive_that_breaks_after_its_first_header_fails_its_run(
    api: httpx.AsyncClient,
) -> None:
    """Past the first header, an archive is read when the worker extracts it: a truncated one
    fails the run with the extraction error instead of a run with an empty workspace."""
    whole = tar_of({"big.bin": b"x" * 20_000, "after.txt": b"y"})
    truncated = base64.b64encode(whole[:2048]).decode()
    r = await submit(api, "tar", truncated)
    assert r.status_code == 202, r.text
    run, status = await ended(api, r.json()["id"])
    assert run["status"] == "failed", run
    assert status["error_type"] == "workspace_unavailable"
    assert "tar" in run["error"], run
