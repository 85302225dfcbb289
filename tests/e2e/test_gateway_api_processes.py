"""``QUARTERDECK_API_PROCESSES=2``: ``quarterdeck up`` starts a ``serve`` child on the same HTTP
port (SO_REUSEPORT) and the kernel spreads the gateway's connections over both processes, so the
relay uses two cores; both stop with the parent."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from quarterdeck.chaos.messages_api import MessagesAPIServer
from tests.e2e.conftest import Deployment

pytestmark = pytest.mark.e2e

CALLS = 40
COUNT = re.compile(
    r'^claude_agent_provider_request_duration_seconds_count\{[^}]*model="claude-sonnet-4-5"'
    r"[^}]*\} (\S+)$",
    re.M,
)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"serve\x00--supervised" in cmdline:
            found.append(int(stat.parent.name))
    return found


def _relayed(metrics_url: str) -> int:
    try:
        text = httpx.get(metrics_url, timeout=5).text
    except httpx.HTTPError:
        return -1
    return int(sum(float(v) for v in COUNT.findall(text)))


def test_two_api_processes_share_the_port_and_the_calls(deployment: Deployment) -> None:
    upstream = MessagesAPIServer(record_requests=False).start()
    try:
        parent = deployment.start(
            "up",
            QUARTERDECK_API_PROCESSES="2",
            QUARTERDECK_GATEWAY_UPSTREAM_URL=upstream.base_url,
            QUARTERDECK_GATEWAY_UPSTREAM_API_KEY="sk-upstream",
        )
        (child,) = _children(parent.pid)
        child_metrics = f"http://127.0.0.1:{parent.metrics_port + 1}/metrics"
        deadline = time.monotonic() + 60
        while _relayed(child_metrics) < 0:  # the child is up once it serves its metrics
            assert time.monotonic() < deadline, "the serve child never started"
            time.sleep(0.2)
        body = {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []}
        for _ in range(CALLS):  # a new connection each: the kernel picks a process for each
            with httpx.Client(base_url=deployment.url, timeout=30) as client:
                assert client.post("/v1/messages", json=body).status_code == 200
        deadline = time.monotonic() + 30
        while True:
            counts = _relayed(parent.metrics_url), _relayed(child_metrics)
            if sum(counts) == CALLS or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert sum(counts) == CALLS, counts
        assert min(counts) > 0, f"one process served every call: {counts}"
        assert parent.stop() == 0
        deadline = time.monotonic() + 30
        while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{child}").exists(), "the serve child outlived its parent"
    finally:
        upstream.stop()
