"""``quarterdeck doctor`` checks the running server it is pointed at (issue 16).

It asks ``/health``, ``/ready``, ``/v1/me`` and ``/v1/system`` of a real app (uvicorn in the
test's loop, real Postgres), reports what they say, warns about a busy port only when no
Quarterdeck answers there, and says so when no server runs, all without creating a data dir in
the directory it runs from.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from quarterdeck.cli import app
from quarterdeck.runtime import Runtime
from tests.conftest import free_port
from tests.support.cli_env import forget_settings_env, logs_to_the_real_stderr
from tests.support.live_app import serving

ADMIN_KEY = "doctor-bootstrap-admin-key-0123456789abcdef"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No settings from the caller's environment; run from an empty directory; logs to the real
    stderr (see test_auth_cli)."""
    forget_settings_env(monkeypatch)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    with logs_to_the_real_stderr(monkeypatch):
        yield tmp_path


class _NotQuarterdeck(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html>some other service</html>"
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def foreign_port() -> Iterator[int]:
    """A port held by an HTTP server that is not Quarterdeck."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotQuarterdeck)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


async def doctor(*args: str, env: dict[str, str] | None = None) -> tuple[int, Any, str]:
    result = await asyncio.to_thread(runner.invoke, app, ["doctor", "--json", *args], env=env)
    try:
        checks = json.loads(result.stdout)
    except ValueError:
        raise AssertionError(result.output) from None
    return result.exit_code, {c["name"]: c for c in checks}, result.output


@pytest.fixture
async def auth_on(make_settings: Any) -> AsyncIterator[Runtime]:
    rt = Runtime(make_settings(auth_enabled=True, admin_api_key=ADMIN_KEY))
    await rt.start()
    yield rt
    await rt.stop()


async def test_a_live_server_is_checked_through_health_and_ready(
    runtime: Runtime, foreign_port: int, _clean: Path
) -> None:
    async with serving(runtime) as url:
        port = url.rsplit(":", 1)[1]
        code, checks, output = await doctor(
            "--url",
            url,
            env={"QUARTERDECK_HTTP_PORT": port, "QUARTERDECK_METRICS_PORT": str(foreign_port)},
        )
    assert code == 0, output
    for name in ("server", "ready", "migrations", "draining", "event_loop", "postgres"):
        assert checks[name]["status"] == "ok", checks[name]
    assert "the server reaches it" in checks["postgres"]["detail"]
    assert "not configured on the server" in checks["redis"]["detail"]
    assert checks["auth"]["status"] == "warn"  # authentication is off in development
    assert "OFF" in checks["auth"]["detail"]
    assert {"sandbox.bwrap", "sandbox.unshare", "sandbox.rlimits"} <= set(checks)
    # its own API port is not reported as busy; a port held by something else is
    assert "http_port" not in checks
    assert checks["metrics_port"]["status"] == "warn"
    assert "not Quarterdeck" in checks["metrics_port"]["detail"]
    assert "data_dir" not in checks  # the server answered: the local data dir is not its
    assert os.listdir(_clean) == []  # nothing created where it ran


async def test_with_authentication_on_the_key_decides_what_it_sees(auth_on: Runtime) -> None:
    async with serving(auth_on) as url:
        code, anonymous, output = await doctor("--url", url)
        assert code == 0, output
        assert anonymous["auth"]["status"] == "ok"
        assert "no QUARTERDECK_API_KEY" in anonymous["auth"]["detail"]
        assert anonymous["sandbox"]["status"] == "warn"  # /v1/system needs health:read
        assert "sandbox.bwrap" not in anonymous

        code, admin, output = await doctor("--url", url, env={"QUARTERDECK_API_KEY": ADMIN_KEY})
        assert code == 0, output
        assert admin["auth"]["status"] == "ok" and "admin" in admin["auth"]["detail"]
        assert "sandbox.bwrap" in admin and "sandbox" not in admin

        code, wrong, _ = await doctor("--url", url, env={"QUARTERDECK_API_KEY": "qd_nope_123"})
        assert code == 1
        assert wrong["auth"]["status"] == "fail"
        assert "rejects QUARTERDECK_API_KEY" in wrong["auth"]["detail"]


async def test_no_server_is_reported_as_not_running(_clean: Path) -> None:
    port = free_port()
    code, checks, output = await doctor(env={"QUARTERDECK_HTTP_PORT": str(port)})
    assert code == 1, output
    assert checks["server"]["status"] == "fail"
    assert f"not running at http://127.0.0.1:{port}" in checks["server"]["detail"]
    assert "quarterdeck up" in checks["server"]["fix"]
    # what `up` would need here, looked at without creating anything
    assert (
        checks["data_dir"]["status"] == "ok" and "will be created" in checks["data_dir"]["detail"]
    )
    assert "none yet" in checks["postgres"]["detail"]
    assert "ready" not in checks and "http_port" not in checks
    assert os.listdir(_clean) == []


async def test_something_else_answering_is_not_taken_for_quarterdeck(foreign_port: int) -> None:
    code, checks, output = await doctor(
        "--url",
        f"http://127.0.0.1:{foreign_port}",
        env={"QUARTERDECK_HTTP_PORT": str(foreign_port)},
    )
    assert code == 1, output
    assert "not Quarterdeck" in checks["server"]["detail"]
    assert checks["http_port"]["status"] == "warn"  # held, and not by Quarterdeck


def test_the_table_says_the_same_with_fixes(_clean: Path) -> None:
    port = free_port()
    result = runner.invoke(app, ["doctor"], env={"QUARTERDECK_HTTP_PORT": str(port)})
    assert result.exit_code == 1
    flat = " ".join(result.stdout.split())
    assert "│ server │ fail │ Quarterdeck is not │ start it with │" in flat, flat
