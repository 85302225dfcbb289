"""Process entry points: ``up`` (API + workers), ``serve`` (API) and ``worker`` (workers).

Signals are ours, not uvicorn's: SIGTERM first drains (``/ready`` turns 503 and workers stop
picking up runs while in-flight runs finish or are released), then the HTTP server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import signal
import socket
import socketserver
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import anyio.to_thread
import structlog
import uvicorn

from quarterdeck import __version__
from quarterdeck.agents.sandbox.report import mode_in_use
from quarterdeck.app import create_app
from quarterdeck.config import Settings
from quarterdeck.health.heartbeat import PROBE_PATHS, LoopHeartbeat, ProcessState, probe_response
from quarterdeck.kit import banner
from quarterdeck.kit.heap import freeze_startup_heap
from quarterdeck.kit.logs import wants_console
from quarterdeck.metrics import REGISTRY, TenantPseudonyms
from quarterdeck.processes import WorkerProcesses, exit_with_parent
from quarterdeck.runtime import Runtime

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = structlog.get_logger(__name__)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def start_metrics_server(
    settings: Settings,
    probes: tuple[LoopHeartbeat, ProcessState] | None = None,
) -> WSGIServer | None:
    """Serve ``/metrics`` on ``metrics_port`` from a daemon thread (stdlib WSGI, threaded).

    Not prometheus_client's ``start_http_server``: it can neither require a token nor change
    label values. With ``metrics_token`` set every request needs ``Authorization: Bearer
    <token>`` (401 otherwise); unless ``metrics_tenant_labels``, tenant names leave as
    pseudonyms (:class:`~quarterdeck.metrics.TenantPseudonyms`). With ``probes`` (the loop's
    heartbeat and the runtime) it also answers ``/health`` and ``/ready`` without the token: the
    probes of a worker pod, which has no API (:mod:`quarterdeck.health.heartbeat`). Returns the
    server (None when the port is 0); a process never stops it, it ends with the process.
    """
    if settings.metrics_port == 0:
        return None
    from prometheus_client import make_wsgi_app

    registry = REGISTRY if settings.metrics_tenant_labels else TenantPseudonyms(REGISTRY)
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    app = _bearer_only(make_wsgi_app(registry), token) if token else make_wsgi_app(registry)
    if probes is not None:
        app = _with_probes(app, *probes)
    try:
        server = _metrics_server(settings.http_host, settings.metrics_port, app)
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
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a stuck scrape never holds the process open


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Scrapes are not news: no stderr line per request."""


