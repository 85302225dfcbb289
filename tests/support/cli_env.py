"""Fixtures' shared steps for tests that invoke the CLI in-process (typer's CliRunner)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import structlog


def forget_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting leaks in from the caller's environment (CI, a developer's shell)."""
    for name in list(os.environ):
        if name.startswith("QUARTERDECK_") or name in ("POSTGRES_URL", "REDIS_URL"):
            monkeypatch.delenv(name)


@contextmanager
def logs_to_the_real_stderr(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The CLI configures process-wide logging on the stderr it starts with. Under CliRunner
    that is a temporary stream, closed after the command, which every logger cached meanwhile
    would keep writing to in later tests; so here logs go to the real stderr, uncached."""
    saved = structlog.get_config()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(file=sys.__stderr__),
        cache_logger_on_first_use=False,
    )
    monkeypatch.setattr("quarterdeck.kit.logs.configure_logging", lambda *a, **k: None)
    try:
        yield
    finally:
        structlog.configure(**saved)
