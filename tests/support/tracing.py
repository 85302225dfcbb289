"""Spans recorded in memory, for tests: the SDK's own ``InMemorySpanExporter``.

OpenTelemetry lets a process install its global tracer provider once, so one provider is
installed for the whole test session, the first time a test asks for ``spans``; a sampler that
records only while such a test runs keeps every other test's spans (and their cost) away.

    from tests.support.tracing import spans  # noqa: F401  (the fixture)

    async def test_x(spans: Recorded) -> None:
        ...
        tree = spans.finished()
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes


class Switch(Sampler):
    """Records everything while ``on``, nothing otherwise."""

    on = False

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        decision = Decision.RECORD_AND_SAMPLE if self.on else Decision.DROP
        return SamplingResult(decision, attributes if self.on else None)

    def get_description(self) -> str:
        return "tests.support.tracing.Switch"


class Recorded:
    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self.exporter = exporter

    def finished(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [s for s in self.finished() if s.name.startswith(prefix)]

    def children_of(self, parent: ReadableSpan) -> list[ReadableSpan]:
        pid = parent.context.span_id if parent.context else None
        return [s for s in self.finished() if s.parent is not None and s.parent.span_id == pid]

    def clear(self) -> None:
        self.exporter.clear()


_SWITCH = Switch()
_EXPORTER = InMemorySpanExporter()
_installed = False


def install() -> None:
    """The session's provider (once). Refuses if something else installed one first."""
    global _installed
    if _installed:
        return
    provider = TracerProvider(sampler=_SWITCH)
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)
    assert trace.get_tracer_provider() is provider, "another tracer provider was installed first"
    _installed = True


@pytest.fixture
def spans() -> Iterator[Recorded]:
    install()
    _EXPORTER.clear()
    _SWITCH.on = True
    try:
        yield Recorded(_EXPORTER)
    finally:
        _SWITCH.on = False
        _EXPORTER.clear()
