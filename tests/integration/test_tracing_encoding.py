"""The direct OTLP encoder against the upstream one, and the exporter that sends its bytes.

The encoder must send a collector exactly what the upstream encoder sends: each test builds
real SDK spans (every kind of attribute value, events, links, statuses, remote parents, trace
state, dropped counts, several resources and scopes) and compares the two encodings byte for
byte, then the exporter's requests as the local OTLP receiver decodes them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import (
    encode_spans as upstream_encode,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from quarterdeck.chaos.process import free_port
from quarterdeck.tracing.otlp import FastOTLPSpanExporter, encode_spans
from tests.support.otlp_receiver import OtlpReceiver

REMOTE = SpanContext(
    trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
    span_id=0x00F067AA0BA902B7,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("vendor", "v1"), ("other", "x-y")]),
)


def _provider(
    resource: Resource, limits: SpanLimits | None = None
) -> tuple[TracerProvider, InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=resource, span_limits=limits, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, memory


def _spans() -> list[ReadableSpan]:
    """Spans of two resources, three scopes (one with a version, schema and attributes)."""
    main, main_mem = _provider(
        Resource.create({"service.name": "quarterdeck", "quarterdeck.role": "api+worker"}),
        SpanLimits(max_span_attributes=12, max_events=2, max_links=1),
    )
    other, other_mem = _provider(Resource({"service.name": "other"}, schema_url="https://s/1"))
    ours = main.get_tracer("quarterdeck")
    db = main.get_tracer(
        "opentelemetry.instrumentation.asyncpg",
        "0.66b1",
        schema_url="https://opentelemetry.io/schemas/1.11.0",
        attributes={"scope.attr": "x"},
    )
    values = {
        "str": "value",
        "empty": "",
        "unicode": "tâche ✓ 任务",
        "bool.true": True,
        "bool.false": False,
        "int.zero": 0,
        "int.negative": -42,
        "int.big": 2**62,
        "int.too.big": 2**70,  # upstream logs it and leaves it out: so must we
        "float": 0.125,
        "float.negative.zero": -0.0,
        "list.str": ["end_turn", ""],
        "list.int": [1, -2, 3],
        "list.bool": [True, False],
        "list.float": [1.5, -0.0],
        "list.empty": [],
    }
    root = ours.start_span(
        "invoke_agent coder",
        context=set_span_in_context(NonRecordingSpan(REMOTE)),
        kind=SpanKind.INTERNAL,
        attributes=values,  # more than the limit of 12: a dropped count to carry
        links=[Link(REMOTE, {"link.attr": 1}), Link(REMOTE)],
    )
    root.add_event("checkpoint", {"turn": 1, "tools": ["read", "write"]})
    root.add_event("plain")
    root.add_event("third")  # over the limit of 2: a dropped event
    with ours.start_as_current_span("chat sim-1", context=set_span_in_context(root)) as chat:
        chat.set_attributes(
            {"gen_ai.usage.input_tokens": 10, "gen_ai.response.finish_reasons": ["end_turn"]}
        )
        chat.set_status(Status(StatusCode.ERROR, "upstream 529: overloaded"))
        for statement in ("SELECT 1", "SELECT 1", "INSERT INTO runs VALUES ($1)"):
            with db.start_as_current_span(
                statement.split()[0],
                kind=SpanKind.CLIENT,
                attributes={
                    "db.system": "postgresql",
                    "db.statement": statement,
                    "net.peer.port": 5432,
                },
            ):
                pass
    root.set_status(Status(StatusCode.OK))
    root.end()
    with other.get_tracer("other", "1.0").start_as_current_span("GET /x", kind=SpanKind.SERVER):
        pass
    main_mem_spans = list(main_mem.get_finished_spans())
    return [main_mem_spans[0], *other_mem.get_finished_spans(), *main_mem_spans[1:]]


def test_the_bytes_are_the_upstream_encoders_for_every_kind_of_span_content(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spans = _spans()
    expected = upstream_encode(spans).SerializePartialToString()
    with caplog.at_level(logging.ERROR):
        first = encode_spans(spans)
        again = encode_spans(spans)  # the second time, from the caches
    assert first == expected
    assert again == expected
    assert "int.too.big" in caplog.text  # logged, as upstream does, and left out
    decoded = ExportTraceServiceRequest.FromString(first)
    assert [len(r.scope_spans) for r in decoded.resource_spans] == [2, 1]
    root = next(
        span
        for resource in decoded.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
        if span.name == "invoke_agent coder"
    )
    assert root.dropped_attributes_count > 0 and root.dropped_events_count == 1
    assert root.dropped_links_count == 1 and root.trace_state == "vendor=v1,other=x-y"


def test_batches_of_one_span_and_of_none_match_too() -> None:
    spans = _spans()
    for batch in ([], spans[:1], spans[-1:], spans[::-1]):
        assert encode_spans(batch) == upstream_encode(batch).SerializePartialToString()


def test_equal_resources_of_different_objects_are_grouped_as_upstream_groups_them() -> None:
    attrs = {"service.name": "quarterdeck", "service.instance.id": "a"}
    first, first_mem = _provider(Resource(attrs))
    second, second_mem = _provider(Resource(dict(attrs)))
    for provider in (first, second, first):
        with provider.get_tracer("quarterdeck").start_as_current_span("s"):
            pass
    spans: Sequence[ReadableSpan] = [
        *first_mem.get_finished_spans(),
        *second_mem.get_finished_spans(),
    ]
    encoded = encode_spans(spans)
    assert encoded == upstream_encode(spans).SerializePartialToString()
    assert len(ExportTraceServiceRequest.FromString(encoded).resource_spans) == 1


def test_the_exporter_sends_them_to_a_collector_configured_by_the_standard_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spans = _spans()
    with OtlpReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
        exporter = FastOTLPSpanExporter()
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        got = receiver.wait_for(lambda received: len(received) >= len(spans))
        exporter.shutdown()
    assert sorted(s.name for s in got) == sorted(s.name for s in spans)
    chat = next(s for s in got if s.name == "chat sim-1")
    assert chat.attributes["gen_ai.response.finish_reasons"] == ["end_turn"]
    assert chat.status_code == 2
    assert {s.resource["service.name"] for s in got} == {"quarterdeck", "other"}


def test_an_unreachable_collector_or_a_batch_over_the_size_limit_fails_the_export(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spans = _spans()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    down = FastOTLPSpanExporter(timeout=0.5)  # shorter than the first retry's backoff
    assert down.export(spans) is SpanExportResult.FAILURE
    with OtlpReceiver() as receiver:
        small = FastOTLPSpanExporter(endpoint=f"{receiver.url}/v1/traces", max_request_size=100)
        assert small.export(spans) is SpanExportResult.FAILURE
        assert receiver.count == 0
        small.shutdown()
        assert small.export(spans) is SpanExportResult.FAILURE  # after shutdown, as upstream
