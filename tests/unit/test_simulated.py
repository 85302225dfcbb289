"""The simulated provider must be deterministic per (run, turn), look like a coding session, and
inject errors that a retry can get past. Functional checks only: no timing assertions."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from quarterdeck.exceptions import ProviderError
from quarterdeck.kit.latency import LatencyProfile, parse_latency
from quarterdeck.kit.prompt_cache import TURN_TOKENS
from quarterdeck.providers import simulated
from quarterdeck.providers.simulated import SimulatedProvider, script_length
from quarterdeck.providers.types import (
    Message,
    ModelRequest,
    ModelResponse,
    Provider,
    TextBlock,
    ToolResultBlock,
    Usage,
)

PROMPT = "Fix the flaky retry logic in the scheduler when jobs time out"
TOOLS = {"list_files", "read_file", "search", "edit_file", "write_file", "run_command"}
REQUIRED_ARGS = {
    "list_files": {"path"},
    "read_file": {"path"},
    "search": {"pattern", "path"},
    "edit_file": {"path", "old", "new"},
    "write_file": {"path", "content"},
    "run_command": {"command"},
}


def make(**kwargs: object) -> SimulatedProvider:
    kwargs.setdefault("latency", parse_latency(0))
    return SimulatedProvider(**kwargs)  # type: ignore[arg-type]


def request(
    run_id: str | None = "run_1",
    turn: int | None = None,
    model: str = "simulated-sonnet",
    **meta: str,
) -> ModelRequest:
    metadata = dict(meta)
    if run_id is not None:
        metadata["run_id"] = run_id
    if turn is not None:
        metadata["turn"] = str(turn)
    return ModelRequest(
        model=model, messages=[Message("user", [TextBlock(PROMPT)])], metadata=metadata
    )


async def drive(provider: SimulatedProvider, run_id: str, limit: int = 50) -> list[ModelResponse]:
    """Run the agent loop: feed tool results back until the model stops asking for tools."""
    messages = [Message("user", [TextBlock(PROMPT)])]
    responses: list[ModelResponse] = []
    for _ in range(limit):
        req = ModelRequest(model="simulated-sonnet", messages=messages, metadata={"run_id": run_id})
        response = await provider.complete(req)
        responses.append(response)
        messages.append(response.message)
        if response.stop_reason == "end_turn":
            return responses
        results = [ToolResultBlock(t.id, "ok") for t in response.message.tool_uses]
        messages.append(Message("user", list(results)))
    raise AssertionError("script never ended")


def test_implements_provider_protocol() -> None:
    provider = make()
    assert isinstance(provider, Provider)
    assert provider.name == "simulated"


async def test_same_run_and_turn_is_identical_across_instances() -> None:
    for turn in range(4):
        a = await make().complete(request("run_x", turn))
        b = await make().complete(request("run_x", turn))
        assert a == b
        assert a.id.startswith("msg_sim_") and a.request_id and a.request_id.startswith("req_sim_")


async def test_different_runs_differ() -> None:
    provider = make()
    responses = [await provider.complete(request(f"run_{i}", 0)) for i in range(20)]
    assert len({r.id for r in responses}) == 20
    assert (
        len({(r.usage.output_tokens, r.usage.cache_creation_input_tokens) for r in responses}) > 1
    )


async def test_turn_is_derived_from_assistant_messages() -> None:
    provider = make(turns=3)
    explicit = [await provider.complete(request("run_d", t)) for t in range(3)]
    driven = await drive(make(turns=3), "run_d")
    assert [r.usage for r in driven] == [r.usage for r in explicit]
    assert [r.id for r in driven] == [r.id for r in explicit]


async def test_run_id_falls_back_to_prompt_hash() -> None:
    a = await make().complete(request(None))
    b = await make().complete(request(None))
    assert a == b


@pytest.mark.parametrize("run_id", [f"run_{i}" for i in range(12)])
async def test_script_is_a_plausible_session_ending_in_end_turn(run_id: str) -> None:
    responses = await drive(make(), run_id)
    assert len(responses) == script_length(run_id)
    assert [r.stop_reason for r in responses[:-1]] == ["tool_use"] * (len(responses) - 1)
    assert responses[-1].stop_reason == "end_turn"
    assert not responses[-1].message.tool_uses and responses[-1].message.text
    ids: list[str] = []
    for response in responses[:-1]:
        uses = response.message.tool_uses
        assert 1 <= len(uses) <= 2
        assert response.message.text  # a short piece of "reasoning"
        for use in uses:
            assert use.name in TOOLS
            assert REQUIRED_ARGS[use.name] <= set(use.input)
            assert use.id.startswith("toolu_sim_")
            ids.append(use.id)
    assert len(ids) == len(set(ids))
    names = [u.name for r in responses for u in r.message.tool_uses]
    assert "edit_file" in names and {"command": "pytest -q"} in [
        u.input for r in responses for u in r.message.tool_uses
    ]
    assert "scheduler" in responses[-1].message.text


def test_script_length_range_and_override() -> None:
    lengths = Counter(script_length(f"run_{i}") for i in range(500))
    assert set(lengths) == {2, 3, 4, 5, 6}
    assert script_length("run_1", turns=9) == 9
    assert script_length("run_1") == script_length("run_1")


@pytest.mark.parametrize("turns", [1, 2, 5, 8])
async def test_turns_setting_is_honoured(turns: int) -> None:
    responses = await drive(make(turns=turns), "run_t")
    assert len(responses) == turns


async def test_usage_is_realistic_with_prompt_caching() -> None:
    provider = make(turns=6)
    cached = []
    for t in range(6):
        req = request("run_u", t)
        req.cache_ttl = "5m"
        cached.append((await provider.complete(req)).usage)
    first = cached[0]
    assert first.cache_creation_input_tokens > 0
    assert first.cache_creation_5m_tokens == first.cache_creation_input_tokens
    assert first.cache_read_input_tokens == 0
    assert 1500 <= first.input_tokens + first.cache_creation_input_tokens <= 3000
    contexts = []
    for before, usage in itertools.pairwise(cached):
        prompt = usage.input_tokens + usage.cache_read_input_tokens
        prompt += usage.cache_creation_input_tokens
        # Each turn reads the whole prompt of the turn before and writes only what is new.
        assert usage.cache_read_input_tokens == (
            before.cache_read_input_tokens + before.cache_creation_input_tokens
        )
        assert usage.input_tokens == TURN_TOKENS
        assert 300 <= usage.cache_creation_input_tokens <= 2000
        assert usage.cache_read_input_tokens >= 0.5 * prompt
        contexts.append(prompt)
    assert contexts == sorted(contexts)
    assert all(50 <= u.output_tokens <= 800 for u in cached)


async def test_no_cache_reads_without_breakpoints() -> None:
    """The issue's dishonesty: reads reported for requests that never asked for caching."""
    provider = make(turns=6)
    for t in range(6):
        usage = (await provider.complete(request("run_u", t))).usage
        assert usage.cache_read_input_tokens == usage.cache_creation_input_tokens == 0
        assert usage.input_tokens >= 1500


