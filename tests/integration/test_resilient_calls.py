"""Retries, retry-after, circuit breakers and model fallback, through the real anthropic SDK."""

from __future__ import annotations

import pytest

from quarterdeck.chaos.messages_api import MessagesAPIServer, error, message, text
from quarterdeck.metrics import REGISTRY
from quarterdeck.runs.models import RunCreate, RunStatus
from quarterdeck.runtime import Runtime

pytest_plugins = ["tests.support.fixtures"]
pytestmark = pytest.mark.asyncio


def _sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return value or 0.0


@pytest.fixture
def fast_retry_settings(make_settings, messages_api: MessagesAPIServer):
    def make(**extra):
        base = dict(
            provider="anthropic",
            anthropic_api_key="sk-ant-test",
            anthropic_base_url=messages_api.base_url,
            default_model="claude-opus-4-1",
            retry_schedule=[0.05],
            retry_max_attempts=3,
            retry_budget=30.0,
        )
        base.update(extra)
        return make_settings(**base)

    return make


def _models(server: MessagesAPIServer) -> list[str]:
    return [r.json["model"] for r in server.requests if r.path == "/v1/messages"]


async def test_a_429_is_retried_after_its_retry_after(fast_retry_settings, messages_api):
    messages_api.script(
        [error(429, "rate_limit_error", headers={"retry-after": "1"}), message(text("done"))]
    )
    rt = Runtime(fast_retry_settings())
    await rt.start()
    try:
        run, _ = await rt.runs.submit(RunCreate(prompt="x"))
        done = await rt.runs.wait(run.id, 30)
        assert done.status == RunStatus.succeeded
        turn = next(e for e in await rt.runs.events(run.id) if e.type == "turn")
        assert turn.data["attempts"] == 2
        assert len(_models(messages_api)) == 2
    finally:
        await rt.stop()


async def test_a_400_is_not_retried(fast_retry_settings, messages_api):
    messages_api.script([error(400, "invalid_request_error", "bad request"), message(text("x"))])
    rt = Runtime(fast_retry_settings())
    await rt.start()
    try:
        run, _ = await rt.runs.submit(RunCreate(prompt="x"))
        done = await rt.runs.wait(run.id, 30)
        assert done.status == RunStatus.failed and "bad request" in (done.error or "")
        assert len(_models(messages_api)) == 1
    finally:
        await rt.stop()


async def test_the_fallback_serves_when_the_primary_keeps_failing_and_its_breaker_opens(
    fast_retry_settings, messages_api
):
    fallbacks = {"claude-opus-4-1": ["claude-sonnet-4-5"]}
    before = _sample(
        "claude_agent_model_fallbacks_total",
        from_model="claude-opus-4-1",
        to_model="claude-sonnet-4-5",
        reason="overloaded_error",
    )
    # Primary: three 529s spend its retries; then the fallback answers.
    messages_api.script([error(529, "overloaded_error")] * 3 + [message(text("served"))])
    rt = Runtime(fast_retry_settings(model_fallbacks=fallbacks, breaker_failure_threshold=3))
    await rt.start()
    try:
        run, _ = await rt.runs.submit(RunCreate(prompt="x"))
        done = await rt.runs.wait(run.id, 30)
        assert done.status == RunStatus.succeeded and done.result == "served"
        assert _models(messages_api) == ["claude-opus-4-1"] * 3 + ["claude-sonnet-4-5"]
        turn = next(e for e in await rt.runs.events(run.id) if e.type == "turn")
        assert turn.data["fallback_from"] == "claude-opus-4-1"
        assert turn.data["model"].startswith("claude-sonnet-4-5")
        after = _sample(
            "claude_agent_model_fallbacks_total",
            from_model="claude-opus-4-1",
            to_model="claude-sonnet-4-5",
            reason="overloaded_error",
        )
        assert after == before + 1
        # The primary's breaker is now open: the next run goes straight to the fallback.
        assert _sample("claude_agent_circuit_state", dependency="anthropic:claude-opus-4-1") == 2
        messages_api.script([message(text("served again"))])
        run2, _ = await rt.runs.submit(RunCreate(prompt="y"))
        done2 = await rt.runs.wait(run2.id, 30)
        assert done2.status == RunStatus.succeeded
        assert _models(messages_api)[-1] == "claude-sonnet-4-5"
        assert len(_models(messages_api)) == 5  # the open primary was not called
    finally:
        await rt.stop()


async def test_a_context_window_error_moves_to_the_larger_context_model(
    fast_retry_settings, messages_api
):
    messages_api.script(
        [
            error(
                400, "invalid_request_error", "prompt is too long: 215000 tokens > 200000 maximum"
            ),
            message(text("fits now")),
        ]
    )
    rt = Runtime(
        fast_retry_settings(
            model_fallbacks={"claude-opus-4-1": ["claude-haiku-4-5"]},
            context_fallbacks={"claude-opus-4-1": ["claude-sonnet-4-5-1m"]},
        )
    )
    await rt.start()
    try:
        run, _ = await rt.runs.submit(RunCreate(prompt="a very long conversation"))
        done = await rt.runs.wait(run.id, 30)
        assert done.status == RunStatus.succeeded and done.result == "fits now"
        # not retried on the same model, and not sent to the smaller fallback
        assert _models(messages_api) == ["claude-opus-4-1", "claude-sonnet-4-5-1m"]
        turn = next(e for e in await rt.runs.events(run.id) if e.type == "turn")
        assert turn.data["fallback_from"] == "claude-opus-4-1"
        assert turn.data["fallback_reason"] == "context_window"
    finally:
        await rt.stop()


async def test_a_context_window_error_without_a_larger_model_fails_clearly(
    fast_retry_settings, messages_api
):
    messages_api.script(
        [
            error(
                400, "invalid_request_error", "prompt is too long: 215000 tokens > 200000 maximum"
            ),
        ]
    )
    rt = Runtime(fast_retry_settings())
    await rt.start()
    try:
        run, _ = await rt.runs.submit(RunCreate(prompt="x"))
        done = await rt.runs.wait(run.id, 30)
        assert done.status == RunStatus.failed and "prompt is too long" in (done.error or "")
        assert len(_models(messages_api)) == 1
    finally:
        await rt.stop()
