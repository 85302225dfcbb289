"""Traces of runs: a client's ``traceparent`` continues through submission into one
``invoke_agent`` span per attempt, with an ``execute_tool`` child per tool call carrying the
guard's policy decision; a run resumed by another runtime stays in the same trace.

Real parts: Runtimes with workers on the embedded Postgres, the simulated provider, runs with an
empty workspace so the scripted tool calls run for real through the guard, and the SDK's
in-memory exporter (``tests.support.tracing``).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan

from quarterdeck.agents.claude_code.gate import GateServer
from quarterdeck.agents.guard import Guard
from quarterdeck.app import create_app
from quarterdeck.runs.models import RunStatus
from quarterdeck.runtime import Runtime
from quarterdeck.security.policy import PolicyGate
from quarterdeck.tracing import invoke_agent_span, set_record_content
from quarterdeck.tracing.propagation import received_trace
from tests.conftest import eventually
from tests.support.runs import running_run

if TYPE_CHECKING:
    from tests.support.tracing import Recorded

pytest_plugins = ["tests.support.tracing"]  # the ``spans`` fixture
pytestmark = pytest.mark.timeout(60)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
EMPTY_WORKSPACE = {"type": "empty"}
DECISIONS = {"allow", "flag", "deny", "require_approval", "approved", "rejected", "expired"}


@pytest.mark.parametrize(
    "header",
    [
        f"00-{'0' * 32}-{PARENT_ID}-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
        f"ff-{TRACE_ID}-{PARENT_ID}-01",  # version ff is invalid
        TRACEPARENT.upper(),  # W3C: lowercase hex only
        TRACEPARENT[:-1],  # a field too short
        f"{TRACEPARENT}-extra",  # version 00 has exactly four fields
        "not a traceparent",
    ],
)
def test_a_malformed_traceparent_is_ignored(header: str) -> None:
    assert received_trace({"traceparent": header}) is None


def test_a_well_formed_traceparent_is_kept_with_its_state() -> None:
    assert received_trace({"traceparent": TRACEPARENT, "tracestate": "qd=1"}) == {
        "traceparent": TRACEPARENT,
        "tracestate": "qd=1",
    }
    assert received_trace({"traceparent": TRACEPARENT, "tracestate": "x" * 600}) == {
        "traceparent": TRACEPARENT
    }
    assert received_trace({}) is None


@pytest.fixture
def runtime_with(make_settings: Any) -> Callable[..., Runtime]:
    def make(**overrides: Any) -> Runtime:
        base: dict[str, Any] = {
            "health_monitor_enabled": False,
            "maintenance_enabled": False,
            "simulated_turns": 2,
        }
        settings = make_settings(**{**base, **overrides})
        return Runtime(settings)

    return make


@pytest.fixture
async def rt(runtime_with: Callable[..., Runtime]) -> AsyncIterator[Runtime]:
    runtime = runtime_with()
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


def client_of(rt: Runtime) -> httpx.AsyncClient:
    app = create_app(rt.settings, rt)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://qd")


async def submit(client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> str:
    body = {"prompt": "fix the parser", "workspace": EMPTY_WORKSPACE}
    r = await client.post("/v1/runs", json=body, headers=headers or {})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


async def finished(rt: Runtime, spans: Recorded, run_id: str, attempts: int = 1) -> Any:
    """The run once terminal, and its ``invoke_agent`` spans once they ended (a span ends
    just after the run's final write, which is what wakes ``wait``)."""
    run = await rt.runs.wait(run_id, 30, None)
    assert run.status.terminal, run.status
    await eventually(lambda: len(agent_spans(spans, run_id)) == attempts, timeout=10)
    return run


def agent_spans(spans: Recorded, run_id: str) -> list[ReadableSpan]:
    found = [
        s
        for s in spans.named("invoke_agent ")
        if (s.attributes or {}).get("quarterdeck.run.id") == run_id
    ]
    return sorted(found, key=lambda s: s.start_time or 0)


def chain_top(spans: Recorded, span: ReadableSpan) -> ReadableSpan:
    """The highest recorded ancestor (Quarterdeck's own HTTP span, if those are on)."""
    by_id = {s.context.span_id: s for s in spans.finished() if s.context is not None}
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
    return span


def tool_spans(spans: Recorded, agent: ReadableSpan) -> list[ReadableSpan]:
    found = [s for s in spans.children_of(agent) if s.name.startswith("execute_tool ")]
    return sorted(found, key=lambda s: s.start_time or 0)


async def test_a_clients_trace_continues_into_the_runs_attempt_and_tool_calls(
    rt: Runtime, spans: Recorded
) -> None:
    async with client_of(rt) as client:
        quiet = await submit(client, {"traceparent": TRACEPARENT, "tracestate": "qd=1"})
        run = await finished(rt, spans, quiet)
        set_record_content(True)
        try:
            loud = await submit(client, {"traceparent": TRACEPARENT})
            await finished(rt, spans, loud)
        finally:
            set_record_content(False)

    assert run.params["trace"]["traceparent"].split("-")[1] == TRACE_ID
    for run_id, content in ((quiet, False), (loud, True)):
        [agent] = agent_spans(spans, run_id)
        assert agent.context is not None and agent.parent is not None
        assert f"{agent.context.trace_id:032x}" == TRACE_ID
        # Its parent is the client's span, or Quarterdeck's HTTP span under it when those are on.
        top = chain_top(spans, agent)
        assert top.parent is not None and f"{top.parent.span_id:016x}" == PARENT_ID
        attrs = dict(agent.attributes or {})
        assert attrs["gen_ai.operation.name"] == "invoke_agent"
        assert attrs["quarterdeck.run.attempt"] == 1
        assert attrs["quarterdeck.run.status"] == RunStatus.succeeded.value

        tools = tool_spans(spans, agent)
        events = [e.data for e in await rt.runs.events(run_id, None) if e.type == "tool_call"]
        assert tools and len(tools) == len(events)
        for span, event in zip(tools, events, strict=True):
            tattrs = dict(span.attributes or {})
            assert tattrs["gen_ai.tool.name"] == event["tool"]
            assert span.name == f"execute_tool {event['tool']}"
            # The guard's own decision, as the audit record of the same call has it.
            assert tattrs["quarterdeck.policy.decision"] == event["policy"]["action"]
            assert tattrs["quarterdeck.policy.decision"] in DECISIONS
            assert (span.status.status_code.name == "ERROR") == bool(event.get("is_error"))
            if content:
                # What the model sent; the event holds it validated (defaults filled in).
                sent = json.loads(str(tattrs["gen_ai.tool.call.arguments"]))
                assert sent and sent.items() <= event["input"].items()
                assert "gen_ai.tool.call.result" in tattrs
            else:
                assert "gen_ai.tool.call.arguments" not in tattrs
                assert "gen_ai.tool.call.result" not in tattrs


async def test_a_malformed_traceparent_is_ignored_and_the_run_is_a_root(
    rt: Runtime, spans: Recorded
) -> None:
    bad = f"00-{TRACE_ID}-{'0' * 16}-01"
    async with client_of(rt) as client:
        run_id = await submit(client, {"traceparent": bad})
        await finished(rt, spans, run_id)
    [agent] = agent_spans(spans, run_id)
    assert agent.context is not None
    assert f"{agent.context.trace_id:032x}" != TRACE_ID
    assert chain_top(spans, agent).parent is None  # a root (or under our own root HTTP span)


async def test_a_resumed_run_keeps_its_trace_across_runtimes(
    runtime_with: Callable[..., Runtime], spans: Recorded
) -> None:
    # The first runtime's calls are slow, so it is stopped mid-run; a short drain releases
    # the run, and the second runtime (no latency) resumes it from its checkpoint.
    first = runtime_with(simulated_latency="300ms", simulated_turns=3, drain_timeout=0.1)
    await first.start()
    try:
        async with client_of(first) as client:
            run_id = await submit(client, {"traceparent": TRACEPARENT})

        async def started_turn_two() -> bool:
            run = await first.runs.get(run_id, None)
            return run.status is RunStatus.running and run.turns >= 1

        await eventually(started_turn_two, timeout=15, interval=0.02)
    finally:
        await first.stop()
    second = runtime_with()
    await second.start()
    try:
        run = await finished(second, spans, run_id, attempts=2)
    finally:
        await second.stop()

    assert run.status is RunStatus.succeeded and run.attempts == 2
    one, two = agent_spans(spans, run_id)
    assert [dict(s.attributes or {})["quarterdeck.run.attempt"] for s in (one, two)] == [1, 2]
    assert dict(one.attributes or {})["quarterdeck.run.status"] == "released"
    assert dict(two.attributes or {})["quarterdeck.run.status"] == RunStatus.succeeded.value
    for span in (one, two):
        assert span.context is not None and f"{span.context.trace_id:032x}" == TRACE_ID
        top = chain_top(spans, span)
        assert top.parent is not None and f"{top.parent.span_id:016x}" == PARENT_ID


async def test_a_batch_keeps_the_clients_trace_on_every_run(rt: Runtime, spans: Recorded) -> None:
    bodies = [{"prompt": f"task {i}"} for i in range(3)]
    async with client_of(rt) as client:
        r = await client.post(
            "/v1/runs/batch", json={"runs": bodies}, headers={"traceparent": TRACEPARENT}
        )
        assert r.status_code == 202, r.text
        plain = await client.post("/v1/runs/batch", json={"runs": bodies[:1]})
    for accepted in r.json()["runs"]:
        run = await rt.runs.get(accepted["id"], None)
        assert run.params["trace"]["traceparent"] == TRACEPARENT or (
            # Quarterdeck's own HTTP span, when on, is the parent: same trace.
            run.params["trace"]["traceparent"].split("-")[1] == TRACE_ID
        )
    untraced = await rt.runs.get(plain.json()["runs"][0]["id"], None)
    if not spans.named("POST"):  # without Quarterdeck's HTTP spans, nothing to continue
        assert "trace" not in untraced.params


async def ask_gate(sock: Path, tool: str, tool_input: dict[str, Any], call_id: str) -> str:
    """One PreToolUse request over the gate's socket, as the hook sends it."""
    reader, writer = await asyncio.open_unix_connection(str(sock))
    request = {"tool_name": tool, "tool_input": tool_input, "tool_use_id": call_id, "cwd": "/"}
    writer.write(json.dumps(request).encode() + b"\n")
    writer.write_eof()
    reply = json.loads(await reader.readline())
    writer.close()
    return str(reply["hookSpecificOutput"]["permissionDecision"])


async def test_claude_codes_tool_calls_are_spans_of_the_attempt_at_its_gate(
    spans: Recorded,
) -> None:
    run = running_run("run-cc-trace")
    with tempfile.TemporaryDirectory(prefix="qd-tr-") as tmp:
        sock = Path(tmp) / "gate.sock"
        # The runner makes the gate inside the attempt's span (the worker opened it).
        with invoke_agent_span(
            "coder", run_id=run.id, tenant=run.tenant, provider="p", model="m", attempt=1
        ) as agent_span:
            gate = GateServer(Guard(PolicyGate.load()), run, Path(tmp), sock)
        async with gate:  # connections are served outside that span's context
            set_record_content(True)
            try:
                denied = await ask_gate(sock, "Bash", {"command": "rm -rf ~"}, "tu-1")
            finally:
                set_record_content(False)
            allowed = await ask_gate(sock, "Read", {"file_path": f"{tmp}/a.py"}, "tu-2")
            todo = await ask_gate(sock, "TodoWrite", {"todos": []}, "tu-3")  # not the rules'
    assert (denied, allowed, todo) == ("deny", "allow", "allow")
    [agent] = spans.named("invoke_agent ")
    assert agent.context is not None and agent_span.get_span_context().span_id == (
        agent.context.span_id
    )
    tools = sorted(spans.children_of(agent), key=lambda s: s.start_time or 0)
    assert [s.name for s in tools] == [
        "execute_tool Bash",
        "execute_tool Read",
        "execute_tool TodoWrite",
    ]
    first, second, third = (dict(s.attributes or {}) for s in tools)
    assert first["gen_ai.tool.call.id"] == "tu-1"
    assert first["quarterdeck.policy.decision"] == gate.decisions["tu-1"]["action"] == "deny"
    assert first["quarterdeck.policy.rule"] == gate.decisions["tu-1"]["rule_id"]
    assert first["error.type"] == "tool_refused"
    assert json.loads(str(first["gen_ai.tool.call.arguments"])) == {"command": "rm -rf ~"}
    assert second["quarterdeck.policy.decision"] == gate.decisions["tu-2"]["action"]
    assert "error.type" not in second and "gen_ai.tool.call.arguments" not in second
    assert third["quarterdeck.policy.decision"] == gate.decisions["tu-3"]["action"] == "allow"
    assert third["quarterdeck.policy.reason"] == gate.decisions["tu-3"]["reason"]
