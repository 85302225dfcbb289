"""StreamMeter and meter_json: exact usage from Anthropic's stream, whatever the chunking."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from typing import Any

import pytest

from quarterdeck.chaos.messages_api import (
    make_usage,
    message,
    message_events,
    text,
    thinking,
    tool_use,
)
from quarterdeck.gateway.meter import Metered, StreamMeter, meter_json
from quarterdeck.gateway.prices import GatewayPrices
from quarterdeck.providers.pricing import PriceTable
from quarterdeck.providers.types import Usage

Event = tuple[str | None, Any]


def wire(events: list[Event], newline: str = "\n") -> bytes:
    """Events as the API writes them (the stand-in's encoder: ``event:`` line, ``data:`` JSON)."""
    out = []
    for name, data in events:
        head = f"event: {name}{newline}" if name else ""
        out.append(f"{head}data: {json.dumps(data)}{newline}{newline}")
    return "".join(out).encode()


def meter(*chunks: bytes) -> Metered:
    m = StreamMeter()
    for chunk in chunks:
        m.feed(chunk)
    return m.result()


def recorded() -> bytes:
    """A stream with everything the meter reads: cache split, thinking, non-ASCII and escaped
    text, a tool call, a ping, cumulative usage in message_delta."""
    body = message(
        thinking("Let me think ✓ about it"),
        text('Héllo "wörld"\nline two 🙂'),
        tool_use("write_file", {"path": "a.py", "content": "print('hi')\n"}, id="toolu_1"),
        usage=make_usage(
            input_tokens=12, output_tokens=345, cache_read=2000, cache_5m=30, cache_1h=100
        ),
        model="claude-opus-4-5-20251101",
    ).body
    return wire(message_events(body, chunk=3))


def snapshot(m: Metered) -> tuple[object, ...]:
    return (
        m.usage,
        m.web_search_requests,
        m.model,
        m.message_id,
        m.stop_reason,
        [(t.id, t.name, t.input) for t in m.tool_uses],
        m.error_type,
        m.started,
        m.finished,
        m.text_chars,
    )


def test_a_recorded_stream_is_metered_exactly():
    m = meter(recorded())
    assert m.usage == Usage(
        input_tokens=12,
        output_tokens=345,
        cache_creation_input_tokens=130,
        cache_creation_5m_tokens=30,
        cache_creation_1h_tokens=100,
        cache_read_input_tokens=2000,
    )
    assert m.model == "claude-opus-4-5-20251101"
    assert m.message_id is not None and m.message_id.startswith("msg_")
    assert m.stop_reason == "tool_use"
    assert [(t.id, t.name, t.input) for t in m.tool_uses] == [
        ("toolu_1", "write_file", {"path": "a.py", "content": "print('hi')\n"})
    ]
    assert m.started and m.finished and m.error_type is None
    tool_json = json.dumps({"path": "a.py", "content": "print('hi')\n"})
    assert m.text_chars == len("Let me think ✓ about it") + len('Héllo "wörld"\nline two 🙂') + len(
        tool_json
    )


def test_every_split_point_gives_the_same_result():
    stream = recorded()
    whole = snapshot(meter(stream))
    for i in range(len(stream) + 1):  # mid-line, mid-UTF-8, between \n and \n
        assert snapshot(meter(stream[:i], stream[i:])) == whole, i


def test_random_three_way_and_byte_by_byte_splits_give_the_same_result():
    stream = recorded()
    whole = snapshot(meter(stream))
    rng = random.Random(13)
    for _ in range(300):
        a, b = sorted(rng.sample(range(len(stream) + 1), 2))
        assert snapshot(meter(stream[:a], stream[a:b], stream[b:])) == whole
    assert snapshot(meter(*(stream[i : i + 1] for i in range(len(stream))))) == whole


def test_crlf_streams_split_anywhere_give_the_same_result():
    body = message(text("hi there"), usage=make_usage(5, 9)).body
    lf = snapshot(meter(wire(message_events(body))))
    crlf = wire(message_events(body), newline="\r\n")
    for i in range(len(crlf) + 1):  # including between \r and \n
        assert snapshot(meter(crlf[:i], crlf[i:])) == lf, i
    cr = wire(message_events(body), newline="\r")
    assert snapshot(meter(cr)) == lf


def test_comments_multiple_data_lines_and_data_only_events():
    stream = (
        b": keep-alive comment\n\n"
        b"event: message_start\n"
        b'data: {"type": "message_start",\n'
        b'data:  "message": {"id": "m1", "usage": {"input_tokens": 7}}}\n\n'
        b'data: {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 4}}\n\n'
        b"id: 3\nretry: 100\nevent: message_stop\ndata: {}\n\n"
    )
    m = meter(stream)
    assert m.usage.input_tokens == 7 and m.usage.output_tokens == 4
    assert m.message_id == "m1" and m.finished


def test_message_delta_usage_overwrites_and_never_adds():
    events: list[Event] = [
        ("message_start", {"type": "message_start", "message": {"usage": make_usage(2679, 1)}}),
        ("message_delta", {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 40}}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {
                    "input_tokens": 10682,
                    "output_tokens": 510,
                    "cache_read_input_tokens": None,  # null: keep what message_start said
                    "server_tool_use": {"web_search_requests": 1},
                },
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    m = meter(wire(events))
    assert m.usage.input_tokens == 10682  # not 2679, not 2679 + 10682
    assert m.usage.output_tokens == 510  # not 1 + 40 + 510
    assert m.usage.cache_read_input_tokens == 0
    assert m.web_search_requests == 1
    assert m.stop_reason == "end_turn" and m.finished


def test_web_search_is_priced_on_top_of_tokens():
    prices = GatewayPrices(PriceTable.load())
    events: list[Event] = [
        ("message_start", {"type": "message_start", "message": {"usage": make_usage(100, 1)}}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {},
                "usage": {"output_tokens": 10, "server_tool_use": {"web_search_requests": 3}},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    m = meter(wire(events))
    cost, estimated = prices.cost("claude-sonnet-4-5", m)
    # 100 x $3/MTok + 10 x $15/MTok + 3 x $0.01
    assert cost == Decimal("0.0003") + Decimal("0.00015") + Decimal("0.03")
    assert not estimated


def test_the_research_cross_check_example_costs_0_002225():
    body = message(
        text("done"),
        usage=make_usage(input_tokens=10, output_tokens=7, cache_read=2000, cache_1h=100),
        model="claude-opus-4-8",
    ).body
    m = meter(wire(message_events(body)))
    assert m.usage.cache_creation_1h_tokens == 100 and m.usage.cache_creation_5m_tokens == 0
    table = PriceTable.load({"claude-opus-4-8": {"input": "5", "output": "25"}})
    cost, estimated = GatewayPrices(table).cost("claude-opus-4-8", m)
    assert cost == Decimal("0.002225") and not estimated
    # The same body, not streamed, meters the same.
    assert meter_json(json.dumps(body).encode()).usage == m.usage


def test_an_aborted_stream_keeps_input_and_counts_relayed_text():
    body = message(text("x" * 400), usage=make_usage(input_tokens=50, output_tokens=100)).body
    stream = wire(message_events(body, chunk=10))
    cut = stream[: stream.index(b"event: message_delta")]
    cut = cut[: len(cut) - 30]  # and mid-event
    m = meter(cut)
    assert m.started and not m.finished
    assert m.usage.input_tokens == 50
    assert m.usage.output_tokens == 1  # message_start's placeholder
    assert 390 <= m.text_chars <= 400
    cost, estimated = GatewayPrices(PriceTable.load()).cost("claude-sonnet-4-5", m)
    assert estimated
    floor = -(-m.text_chars // 4)
    assert cost == (50 * Decimal(3) + floor * Decimal(15)) / 1_000_000


def test_an_error_event_after_200_is_reported():
    body = message(text("partial answer"), usage=make_usage(20, 8)).body
    events = message_events(body)[:4]
    events.append(
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    )
    m = meter(wire(events))
    assert m.error_type == "overloaded_error"
    assert m.started and not m.finished and m.usage.input_tokens == 20


@pytest.mark.parametrize(
    "stream",
    [
        b"event: message_start\ndata: {not json\n\n",
        b"event: message_start\ndata: []\n\n",
        b'event: message_start\ndata: {"message": 5}\n\n',
        b'event: message_delta\ndata: {"usage": {"output_tokens": "many"}}\n\n',
        b'event: message_delta\ndata: {"usage": {"output_tokens": -3, "input_tokens": true}}\n\n',
        b'event: content_block_start\ndata: {"content_block": {"type": "tool_use"}}\n\n',
        b"event: content_block_delta\ndata: \xff\xfe\n\n",
        b'event: content_block_delta\ndata: {"delta": {"text": 5}}\n\n',
        b'event: content_block_stop\ndata: {"index": "x"}\n\n',
        b"event: error\ndata: null\n\n",
        b'data: {"type": 3}\n\n',
        b"data: \n\n",
        b"\n\n\n\n\n",
        b"event: future_event_type\ndata: {}\n\n",
        bytes(range(256)) * 4,
    ],
)
def test_malformed_data_never_raises(stream: bytes):
    m = meter(stream, b"\n\nevent: message_stop\ndata: {}\n\n")
    assert m.finished
    assert m.usage.output_tokens == 0 and m.usage.input_tokens == 0


def test_a_malformed_event_does_not_lose_the_events_around_it():
    good = wire(message_events(message(text("ok"), usage=make_usage(3, 4)).body))
    m = meter(b"event: message_delta\ndata: {broken\n\n" + good)
    assert m.usage == Usage(input_tokens=3, output_tokens=4) and m.finished


def test_a_tool_input_that_is_not_json_is_kept_raw():
    events: list[Event] = [
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "tool_use", "id": "t1", "name": "bash", "input": {}},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": '{"cmd": "ls'},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ]
    m = meter(wire(events))
    assert [(t.name, t.input) for t in m.tool_uses] == [("bash", {"_raw": '{"cmd": "ls'})]


def test_a_tool_use_without_deltas_keeps_its_start_input():
    events: list[Event] = [
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 2,
                "content_block": {"type": "tool_use", "id": "t", "name": "n", "input": {"a": 1}},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 2}),
    ]
    assert meter(wire(events)).tool_uses[0].input == {"a": 1}


def test_server_tool_use_blocks_are_not_client_tool_calls():
    events: list[Event] = [
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "server_tool_use", "id": "s", "name": "web_search"},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ]
    assert meter(wire(events)).tool_uses == []


def test_an_endless_event_is_dropped_not_buffered():
    from quarterdeck.gateway import meter as meter_module

    m = StreamMeter()
    m.feed(b"event: content_block_delta\ndata: ")
    for _ in range(meter_module.MAX_EVENT_BYTES // (1 << 20) + 1):
        m.feed(b"x" * (1 << 20))
    assert sum(len(p) for p in m._pending) == 0
    m.feed(b"x" * (1 << 20))
    assert sum(len(p) for p in m._pending) == 0
    m.feed(b"\n\nevent: message_stop\ndata: {}\n\n")  # the oversized event's end is skipped
    assert m.result().finished


def test_meter_json_reads_usage_tools_and_text():
    body = message(
        thinking("hmm"),
        text("héllo"),
        tool_use("read", {"p": 1}, id="tu"),
        usage={
            **make_usage(10, 20, cache_read=5, cache_5m=6, cache_1h=7),
            "server_tool_use": {"web_search_requests": 2},
        },
    ).body
    m = meter_json(json.dumps(body).encode())
    assert m.usage == Usage(10, 20, 13, 6, 7, 5)
    assert m.web_search_requests == 2
    assert [(t.id, t.name, t.input) for t in m.tool_uses] == [("tu", "read", {"p": 1})]
    assert m.text_chars == 3 + 5
    assert m.finished and m.stop_reason == "tool_use" and m.model == body["model"]


@pytest.mark.parametrize(
    "body", [b"", b"not json", b"[1, 2]", b'{"content": 5, "usage": 3}', b'{"type": "message"}']
)
def test_meter_json_never_raises(body: bytes):
    m = meter_json(body)
    assert m.usage == Usage() and not m.finished


def test_meter_json_reads_an_error_body():
    body = {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}
    m = meter_json(json.dumps(body).encode())
    assert m.error_type == "invalid_request_error" and not m.finished
