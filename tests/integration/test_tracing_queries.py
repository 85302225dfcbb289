"""asyncpg query spans: the ones the sampler keeps are made as the instrumentation makes them;
for the ones it would drop, the instrumentation's work is skipped, not done and thrown away.

In a child process (the provider and the patch of asyncpg are process-wide) against the test
Postgres, exporting to a local OTLP receiver; the instrumentation's attribute building is
counted, so "skipped" is observed rather than assumed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    TraceIdRatioBased,
)

from quarterdeck.tracing.queries import drops_unsampled_children
from quarterdeck.tracing.setup import QuietRoots
from tests.support.otlp_receiver import OtlpReceiver

SCRIPT = """
import asyncio, json, os
import opentelemetry.instrumentation.asyncpg as instrumentation
built = {"n": 0}
real = instrumentation._hydrate_span_from_args
def counted(*args, **kwargs):
    built["n"] += 1
    return real(*args, **kwargs)
instrumentation._hydrate_span_from_args = counted
import asyncpg
from opentelemetry import context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context
from quarterdeck.tracing import tracer
from quarterdeck.tracing.setup import configure_tracing, instrument_asyncpg
handle = configure_tracing(
    service_name="quarterdeck", service_version="1", role="worker", record_content=False
)
instrument_asyncpg()
UNSAMPLED = set_span_in_context(NonRecordingSpan(SpanContext(
    trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736, span_id=0x00F067AA0BA902B7,
    is_remote=True, trace_flags=TraceFlags(0),
)))

async def main():
    conn = await asyncpg.connect(os.environ["TEST_DB_URL"])
    built_by = {}
    async def query(label):
        before = built["n"]
        await conn.fetchval(f"SELECT '{label}'")
        statement = await conn.prepare(f"SELECT '{label} prepared'")
        await statement.fetchval()
        built_by[label] = built["n"] - before
    try:
        await query("outside")
        with tracer().start_as_current_span("sampled parent"):
            await query("sampled")
        token = context.attach(UNSAMPLED)
        try:
            await query("unsampled")
        finally:
            context.detach(token)
    finally:
        await conn.close()
    print(json.dumps({"built": built_by, "flushed": handle.shutdown(10.0)}))

asyncio.run(main())
"""


def _run(db_url: str, sampler: str, receiver: OtlpReceiver) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        {
            "TEST_DB_URL": db_url,
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_TRACES_SAMPLER": sampler,
        }
    )
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _statements(receiver: OtlpReceiver) -> set[str]:
    return {
        str(s.attributes.get("db.statement") or s.attributes.get("db.query.text"))
        for s in receiver.spans()
        if s.kind == "CLIENT"
    }


@pytest.mark.parametrize(
    ("sampler", "unsampled_kept"),
    [("parentbased_always_on", False), ("always_on", True)],
)
def test_query_spans_are_what_the_sampler_keeps_and_dropped_ones_cost_no_work(
    db_url: str, sampler: str, unsampled_kept: bool
) -> None:
    with OtlpReceiver() as receiver:
        result = _run(db_url, sampler, receiver)
        assert result["flushed"] is True
        statements = _statements(receiver)
    sampled = {"SELECT 'sampled'", "SELECT 'sampled prepared'"}
    unsampled = {"SELECT 'unsampled'", "SELECT 'unsampled prepared'"}
    assert sampled <= statements
    assert not {s for s in statements if "outside" in s}  # QuietRoots, as before
    assert (unsampled <= statements) is unsampled_kept
    assert not unsampled_kept or unsampled <= statements
    # Attributes built only for spans the sampler keeps (fetchval and the prepared fetchval).
    assert result["built"] == {
        "outside": 0,
        "sampled": 2,
        "unsampled": 2 if unsampled_kept else 0,
    }


def test_only_a_parent_based_sampler_that_drops_unsampled_parents_children_lets_us_skip() -> None:
    assert drops_unsampled_children(ParentBased(ALWAYS_ON))
    assert drops_unsampled_children(ParentBased(TraceIdRatioBased(0.1)))
    assert drops_unsampled_children(QuietRoots(ParentBased(ALWAYS_ON)))
    assert not drops_unsampled_children(ALWAYS_ON)
    assert not drops_unsampled_children(QuietRoots(ALWAYS_ON))
    assert not drops_unsampled_children(TraceIdRatioBased(0.1))
    assert not drops_unsampled_children(ParentBased(ALWAYS_ON, local_parent_not_sampled=ALWAYS_ON))
    assert not drops_unsampled_children(ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON))
    assert drops_unsampled_children(ParentBased(ALWAYS_OFF))