def _metrics_server(host: str, port: int, app: WSGIApplication) -> WSGIServer:
    """A threaded WSGI server on ``host:port``, IPv4 or IPv6 as ``host`` is."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    server_class = type("MetricsServer", (_ThreadingWSGIServer,), {"address_family": family[0][0]})
    return make_server(host, port, app, server_class, handler_class=_QuietHandler)


def _with_probes(
    app: WSGIApplication, heartbeat: LoopHeartbeat, state: ProcessState
) -> WSGIApplication:
    """``/health`` and ``/ready`` answered from the heartbeat, anything else by ``app``."""

    def routed(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in PROBE_PATHS:
            return app(environ, start_response)
        status, body = probe_response(path, heartbeat, state)
        start_response(status, [("Content-Type", "application/json")])
        return [body]

    return routed


def _bearer_only(app: WSGIApplication, token: str) -> WSGIApplication:
    """``app`` behind ``Authorization: Bearer <token>``, compared in constant time."""
    expected = f"Bearer {token}".encode()

    def guarded(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        given = environ.get("HTTP_AUTHORIZATION", "").encode("latin-1", "replace")
        if hmac.compare_digest(given, expected):
            return app(environ, start_response)
        start_response(
            "401 Unauthorized",
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("WWW-Authenticate", 'Bearer realm="quarterdeck-metrics"'),
            ],
        )
        return [b"metrics need 'Authorization: Bearer <QUARTERDECK_METRICS_TOKEN>'\n"]

    return guarded


def _shared_port(settings: Settings) -> socket.socket:
    """The HTTP port bound with ``SO_REUSEPORT``: with ``api_processes`` > 1 every API process
    of this host (this one and its ``serve`` children) binds it, and the kernel spreads new
    connections across them, so the API uses more than one core."""
    host, port = settings.http_host, settings.http_port
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sock = socket.socket(family[0][0], socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(family[0][4])
    except OSError as exc:
        sock.close()
        from quarterdeck.exceptions import ConfigError

        message = f"cannot listen on {host}:{port}: {exc.strerror}"
        raise ConfigError([("QUARTERDECK_HTTP_PORT", message)]) from exc
    return sock


async def _started(server: _Server | None, server_task: asyncio.Task[None] | None) -> bool:
    """Whether the API answers (uvicorn ``started``, its lifespan done); True without one."""
    if server is None or server_task is None:
        return True
    while not server.started and not server_task.done():
        await asyncio.sleep(0.02)
    return server.started  # False: it failed to start; its error is logged


def _announce_ready(settings: Settings, workers: bool, api: bool, heap_frozen: int) -> None:
    """Say once that this process is ready: a banner on a console, one ``quarterdeck_ready``
    event on a JSON log stream (a banner would break its lines)."""
    info = ready_info(settings, api=api, workers=workers)
    if wants_console(settings.log_format):
        from rich.console import Console

        Console(stderr=True).print(banner.render(info))
    else:
        log.info("quarterdeck_ready", **info.fields(), heap_frozen=heap_frozen)


def ready_info(settings: Settings, *, api: bool, workers: bool) -> banner.ReadyInfo:
    """The facts of the ready banner, from the settings and the sandbox this process chose."""
    isolation: str | None = None
    problem: str | None = None
    if workers:
        mode, problem = mode_in_use()
        isolation = str(mode) if mode is not None else None
    simulated = settings.provider_name == "simulated"
    return banner.ReadyInfo(
        version=__version__,
        api_url=banner.local_url(settings.http_host, settings.http_port) if api else None,
        metrics_url=(
            banner.local_url(settings.http_host, settings.metrics_port) + "/metrics"
            if settings.metrics_port
            else None
        ),
        provider=settings.provider_name,
        simulated_latency=str(settings.simulated_latency) if simulated else None,
        auth=settings.auth_required,
        isolation=isolation,
        isolation_problem=problem,
        postgres=(
            f"embedded ({settings.data_dir / 'pg'})" if settings.embedded_postgres else "external"
        ),
        workers=(
            f"{settings.worker_processes} process(es) x {settings.worker_concurrency} runs"
            if workers
            else None
        ),
    )


async def warm_up() -> None:
    """Load now what the first requests would otherwise load with the event loop stopped.

    Starlette runs a route's sync dependencies in anyio's thread pool, and anyio imports its
    asyncio backend and starts the pool on first use: ~11 ms of imports (measured), caught by a
    loop-lag watchdog as a stall during the first requests a new replica served. Done before
    the start-up heap is frozen, so the modules it loads are frozen with the rest.
    """
    await anyio.to_thread.run_sync(int)


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
    await warm_up()
    heartbeat = LoopHeartbeat()
    beating = asyncio.create_task(heartbeat.run())
    start_metrics_server(settings, (heartbeat, runtime))
    # Children start after this process has started Postgres and applied migrations.
    children = WorkerProcesses(settings if workers and not supervised else None)
    await children.start()
    api_children = WorkerProcesses(settings if api and not supervised else None, api=True)
    await api_children.start()
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
        shared = _shared_port(settings) if settings.api_processes > 1 else None
        server_task = asyncio.create_task(server.serve([shared] if shared else None))
    log.info(
        "quarterdeck_started",
        api=api,
        workers=workers,
        http_port=settings.http_port,
        metrics_port=settings.metrics_port,
        provider=settings.provider_name,
        embedded_postgres=settings.embedded_postgres,
    )
    if await _started(server, server_task):
        frozen = freeze_startup_heap()  # start-up state out of full collections (kit/heap.py)
        if not supervised:
            _announce_ready(settings, workers, server is not None, frozen)
    waiters: list[asyncio.Future[object]] = [asyncio.ensure_future(stop.wait())]
    if server_task is not None:
        waiters.append(server_task)  # type: ignore[arg-type]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    log.info("quarterdeck_draining", grace_s=settings.drain_timeout)
    if orphan_watch is not None:
        orphan_watch.cancel()
    await asyncio.gather(runtime.drain(), children.stop(), api_children.stop())
    if server is not None and server_task is not None:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await server_task
    beating.cancel()
    await runtime.stop()
    log.info("quarterdeck_stopped")
