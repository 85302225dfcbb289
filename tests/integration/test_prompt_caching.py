"""Prompt caching, extended thinking and block round-trips in real runs: the anthropic SDK against
the local Messages API, real workspace tools, the run store in Postgres.

In cache-accounting mode the stand-in bills each request from its ``cache_control`` breakpoints
(kit/prompt_cache), so what a run reads from the cache is what the real API would give it.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from quarterdeck.chaos.messages_api import (
    Conversation,
    MessagesAPIServer,
    message,
    redacted_thinking,
    text,
    thinking,
    tool_use,
)
from quarterdeck.kit.prompt_cache import TURN_TOKENS
from quarterdeck.runs.models import RunCreate, RunStatus, WorkspaceSpec
from quarterdeck.runtime import Runtime
from tests.conftest import eventually

pytest_plugins = ["tests.support.fixtures"]
pytestmark = pytest.mark.asyncio

# ~1,600 tokens at four characters a token: past Sonnet's 1,024-token minimum on its own.
LONG_PROMPT = "You are a careful software engineer. Follow the house style.\n" * 105


@pytest.fixture
def anthropic_settings(make_settings, messages_api: MessagesAPIServer):
    def make(agent: dict[str, Any] | None = None, **extra: Any):
        return make_settings(
            provider="anthropic",
            anthropic_api_key="sk-ant-test",
            anthropic_base_url=messages_api.base_url,
            default_model="claude-sonnet-4-5",
            agent_types={"coder": {"system_prompt": LONG_PROMPT, **(agent or {})}},
            **extra,
        )

    return make


def sent_requests(api: MessagesAPIServer) -> list[dict[str, Any]]:
    return [r.json for r in api.requests if r.path == "/v1/messages"]


def breakpoints(request: dict[str, Any]) -> list[str]:
    """Where the request's cache_control markers are: tool/system/message index."""
    found = [f"tool:{t['name']}" for t in request.get("tools", []) if "cache_control" in t]
    system = request.get("system")
    if isinstance(system, list):
        found += ["system" for b in system if "cache_control" in b]
    for i, m in enumerate(request["messages"]):
        content = m["content"] if isinstance(m["content"], list) else []
        found += [f"message:{i}" for b in content if "cache_control" in b]
    return found


async def run_three_turns(settings, api: MessagesAPIServer) -> tuple[Any, list[Any]]:
    accounting = api.cache_accounting(conversation=Conversation(turns=3, latency_s=0))
    rt = Runtime(settings)
    await rt.start()
    try:
        run, _ = await rt.runs.submit(RunCreate(prompt="list the files", workspace=WorkspaceSpec()))
        done = await rt.runs.wait(run.id, 60)
    finally:
        await rt.stop()
    assert done.status == RunStatus.succeeded, done.error
    assert done.turns == 3
    return done, [usage for _, usage in accounting.history]


async def test_a_three_turn_run_reads_its_prefix_from_the_cache_from_turn_two(
    anthropic_settings, messages_api: MessagesAPIServer
):
    done, usages = await run_three_turns(anthropic_settings(), messages_api)
    assert len(usages) == 3
    assert usages[0].cache_read_input_tokens == 0 and usages[0].cache_creation_input_tokens > 1024
    for before, usage in itertools.pairwise(usages):
        # Turn n reads everything turn n-1 cached (its whole prompt), and writes what is new.
        cached_before = before.cache_read_input_tokens + before.cache_creation_input_tokens
        assert usage.cache_read_input_tokens == cached_before
        assert usage.input_tokens == TURN_TOKENS
        assert usage.cache_read_input_tokens / usage.total_input_tokens >= 0.8
    assert done.cache_read_tokens == sum(u.cache_read_input_tokens for u in usages) > 0
    sent = sent_requests(messages_api)
    last_tool = sent[0]["tools"][-1]["name"]
    assert breakpoints(sent[0]) == [f"tool:{last_tool}", "system", "message:0"]
    # From turn 2 on: the newest user message and the one before, four in all.
    assert breakpoints(sent[2]) == [f"tool:{last_tool}", "system", "message:2", "message:4"]
    assert sent[0]["system"][0]["cache_control"] == {"type": "ephemeral"}