async def test_prefixes_below_the_models_minimum_are_not_cached() -> None:
    """Haiku 4.5 caches nothing below 4096 tokens: the early, short turns pay full input."""
    provider = make(turns=6)
    usages = []
    for t in range(6):
        req = request("run_h", t, model="claude-haiku-4-5")
        req.cache_ttl = "1h"
        usages.append((await provider.complete(req)).usage)
    assert usages[0].cache_creation_input_tokens == 0 and usages[0].input_tokens < 4096
    later = [u for u in usages if u.cache_read_input_tokens]
    assert later and all(u.cache_creation_5m_tokens == 0 for u in usages)
    assert any(u.cache_creation_1h_tokens for u in usages)


async def test_resumed_run_bills_the_same_tokens() -> None:
    whole = await drive(make(), "run_resume")
    total = sum((r.usage for r in whole), Usage())
    # A crash after turn 1: a fresh provider replays from the checkpointed conversation.
    replay = [await make().complete(request("run_resume", t)) for t in range(len(whole))]
    assert sum((r.usage for r in replay), Usage()) == total
    assert [r.message for r in replay] == [r.message for r in whole]


@pytest.mark.parametrize(
    ("model", "expected"),
    [("simulated-sonnet", "simulated-sonnet"), ("claude-sonnet-4", "simulated-claude-sonnet-4")],
)
async def test_model_is_labelled_simulated(model: str, expected: str) -> None:
    response = await make().complete(request(model=model))
    assert response.model == expected


