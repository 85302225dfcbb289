"""Process entry points: ``up`` (API + workers), ``serve`` (API) and ``worker`` (workers).

Signals are ours, not uvicorn's: SIGTERM first drains (``/ready`` turns 503 and workers stop
picking up runs while in-flight runs finish or are released), then the HTTP server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

import structlog
import uvicorn

from quarterdeck.app import create_app
from quarterdeck.config import Settings
from quarterdeck.metrics import REGISTRY
from quarterdeck.processes import WorkerProcesses, exit_with_parent
from quarterdeck.runtime import Runtime

log = structlog.get_logger(__name__)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def start_metrics_server(settings: Settings) -> None:
    if settings.metrics_port == 0:
        return
    from prometheus_client import start_http_server

    try:
        start_http_server(settings.metrics_port, addr=settings.http_host, registry=REGISTRY)
    except OSError as exc:
        from quarterdeck.exceptions import ConfigError

        raise ConfigError(
            [
                (
                    "QUARTERDECK_METRICS_PORT",
                    f"cannot listen on {settings.http_host}:{settings.metrics_port}: "
                    f"{exc.strerror}",
                )
            ]
        ) from exc


async def serve(
    settings: Settings, *, api: bool = True, workers: bool = True, supervised: bool = False
) -> None:
    """Run until SIGTERM/SIGINT. ``supervised``: this is a child of another process's
    :class:`WorkerProcesses` (it starts none itself and stops when its parent is gone)."""
    runtime = Runtime(settings, with_workers=workers, with_api=api)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runtime.start()
    start_metrics_server(settings)
    # Children start after this process has started Postgres and applied migrations.
    children = WorkerProcesses(settings if workers and not supervised else None)
    await children.start()
    orphan_watch = asyncio.create_task(exit_with_parent(stop)) if supervised else None
    server: _Server | None = None
    server_task: asyncio.Task[None] | None = None
    if api:
        app = create_app(settings, runtime)
        config = uvicorn.Config(
            app,
            host=settings.http_host,
            port=settings.http_port,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        server = _Server(config)
        server_task = asyncio.create_task(server.serve())
    log.info(
        "quarterdeck_started",
        api=api,
        workers=workers,
        http_port=settings.http_port,
        metrics_port=settings.metrics_port,
        provider=settings.provider_name,
        embedded_postgres=settings.embedded_postgres,
    )
    waiters: list[asyncio.Future[object]] = [asyncio.ensure_future(stop.wait())]
    if server_task is not None:
        waiters.append(server_task)  # type: ignore[arg-type]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    log.info("quarterdeck_draining", grace_s=settings.drain_timeout)
    if orphan_watch is not None:
        orphan_watch.cancel()
    await asyncio.gather(runtime.drain(), children.stop())
    if server is not None and server_task is not None:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await server_task
    await runtime.stop()
    log.info("quarterdeck_stopped")
