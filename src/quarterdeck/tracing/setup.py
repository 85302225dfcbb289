"""Installing the OpenTelemetry SDK from the standard ``OTEL_*`` variables, once per process.

Why off unless asked: every span the SDK records costs CPU on the run's event loop, and most
installations have no collector. With no SDK provider the API hands out no-op spans
(:mod:`quarterdeck.tracing`), so tracing costs nothing until an operator sets the variables a
collector's documentation tells them to set:

============================================  ===========================================
``OTEL_SDK_DISABLED=true``                    off, whatever else is set
``OTEL_TRACES_EXPORTER=otlp`` / ``console``   on (a comma list of both works; ``none``: off)
``OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT``      on with ``otlp``, unless the exporter is ``none``
nothing of the above                          off (unlike the SDK's own default of ``otlp``)
============================================  ===========================================

The rest is the SDK's: the OTLP/HTTP exporter reads its endpoint, headers, timeout and
compression, the batch processor its ``OTEL_BSP_*``, the provider its ``OTEL_TRACES_SAMPLER``
(all from ``os.environ``; ``environ`` here only decides). Only the OTLP/HTTP protobuf exporter is
installed, so a gRPC or JSON protocol is refused by name rather than sent to the wrong port.

OpenTelemetry lets a process set its global provider once: a second :func:`configure_tracing`
(tests start many runtimes in one process) reuses the first, and :meth:`TracingHandle.shutdown`
only flushes, so a runtime started after another's stop still exports.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import environ as os_environ
from typing import Any
from urllib.parse import unquote

import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes

from quarterdeck.exceptions import ConfigError
from quarterdeck.tracing import set_record_content

__all__ = [
    "EXCLUDED_URLS",
    "TracingHandle",
    "configure_tracing",
    "disabled_instrumentations",
    "exporters_wanted",
    "instrument_app",
    "instrument_asyncpg",
    "resource_attributes",
]

log = structlog.get_logger(__name__)

SUPPORTED = ("otlp", "console")
PROTOCOL = "http/protobuf"
FLUSH_TIMEOUT_S = 5.0
# Probes and scrapes every few seconds would bury the requests worth reading; static files too.
# Regexes over the full URL (scheme://host/path, no query), joined by commas (the API's form).
EXCLUDED_URLS = ",".join(
    [r"^[a-z]+://[^/]+/(health|ready|metrics)/?$", r"^[a-z]+://[^/]+/ui/static/"]
)


def exporters_wanted(environ: Mapping[str, str]) -> tuple[str, ...]:
    """Which exporters the variables ask for (empty: tracing stays off); ConfigError naming
    the variable for an exporter or protocol this installation cannot serve."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ()
    named = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    endpoint = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )
    if named:
        names = [n.strip().lower() for n in named.split(",") if n.strip()]
        bad = [n for n in names if n not in (*SUPPORTED, "none")]
        if bad:
            reason = f"unsupported trace exporter {', '.join(bad)!s}: use otlp, console or none"
            raise ConfigError([("OTEL_TRACES_EXPORTER", reason)])
        if "none" in names:
            return ()
        chosen = tuple(dict.fromkeys(names))
    elif endpoint:
        chosen = ("otlp",)
    else:
        return ()
    if "otlp" in chosen:
        _check_protocol(environ)
    return chosen


def _check_protocol(environ: Mapping[str, str]) -> None:
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = environ.get(name, "").strip().lower()
        if value:
            if value != PROTOCOL:
                reason = f"{value!r} is not served: only {PROTOCOL} (OTLP over HTTP, port 4318)"
                raise ConfigError([(name, reason)])
            return  # the traces-specific one overrides the general one


def resource_attributes(
    environ: Mapping[str, str], *, service_name: str, service_version: str, role: str
) -> dict[str, str]:
    """Ours as defaults, ``OTEL_RESOURCE_ATTRIBUTES`` over them, ``OTEL_SERVICE_NAME`` over
    that (the specification's order); ``quarterdeck.role`` is a fact of the process, kept."""
    attrs = {
        "service.name": service_name,
        "service.version": service_version,
        "service.instance.id": str(uuid.uuid4()),
    }
    for pair in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip():
            attrs[key.strip()] = unquote(value.strip())
    if environ.get("OTEL_SERVICE_NAME", "").strip():
        attrs["service.name"] = environ["OTEL_SERVICE_NAME"].strip()
    attrs["quarterdeck.role"] = role
    return attrs


