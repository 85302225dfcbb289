"""The real Claude Code CLI through Quarterdeck's gateway, as a team would deploy it.

``quarterdeck up`` runs with authentication on and its gateway pointed at the local Messages API
stand-in; the CLI (``@anthropic-ai/claude-code``, pinned in the Makefile) gets nothing but
``ANTHROPIC_BASE_URL`` and a Quarterdeck key of role ``submitter``. Its prompts, tool calls and
edits are real; only the model is scripted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from quarterdeck.chaos.messages_api import MessagesAPIServer, make_usage, message, text, tool_use
from tests.e2e.conftest import Deployment

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]
CLAUDE = ROOT / ".venv" / "claude-code" / "node_modules" / ".bin" / "claude"
ADMIN = "bootstrap-admin-for-the-gateway-e2e-0123456789"
UPSTREAM_KEY = "sk-upstream-only-quarterdeck-knows"
MODEL = "claude-sonnet-4-5"
# Sonnet 4.5 list prices, USD per million tokens: input 3, output 15, cache read 0.30, 1h write 6.
TURN_1 = {"input_tokens": 100, "output_tokens": 20, "cache_1h": 50, "cache_read": 200}
TURN_2 = {"input_tokens": 120, "output_tokens": 10, "cache_read": 300}
HAND_PRICED = (
    Decimal(3) * (100 + 120)
    + Decimal(15) * (20 + 10)
    + Decimal("0.30") * (200 + 300)
    + Decimal(6) * 50
) / Decimal(1_000_000)

needs_cli = pytest.mark.skipif(
    not CLAUDE.exists() and os.environ.get("CI") is None,
    reason="Claude Code CLI not installed (make deps installs it)",
)


@pytest.fixture
def upstream() -> Any:
    server = MessagesAPIServer().start()
    yield server
    server.stop()


@pytest.fixture
def gateway(deployment: Deployment, upstream: MessagesAPIServer) -> Deployment:
    deployment.start(
        "up",
        QUARTERDECK_AUTH_ENABLED="true",
        QUARTERDECK_ADMIN_API_KEY=ADMIN,
        QUARTERDECK_GATEWAY_UPSTREAM_URL=upstream.base_url,
        QUARTERDECK_GATEWAY_UPSTREAM_API_KEY=UPSTREAM_KEY,
    )
    return deployment


def _submitter_key(url: str, tenant: str) -> str:
    created = httpx.post(
        f"{url}/v1/admin/keys",
        json={"name": "claude code", "role": "submitter", "tenant": tenant},
        headers={"authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    return str(created.json()["api_key"])


def _claude(url: str, key: str, workdir: Path, prompt: str) -> dict[str, Any]:
    home = workdir.parent / "home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": url,
        "ANTHROPIC_API_KEY": key,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    done = subprocess.run(
        [
            str(CLAUDE),
            "-p",
            prompt,
            "--output-format",
            "json",
            "--model",
            MODEL,
            # Root refuses --dangerously-skip-permissions; accept edits for the one tool we allow.
            "--permission-mode",
            "acceptEdits",
            "--allowedTools",
            "Write",
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.stdout, f"claude printed nothing (exit {done.returncode}): {done.stderr[-2000:]}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _session_calls(url: str, key: str, session_id: str, n: int) -> list[dict[str, Any]]:
    """The calls the gateway recorded for a session (written off the response path)."""
    deadline = time.monotonic() + 15
    items: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        page = httpx.get(
            f"{url}/v1/gateway/calls",
            params={"session_id": session_id},
            headers={"x-api-key": key},
            timeout=10,
        )
        assert page.status_code == 200, page.text
        items = page.json()["items"]
        if len(items) >= n:
            break
        time.sleep(0.2)
    return items


@needs_cli
def test_claude_code_codes_through_the_gateway_and_is_billed_exactly(
    gateway: Deployment, upstream: MessagesAPIServer, tmp_path: Path
) -> None:
    work = tmp_path / "repo"
    work.mkdir()
    upstream.script(
        [
            message(
                tool_use(
                    "Write", {"file_path": str(work / "hello.py"), "content": "print('hi')\n"}
                ),
                usage=make_usage(**TURN_1),
                model=MODEL,
            ),
            message(text("Wrote hello.py."), usage=make_usage(**TURN_2), model=MODEL),
        ]
    )
    key = _submitter_key(gateway.url, "acme")

    result = _claude(gateway.url, key, work, "Create hello.py that prints hi.")

    assert result["is_error"] is False, result
    assert (work / "hello.py").read_text() == "print('hi')\n"
    # The upstream saw Quarterdeck's key, never the client's, and every anthropic-* header.
    assert len(upstream.requests) == 2
    for sent in upstream.requests:
        assert sent.headers["x-api-key"] == UPSTREAM_KEY
        assert key not in json.dumps(dict(sent.headers))
        assert "claude-code-20250219" in sent.headers["anthropic-beta"]
    # What Quarterdeck billed for the session = what the CLI computed = the hand-priced usage.
    calls = _session_calls(gateway.url, key, result["session_id"], 2)
    assert len(calls) == 2, calls
    billed = sum((Decimal(str(c["cost_usd"])) for c in calls), Decimal(0))
    assert billed == HAND_PRICED
    assert Decimal(str(result["total_cost_usd"])).quantize(Decimal("1e-12")) == HAND_PRICED
    assert {c["tenant"] for c in calls} == {"acme"}
    assert all(c["status"] == 200 and not c["cost_estimated"] for c in calls)


@needs_cli
def test_a_spent_budget_stops_claude_code_at_once_with_the_reason(
    gateway: Deployment, upstream: MessagesAPIServer, tmp_path: Path
) -> None:
    work = tmp_path / "repo"
    work.mkdir()
    key = _submitter_key(gateway.url, "frugal")
    put = httpx.put(
        f"{gateway.url}/v1/tenants/frugal/budget",
        json={"daily_usd": 0.000001},
        headers={"authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )
    assert put.status_code == 200, put.text

    started = time.monotonic()
    result = _claude(gateway.url, key, work, "Create hello.py that prints hi.")
    elapsed = time.monotonic() - started

    assert result["is_error"] is True, result
    assert result["api_error_status"] == 429
    assert "budget" in result["result"].lower()
    assert upstream.requests == []  # refused before any upstream call
    # x-should-retry: false means no retry loop: the CLI gives up well inside its backoff.
    assert elapsed < 30, elapsed


def test_cli_is_installed_where_the_makefile_puts_it() -> None:
    """CI must exercise the tests above, not skip them: make deps installs the pinned CLI."""
    if os.environ.get("CI") is None and not CLAUDE.exists():
        pytest.skip("outside CI, a missing CLI only skips")
    assert CLAUDE.exists(), "make deps did not install @anthropic-ai/claude-code"
    version = subprocess.run([str(CLAUDE), "--version"], capture_output=True, text=True, timeout=60)
    assert version.stdout.startswith("2.1.197"), version.stdout
    assert shutil.which("node") is not None
