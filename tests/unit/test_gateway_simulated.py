"""The simulated upstream speaks the Messages API faithfully: its SSE stream meters exactly like
its JSON (through the real StreamMeter), events come in the API's order, and a client without
the script's tools gets an answer instead of tool calls it cannot run."""

from __future__ import annotations

import json
from typing import Any

from quarterdeck.gateway.meter import StreamMeter, meter_json
from quarterdeck.gateway.simulated import SCRIPT_TOOLS, SimulatedUpstream
from quarterdeck.gateway.upstream import UpstreamReply


def body(**extra: Any) -> bytes:
    payload = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1000,
        "messages": [{"role": "user", "content": "fix the off-by-one in src/pager.py"}],
        **extra,
    }
    return json.dumps(payload).encode()


async def send(raw: bytes, path: str = "/v1/messages", method: str = "POST") -> UpstreamReply:
    return await SimulatedUpstream().send(method, path, [], raw, tenant="t")


async def test_json_and_sse_carry_the_same_message_and_usage() -> None:
    plain = await send(body())
    assert plain.status == 200 and plain.header("content-type") == "application/json"
    message = json.loads(await plain.read())
    streamed = await send(body(stream=True))
    assert streamed.header("content-type") == "text/event-stream"
    meter = StreamMeter()
    names = []
    async for chunk in streamed.body:
        meter.feed(chunk)
        names.append(chunk.split(b"\n", 1)[0].removeprefix(b"event: ").decode())
    streamed_usage = meter.result()
    assert meter.result().finished
    assert streamed_usage.usage == meter_json(json.dumps(message).encode()).usage
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert "ping" in names and "content_block_delta" in names
    assert message["model"] == "claude-sonnet-4-5"  # what was asked, as the API echoes it
    # No cache_control in the request: nothing is cached, as with the real API.
    assert message["usage"]["cache_creation"]["ephemeral_5m_input_tokens"] == 0
    assert message["usage"]["cache_read_input_tokens"] == 0
    system = [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}]
    cached = json.loads(await (await send(body(system=system))).read())
    assert cached["usage"]["cache_creation"]["ephemeral_5m_input_tokens"] > 0  # first turn


async def test_deterministic_per_conversation() -> None:
    first = json.loads(await (await send(body())).read())
    again = json.loads(await (await send(body())).read())
    assert first["content"] == again["content"] and first["usage"] == again["usage"]


async def test_clients_without_the_script_tools_get_a_final_answer() -> None:
    message = json.loads(await (await send(body())).read())
    assert message["stop_reason"] == "end_turn"
    assert [b["type"] for b in message["content"]] == ["text"]
    assert "pager" in message["content"][0]["text"]


async def test_agents_with_the_script_tools_get_tool_calls() -> None:
    tools = [{"name": n, "input_schema": {"type": "object"}} for n in sorted(SCRIPT_TOOLS)]
    message = json.loads(await (await send(body(tools=tools))).read())
    assert message["stop_reason"] == "tool_use"
    assert any(b["type"] == "tool_use" and b["name"] in SCRIPT_TOOLS for b in message["content"])
    streamed = await send(body(tools=tools, stream=True))
    meter = StreamMeter()
    async for chunk in streamed.body:
        meter.feed(chunk)
    uses = meter.result().tool_uses
    assert [u.name for u in uses] == [b["name"] for b in message["content"][1:]]
    assert [u.input for u in uses] == [b["input"] for b in message["content"][1:]]


async def test_thinking_block_when_thinking_is_on() -> None:
    raw = body(thinking={"type": "adaptive"})
    message = json.loads(await (await send(raw)).read())
    assert message["content"][0]["type"] == "thinking" and message["content"][0]["signature"]


async def test_count_tokens_models_and_errors() -> None:
    counted = json.loads(await (await send(body(), "/v1/messages/count_tokens")).read())
    assert counted["input_tokens"] >= 1
    models = json.loads(await (await send(b"", "/v1/models?limit=1000", "GET")).read())
    assert [m["id"] for m in models["data"]] == [
        "simulated-opus",
        "simulated-sonnet",
        "simulated-haiku",
    ]
    bad = await send(b"{nope")
    assert bad.status == 400
    assert json.loads(await bad.read())["error"]["type"] == "invalid_request_error"
    missing = await send(b"", "/v1/other")
    assert missing.status == 404


async def _count(payload: Any) -> tuple[int, dict[str, Any]]:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    reply = await send(raw, "/v1/messages/count_tokens")
    return reply.status, json.loads(await reply.read())


async def test_count_tokens_refuses_what_the_api_refuses_in_its_envelope() -> None:
    user = [{"role": "user", "content": "hi"}]
    cases: list[tuple[Any, str]] = [
        (b"{junk", "not valid JSON"),
        ([1, 2], "JSON object"),
        ({}, "model: Field required"),
        ({"messages": user}, "model: Field required"),
        ({"model": "", "messages": user}, "model:"),
        ({"model": "m"}, "messages: Field required"),
        ({"model": "m", "messages": "hi"}, "messages:"),
        ({"model": "m", "messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        ({"model": "m", "messages": [{"role": "user"}]}, "messages.0.content"),
        ({"model": "m", "messages": [{"role": "user", "content": [{}]}]}, "messages.0.content"),
        ({"model": "m", "messages": user, "tools": {}}, "tools:"),
    ]
    for payload, wording in cases:
        status, answer = await _count(payload)
        assert status == 400, payload
        assert answer["type"] == "error" and answer["request_id"].startswith("req_")
        assert answer["error"]["type"] == "invalid_request_error"
        assert wording in answer["error"]["message"], (payload, answer)
    # /v1/messages says the same
    bad = await send(json.dumps({"messages": user}).encode())
    assert bad.status == 400 and "model: Field required" in (await bad.read()).decode()


async def test_count_tokens_is_deterministic_and_grows_with_the_content() -> None:
    def payload(text: str, **extra: Any) -> dict[str, Any]:
        return {"model": "m", "messages": [{"role": "user", "content": text}], **extra}

    status, first = await _count(payload("x" * 400))
    assert status == 200 and set(first) == {"input_tokens"}
    assert first == (await _count(payload("x" * 400)))[1]  # the same body, the same count
    # 400 characters at 4 a token, plus 4 for the request and 4 for its one message
    assert first["input_tokens"] == 100 + 8
    assert (await _count(payload("x" * 800)))[1]["input_tokens"] == 200 + 8
    with_system = (await _count(payload("x" * 400, system="y" * 40)))[1]["input_tokens"]
    assert with_system == first["input_tokens"] + 10
    tools = [{"name": "read_file", "input_schema": {"type": "object"}}]
    assert (await _count(payload("x" * 400, tools=tools)))[1]["input_tokens"] > first[
        "input_tokens"
    ]
    blocks = [{"type": "text", "text": "x" * 400, "cache_control": {"type": "ephemeral"}}]
    as_blocks = (await _count({"model": "m", "messages": [{"role": "user", "content": blocks}]}))[1]
    assert as_blocks == first  # a text block counts its text, not its JSON
    turn = [
        {"role": "user", "content": "x" * 400},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t", "name": "n", "input": {}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]},
    ]
    longer = (await _count({"model": "m", "messages": turn}))[1]["input_tokens"]
    assert longer > first["input_tokens"] + 8