async def test_one_hour_ttl_marks_every_breakpoint(
    anthropic_settings, messages_api: MessagesAPIServer
):
    _, usages = await run_three_turns(anthropic_settings({"cache_ttl": "1h"}), messages_api)
    assert usages[0].cache_creation_1h_tokens > 0 and usages[0].cache_creation_5m_tokens == 0
    assert usages[1].cache_read_input_tokens > 0
    for request in sent_requests(messages_api):
        assert request["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}


async def test_cache_ttl_off_sends_no_breakpoints_and_reads_nothing(
    anthropic_settings, messages_api: MessagesAPIServer
):
    done, usages = await run_three_turns(anthropic_settings({"cache_ttl": "off"}), messages_api)
    assert all(u.cache_read_input_tokens == u.cache_creation_input_tokens == 0 for u in usages)
    assert done.cache_read_tokens == 0 and done.input_tokens == sum(u.input_tokens for u in usages)
    for request in sent_requests(messages_api):
        assert breakpoints(request) == [] and isinstance(request["system"], str)


SEARCH_USE = {
    "type": "server_tool_use",
    "id": "srvtoolu_01",
    "name": "web_search",
    "input": {"query": "python 3.13 release notes"},
}
SEARCH_RESULT = {
    "type": "web_search_tool_result",
    "tool_use_id": "srvtoolu_01",
    "content": [
        {
            "type": "web_search_result",
            "url": "https://docs.python.org/3.13/whatsnew/",
            "title": "What's New In Python 3.13",
            "encrypted_content": "EqgfCioIARgBIiQ3YTAwMjY1",
            "page_age": "October 7, 2024",
        }
    ],
}


async def test_thinking_redacted_thinking_and_server_tool_blocks_survive_turns_and_a_resume(
    anthropic_settings, messages_api: MessagesAPIServer
):
    """Turn 1 thinks (signed), has a redacted block and calls a tool; turn 2 searches the web
    (server tool) and calls a tool; the worker is drained while turn 3 is in flight, and the
    worker that resumes from the checkpoint sends every earlier block back unchanged."""
    turn1 = [
        thinking("I should look at the tree first.", signature="sig-A1"),
        redacted_thinking("EmwKAhgBEgy3va3pzix/LafPsn4a"),
        tool_use("list_files", {"path": "."}, id="toolu_01"),
    ]
    turn2 = [
        thinking("Check what changed in 3.13.", signature="sig-B2"),
        SEARCH_USE,
        SEARCH_RESULT,
        tool_use("list_files", {"path": "."}, id="toolu_02"),
    ]
    final = [text("Nothing to change.")]
    messages_api.script(
        [
            message(*turn1),
            message(*turn2),
            message(*final, delay=60),  # hangs until the drain cuts it
            message(*final),
        ]
    )
    agent = {"max_tokens": 8192, "thinking_budget": 2048}
    first = Runtime(anthropic_settings(agent, drain_timeout=0.1))
    await first.start()
    run, _ = await first.runs.submit(RunCreate(prompt="check", workspace=WorkspaceSpec()))

    async def turn_three_in_flight() -> bool:
        return len(sent_requests(messages_api)) >= 3

    try:
        await eventually(turn_three_in_flight, timeout=30)
        await first.drain()
        assert (await first.runs.get(run.id)).status == "queued"
    finally:
        await first.stop()

    second = Runtime(anthropic_settings(agent))
    await second.start()
    try:
        done = await second.runs.wait(run.id, 30)
    finally:
        await second.stop()
    assert done.status == RunStatus.succeeded, done.error
    assert done.attempts == 2 and done.result == "Nothing to change."

    sent = sent_requests(messages_api)
    assert len(sent) == 4
    for request in sent:
        assert request["thinking"] == {"type": "enabled", "budget_tokens": 2048}
        assert request["max_tokens"] == 8192
    resumed = sent[-1]["messages"]  # sent by the second worker, from the checkpoint
    assert resumed[1] == {"role": "assistant", "content": turn1}
    assert resumed[3] == {"role": "assistant", "content": turn2}
    assert sent[2]["messages"][:4] == resumed[:4]  # the same as before the resume


async def test_max_tokens_per_agent_type_reaches_the_request(
    anthropic_settings, messages_api: MessagesAPIServer
):
    messages_api.script([message(text("done"))])
    rt = Runtime(anthropic_settings({"max_tokens": 1234}))
    await rt.start()
    try:
        run, _ = await rt.runs.submit(RunCreate(prompt="x", workspace=WorkspaceSpec()))
        done = await rt.runs.wait(run.id, 30)
        assert done.status == RunStatus.succeeded, done.error
        run2, _ = await rt.runs.submit(
            RunCreate(prompt="y", agent_type="reviewer", workspace=WorkspaceSpec())
        )
        assert (await rt.runs.wait(run2.id, 30)).status == RunStatus.succeeded
    finally:
        await rt.stop()
    sent = sent_requests(messages_api)
    assert [r["max_tokens"] for r in sent] == [1234, 4096]  # coder's, then the default
    assert "thinking" not in sent[0]
