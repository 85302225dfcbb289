"""OTLP export from a real ``quarterdeck up`` process to a local OTLP/HTTP receiver, and the
table of ``OTEL_*`` variables that turns tracing on or leaves it off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from quarterdeck import __version__
from quarterdeck.chaos.process import Process, free_port, http_ok
from quarterdeck.exceptions import ConfigError
from quarterdeck.tracing import record_content, set_record_content
from quarterdeck.tracing.setup import (
    configure_tracing,
    disabled_instrumentations,
    exporters_wanted,
    resource_attributes,
)
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


def _env(db_url: str, data_dir: Path, receiver: OtlpReceiver) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("QUARTERDECK_", "OTEL_")) and k not in ("POSTGRES_URL", "REDIS_URL")
    }
    env.update(
        {
            "QUARTERDECK_POSTGRES_URL": db_url,
            "QUARTERDECK_DATA_DIR": str(data_dir),
            "QUARTERDECK_HTTP_HOST": "127.0.0.1",
            "QUARTERDECK_HTTP_PORT": str(free_port()),
            "QUARTERDECK_METRICS_PORT": "0",
            "QUARTERDECK_WORKER_PROCESSES": "1",
            "QUARTERDECK_SIMULATED_LATENCY": "0",
            "QUARTERDECK_WORKER_DEQUEUE_TIMEOUT": "1s",
            "QUARTERDECK_DRAIN_TIMEOUT": "5s",
            "QUARTERDECK_LOG_LEVEL": "warning",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            # Long enough that nothing leaves before SIGTERM unless the stop flushes it.
            "OTEL_BSP_SCHEDULE_DELAY": "60000",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test,team=agents%20ops",
        }
    )
    return env


def _mentions_probe(span: ReceivedSpan) -> bool:
    values = [span.name, *(str(v) for v in span.attributes.values())]
    return any(v.endswith(("/health", "/ready")) or v.startswith("GET /health") for v in values)


def test_a_served_run_exports_http_database_and_genai_spans_flushed_on_sigterm(
    db_url: str, data_dir: Path
) -> None:
    with OtlpReceiver() as receiver:
        env = _env(db_url, data_dir, receiver)
        base = f"http://127.0.0.1:{env['QUARTERDECK_HTTP_PORT']}"
        binary = Path(sys.executable).parent / "quarterdeck"
        proc = Process([str(binary), "up"], env=env, log=data_dir / "up.log", stop_timeout=30)
        with proc:
            proc.wait_ready(http_ok(f"{base}/ready"), timeout=60)
            headers = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}
            with httpx.Client(base_url=base, timeout=30) as client:
                created = client.post("/v1/runs", json={"prompt": "trace me"}, headers=headers)
                assert created.status_code == 202, created.text
                run_id = created.json()["id"]
                done = client.get(f"/v1/runs/{run_id}/wait", params={"timeout": 30}).json()
                assert done["status"] == "succeeded", done
                for _ in range(3):
                    assert client.get("/health").status_code == 200
            assert receiver.spans() == [], "exported before the stop: the flush is untested"
            assert proc.stop() == 0, proc.log_tail()
        spans = receiver.spans()  # no waiting: the stop itself must have flushed them

    names = sorted({s.name for s in spans})
    submit = [s for s in spans if s.name == "POST /v1/runs" and s.kind == "SERVER"]
    assert len(submit) == 1, names
    assert submit[0].trace_id == CLIENT_TRACE, "the client's traceparent is the parent"
    assert submit[0].parent_span_id == CLIENT_SPAN
    assert submit[0].attributes.get("http.route") == "/v1/runs"

    queries = [s for s in spans if s.scope == "opentelemetry.instrumentation.asyncpg"]
    assert queries and all(s.kind == "CLIENT" for s in queries), names
    assert any(s.trace_id == CLIENT_TRACE for s in queries), "the submission's own SQL"
    assert all(s.parent_span_id for s in queries), "no trace of a lone background query"
    assert {s.attributes.get("db.system", s.attributes.get("db.system.name")) for s in queries} == {
        "postgresql"
    }

    assert not [s for s in spans if _mentions_probe(s)], "probes are not traced"

    resources = {json.dumps(s.resource, sort_keys=True) for s in spans}
    assert len(resources) == 1, "one process, one resource"
    resource = spans[0].resource
    assert resource["service.name"] == "quarterdeck"
    assert resource["service.version"] == __version__
    assert resource["quarterdeck.role"] == "api+worker"
    assert resource["deployment.environment.name"] == "test"
    assert resource["team"] == "agents ops"
    assert len(resource["service.instance.id"]) == 36

    # The run's own spans (runs/worker.py, resilience/calls.py) continue the client's trace.
    agent = [s for s in spans if s.name.startswith("invoke_agent")]
    assert len(agent) == 1, names
    assert agent[0].trace_id == CLIENT_TRACE
    assert agent[0].attributes["gen_ai.agent.id"] == run_id
    chats = [s for s in spans if s.name.startswith("chat ")]
    assert chats and all(s.kind == "CLIENT" for s in chats), names
    by_id = {s.span_id: s for s in spans}
    for chat in chats:
        assert chat.trace_id == CLIENT_TRACE
        parent = by_id.get(chat.parent_span_id)
        while parent is not None and parent is not agent[0]:
            parent = by_id.get(parent.parent_span_id)
        assert parent is agent[0], f"{chat.name} is not under {agent[0].name}"


# -- which variables turn tracing on ------------------------------------------------------------

ENDPOINT = "http://collector:4318"


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, ()),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ("otlp",)),
        ({"OTEL_TRACES_EXPORTER": " OTLP , console"}, ("otlp", "console")),
        ({"OTEL_TRACES_EXPORTER": "console"}, ("console",)),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, ()),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ENDPOINT + "/v1/traces"}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, ()),
        ({"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "otlp"}, ()),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, ()),  # off: the protocol is not looked at
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            },
            ("otlp",),
        ),
    ],
)
def test_which_variables_turn_export_on(environ: dict[str, str], wanted: tuple[str, ...]) -> None:
    assert exporters_wanted(environ) == wanted


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_TRACES_EXPORTER": "otlp,jaeger"}, "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT,
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json",
            },
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ),
    ],
)
def test_a_setting_tracing_cannot_serve_is_refused_by_name(
    environ: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        configure_tracing(
            service_name="quarterdeck",
            service_version="1",
            role="api",
            record_content=False,
            environ=environ,
        )
    assert [name for name, _ in caught.value.errors] == [variable]
    assert variable in str(caught.value)


def test_instrumentations_are_disabled_by_opentelemetry_pythons_own_variable() -> None:
    named = {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": " AsyncPG ,fastapi,"}
    assert disabled_instrumentations(named) == {"asyncpg", "fastapi"}
    assert disabled_instrumentations({}) == frozenset()


def test_off_installs_nothing_and_still_sets_the_content_switch() -> None:
    try:
        handle = configure_tracing(
            service_name="quarterdeck",
            service_version="1",
            role="worker",
            record_content=True,
            environ={"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"},
        )
        assert handle is None
        assert record_content() is True
    finally:
        set_record_content(False)


def test_resource_attributes_layer_ours_then_the_variables() -> None:
    attrs = resource_attributes(
        {
            "OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs,k8s.pod.name=qd-0,bad,quarterdeck.role=x",
            "OTEL_SERVICE_NAME": "from-name",
        },
        service_name="quarterdeck",
        service_version="9.9",
        role="worker",
    )
    assert attrs["service.name"] == "from-name"
    assert attrs["k8s.pod.name"] == "qd-0"
    assert attrs["service.version"] == "9.9"
    assert attrs["quarterdeck.role"] == "worker"
    assert "bad" not in attrs
    plain = resource_attributes({}, service_name="quarterdeck", service_version="1", role="api")
    assert plain["service.name"] == "quarterdeck"
    other = resource_attributes({}, service_name="quarterdeck", service_version="1", role="api")
    assert plain["service.instance.id"] != other["service.instance.id"]


SCRIPT = """
import json, os
from opentelemetry import trace
from quarterdeck.tracing import tracer
from quarterdeck.tracing.setup import configure_tracing, instrument_asyncpg
import asyncpg
before = asyncpg.connection.Connection.fetch
kw = dict(service_name="quarterdeck", service_version="1", role="api", record_content=False)
first = configure_tracing(**kw)
second = configure_tracing(**kw)
instrument_asyncpg({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "asyncpg"})
skipped = asyncpg.connection.Connection.fetch is before
instrument_asyncpg(); instrument_asyncpg()
with tracer().start_as_current_span("one") as span:
    recording = span.is_recording()
print(json.dumps({
    "same": first is second and first is not None,
    "global": trace.get_tracer_provider() is first.provider,
    "exporters": list(first.exporters),
    "sampler": first.provider.sampler.get_description(),
    "recording": recording,
    "skipped": skipped,
    "patched": asyncpg.connection.Connection.fetch is not before,
    "flushed": first.shutdown(2.0),
}))
"""


def test_a_second_configure_in_one_process_reuses_the_first() -> None:
    """In a child process: the provider is global, and this test process keeps its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update({"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "always_on"})
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {
        "same": True,
        "global": True,
        "exporters": ["console"],
        "sampler": "QuietRoots{AlwaysOnSampler}",
        "recording": True,
        "skipped": True,
        "patched": True,
        "flushed": True,
    }