class QuietRoots(Sampler):
    """The configured sampler, except that a database query outside any trace is dropped.

    The worker's polls, heartbeats, gauges and elections query Postgres every few seconds;
    each would otherwise be a trace of one span, and they would outnumber the traces of runs
    and requests. Queries made inside a request or a run's span are kept (the inner sampler
    decides them, as everything else)."""

    def __init__(self, inner: Sampler) -> None:
        self.inner = inner

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if (
            kind is SpanKind.CLIENT
            and attributes
            and ("db.system" in attributes or "db.system.name" in attributes)
            and not trace.get_current_span(parent_context).get_span_context().is_valid
        ):
            return SamplingResult(Decision.DROP)
        return self.inner.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"QuietRoots{{{self.inner.get_description()}}}"


@dataclass(frozen=True)
class TracingHandle:
    """The installed provider, as a runtime holds it."""

    provider: TracerProvider
    exporters: tuple[str, ...]

    def shutdown(self, timeout_s: float = FLUSH_TIMEOUT_S) -> bool:
        """Export what is queued, waiting at most ``timeout_s`` (False: not all of it left).

        A blocking call (run it off the event loop). The SDK's own flush waits as long as the
        exporter retries, so it runs on a daemon thread: a collector that is down delays a stop
        by ``timeout_s``, never more. The provider stays installed for a later runtime of this
        process; it was built without an exit hook, so nothing else waits at exit."""
        done = threading.Event()

        def flush() -> None:
            self.provider.force_flush()
            done.set()

        threading.Thread(target=flush, name="otel-flush", daemon=True).start()
        return done.wait(timeout_s)


_lock = threading.Lock()
_installed: TracingHandle | None = None
_asyncpg_instrumented = False


def configure_tracing(
    *,
    service_name: str,
    service_version: str,
    role: str,
    record_content: bool,
    environ: Mapping[str, str] = os_environ,
) -> TracingHandle | None:
    """Install the SDK provider if the variables ask for export (see the module's table);
    None when tracing stays off. ``service_name`` is the default ``OTEL_SERVICE_NAME``
    overrides; ``role`` is what this process runs (``api``, ``worker``, ``api+worker``)."""
    global _installed
    set_record_content(record_content)
    exporters = exporters_wanted(environ)
    with _lock:
        if _installed is not None:
            return _installed
        if not exporters:
            return None
        if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            log.warning("tracing.provider_already_installed", exporters=list(exporters))
            return None
        attrs = resource_attributes(
            environ, service_name=service_name, service_version=service_version, role=role
        )
        provider = TracerProvider(resource=Resource.create(attrs), shutdown_on_exit=False)
        provider.sampler = QuietRoots(provider.sampler)  # the one OTEL_TRACES_SAMPLER names
        for name in exporters:
            provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
        trace.set_tracer_provider(provider)
        _installed = TracingHandle(provider, exporters)
    log.info(
        "tracing.enabled",
        exporters=list(exporters),
        sampler=provider.sampler.get_description(),
        service=attrs["service.name"],
        role=role,
    )
    return _installed


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from quarterdeck.tracing.otlp import FastOTLPSpanExporter

    return FastOTLPSpanExporter()


def disabled_instrumentations(environ: Mapping[str, str]) -> frozenset[str]:
    """``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` (OpenTelemetry Python's own variable): e.g.
    ``asyncpg`` keeps the run and request spans but drops a span per query, most of the cost."""
    named = environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "")
    return frozenset(n.strip().lower() for n in named.split(",") if n.strip())


def instrument_app(app: Any, environ: Mapping[str, str] = os_environ) -> None:
    """HTTP server spans for a FastAPI app (a client's ``traceparent`` becomes their parent);
    probes, scrapes and static files excluded. A no-op while no provider is installed, or with
    ``fastapi`` in ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``."""
    handle = _installed
    if handle is None or "fastapi" in disabled_instrumentations(environ):
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=handle.provider,
        excluded_urls=EXCLUDED_URLS,
        exclude_spans=["receive", "send"],  # one span per ASGI message is noise, and costs
    )


def instrument_asyncpg(environ: Mapping[str, str] = os_environ) -> None:
    """A span per asyncpg query (statement text, never its parameters), patched into asyncpg's
    classes once per process, before connections are made; a query whose span the sampler
    would drop skips the instrumentation's work (:mod:`quarterdeck.tracing.queries`). A no-op
    while no provider is installed, or with ``asyncpg`` in
    ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``."""
    global _asyncpg_instrumented
    handle = _installed
    with _lock:
        if handle is None or _asyncpg_instrumented:
            return
        if "asyncpg" in disabled_instrumentations(environ):
            return
        from quarterdeck.tracing.queries import QuietAsyncPGInstrumentor, drops_unsampled_children

        instrumentor = QuietAsyncPGInstrumentor(
            capture_parameters=False,
            parent_decides=drops_unsampled_children(handle.provider.sampler),
        )
        instrumentor.instrument(tracer_provider=handle.provider)
        _asyncpg_instrumented = True