async def test_latency_profile_is_honoured() -> None:
    assert (await make().complete(request())).latency_s == 0
    slow = make(latency=parse_latency("20ms"))
    assert (await slow.complete(request())).latency_s >= 0.02
    lognormal = LatencyProfile("lognormal", 0.001, 0.5)
    a = await make(latency=lognormal).complete(request())
    b = await make(latency=lognormal).complete(request())
    assert a.latency_s == b.latency_s > 0


@pytest.mark.parametrize(
    ("kind", "status", "error_type"),
    [
        ("429", 429, "rate_limit_error"),
        ("529", 529, "overloaded_error"),
        ("500", 500, "api_error"),
        ("timeout", None, "timeout"),
    ],
)
async def test_error_injection_fields(kind: str, status: int | None, error_type: str) -> None:
    provider = make(error_rate=1.0, error_mix={kind: 1.0}, timeout_s=0.001)
    with pytest.raises(ProviderError) as info:
        await provider.complete(request("run_e", 0))
    err = info.value
    assert err.status_code == status
    assert err.error_type == error_type
    assert err.retryable
    assert err.request_id and err.request_id.startswith("req_sim_")
    if kind == "429":
        assert err.retry_after is not None and 1 <= err.retry_after <= 5
    assert err.overloaded == (kind == "529")


async def test_default_mix_produces_every_kind() -> None:
    provider = make(error_rate=1.0, timeout_s=0.001)
    kinds: Counter[str] = Counter()
    for i in range(200):
        with pytest.raises(ProviderError) as info:
            await provider.complete(request(f"run_{i}", 0))
        kinds[info.value.error_type] += 1
    assert set(kinds) == {"rate_limit_error", "overloaded_error", "api_error", "timeout"}


async def test_retry_of_the_same_turn_eventually_succeeds() -> None:
    clean = make()
    for i in range(20):
        provider = make(error_rate=0.5, timeout_s=0.001)
        req = request(f"run_r{i}", 1)
        for _ in range(60):
            try:
                response = await provider.complete(req)
                break
            except ProviderError:
                continue
        else:
            raise AssertionError("retries never succeeded")
        assert response == await clean.complete(req)  # failures never change the content


async def test_error_sequence_is_deterministic() -> None:
    async def outcomes() -> list[str]:
        provider = make(error_rate=0.5, timeout_s=0.001)
        seen = []
        for _ in range(30):
            try:
                seen.append((await provider.complete(request("run_seq", 2))).id)
            except ProviderError as err:
                seen.append(err.error_type)
        return seen

    first = await outcomes()
    assert first == await outcomes()
    assert len(set(first)) > 1


async def test_attempt_metadata_changes_the_draw() -> None:
    provider = make(error_rate=0.5, timeout_s=0.001)
    results = set()
    for attempt in range(40):
        try:
            await provider.complete(request(f"run_a{attempt}", 0, attempt=str(attempt)))
            results.add("ok")
        except ProviderError:
            results.add("error")
    assert results == {"ok", "error"}


async def test_call_counter_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(simulated, "_MAX_COUNTER_KEYS", 16)
    provider = make(error_rate=0.01)
    for i in range(100):
        try:
            await provider.complete(request(f"run_{i}", 0))
        except ProviderError:
            pass
    assert len(provider._calls) <= 16


async def test_stream_yields_text_then_message() -> None:
    provider = make(latency=parse_latency("5ms"))
    events = [event async for event in provider.stream(request("run_s", 0))]
    assert len(events) >= 2
    assert all(e.type == "text" and e.text for e in events[:-1])
    final = events[-1]
    assert final.type == "message" and final.response is not None
    assert "".join(e.text for e in events[:-1]) == final.response.message.text
    assert final.response.ttft_s is not None and final.response.ttft_s >= 0.005
    assert final.response.message == (await make().complete(request("run_s", 0))).message


async def test_stream_raises_injected_errors_before_any_event() -> None:
    provider = make(error_rate=1.0, error_mix={"529": 1})
    events = []
    with pytest.raises(ProviderError):
        async for event in provider.stream(request()):
            events.append(event)
    assert events == []


@pytest.mark.parametrize(
    "kwargs",
    [{"error_rate": 1.5}, {"turns": -1}, {"error_mix": {"418": 1.0}}, {"error_mix": {"429": -1}}],
)
def test_invalid_settings_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        make(**kwargs)


async def test_aclose() -> None:
    provider = make(error_rate=0.5)
    try:
        await provider.complete(request())
    except ProviderError:
        pass
    await provider.aclose()
    assert not provider._calls
