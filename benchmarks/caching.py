"""Issue 15 benchmark: what prompt caching saves on a 10-turn coding run.

The same run is played twice against the Messages API stand-in in cache-accounting mode (which
bills every request from its ``cache_control`` breakpoints by kit/prompt_cache, as the real API
would): once with the agent type's default ``cache_ttl: 5m``, once with ``off``. Requests are
built the way the executor builds them (ModelRequest with the agent's system prompt, the workspace
tools' schemas, the growing conversation) and sent by the real AnthropicProvider through the real
SDK; the model "uses a tool" every turn and the tool results are realistic in size (file reads,
listings, test output). Not through the executor itself: its loop (budgets, fencing, workspace
checkpoints) adds nothing to what is sent, and the benchmark stays a few seconds.

Reported: per turn, the share of input tokens read from the cache (goal: >= 80 % from turn 2 on),
and the run's cost with and without caching at the price table's Sonnet 4.5 prices (cache writes
1.25x / 2x input, reads 0.1x), and the share saved.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from quarterdeck.agents.templates import AgentCatalog
from quarterdeck.chaos.messages_api import Conversation, MessagesAPIServer
from quarterdeck.kit.prompt_cache import CacheTTL
from quarterdeck.providers.anthropic import AnthropicProvider
from quarterdeck.providers.pricing import PriceTable
from quarterdeck.providers.types import (
    Message,
    ModelRequest,
    TextBlock,
    ToolResultBlock,
    ToolSpec,
    Usage,
)
from quarterdeck.toolcalls import TOOLS

MODEL = "claude-sonnet-4-5"
TURNS = 10
OUTPUT = 300
"""Output tokens per turn: a short explanation and a tool call, as a coding agent writes."""


def system_prompt() -> str:
    """The coder's prompt plus a project handbook: about 6,000 tokens, as real agents carry."""
    habits = ("pure functions", "dataclasses", "explicit errors", "small commits", "protocols")
    rules = [
        f"{i}. In module area {i % 17}, prefer {habits[i % 5]}; keep functions under "
        f"{30 + i % 20} lines and document why, not what (rule {i})."
        for i in range(1, 221)
    ]
    prompt = AgentCatalog.defaults().get("coder").system_prompt
    return prompt + "\n\nProject handbook:\n" + "\n".join(rules)


def tool_specs() -> list[ToolSpec]:
    return [
        ToolSpec(name, " ".join((model.__doc__ or name).split()), model.model_json_schema())
        for name, (model, _) in TOOLS.items()
    ]


def tool_output(turn: int) -> str:
    """What a tool returns on ``turn``: a listing, a file, a diff or a test log (1.5k-5k chars)."""
    kind = turn % 4
    if kind == 0:
        return "\n".join(f"src/pkg/module_{turn}_{i}.py" for i in range(80))
    if kind == 1:
        return "\n".join(
            f"def handler_{i}(request):\n    return handle(request, {i})" for i in range(60)
        )
    if kind == 2:
        return "\n".join(f"@@ -{i},3 +{i},4 @@\n-old line {i}\n+new line {i}" for i in range(70))
    return "\n".join(f"tests/test_mod.py::test_case_{i} PASSED" for i in range(100))


async def play(server: MessagesAPIServer, ttl: CacheTTL | None) -> list[Usage]:
    server.reset()
    server.cache_accounting(
        conversation=Conversation(turns=TURNS + 1, latency_s=0, output_tokens=OUTPUT)
    )
    provider = AnthropicProvider(f"bench-{ttl}", base_url=server.base_url, timeout=30.0)
    system, tools = system_prompt(), tool_specs()
    messages = [Message("user", [TextBlock("Fix the failing pagination test in src/pkg/api.py")])]
    usages: list[Usage] = []
    try:
        for turn in range(TURNS):
            request = ModelRequest(
                model=MODEL,
                messages=messages,
                system=system,
                tools=tools,
                max_tokens=4096,
                cache_ttl=ttl,
                metadata={"run_id": "run_bench", "turn": str(turn)},
            )
            response = await provider.complete(request)
            usages.append(response.usage)
            results = [
                ToolResultBlock(call.id, tool_output(turn)) for call in response.message.tool_uses
            ]
            messages = [*messages, response.message, Message("user", list(results))]
    finally:
        await provider.aclose()
    return usages


def savings() -> dict[str, Any]:
    async def both() -> tuple[list[Usage], list[Usage]]:
        server = MessagesAPIServer(record_requests=False, rate_limit_headers={}).start()
        try:
            return await play(server, "5m"), await play(server, None)
        finally:
            server.stop()

    cached, plain = asyncio.run(both())
    prices = PriceTable.load()

    def cost(usages: list[Usage]) -> Decimal:
        return sum((prices.cost(MODEL, u) or Decimal(0) for u in usages), Decimal(0))

    def share(u: Usage) -> float:
        total = u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens
        return u.cache_read_input_tokens / total if total else 0.0

    with_cache, without = cost(cached), cost(plain)
    shares = [round(100 * share(u), 1) for u in cached]
    result: dict[str, Any] = {
        "model": MODEL,
        "turns": TURNS,
        "prompt_tokens_turn_1": cached[0].input_tokens + cached[0].cache_creation_input_tokens,
        "prompt_tokens_turn_10": plain[-1].input_tokens,
    }
    for turn, value in enumerate(shares, start=1):
        result[f"cache_read_pct_turn_{turn}"] = value
    result |= {
        "min_cache_read_pct_turn_2_on": min(shares[1:]),
        "goal_cache_read_pct_turn_2_on": 80,
        "uncached_read_pct_all_turns": max(round(100 * share(u), 1) for u in plain),
        "cost_usd_with_caching": float(round(with_cache, 6)),
        "cost_usd_without_caching": float(round(without, 6)),
        "cost_saved_pct": float(round(100 * (1 - with_cache / without), 1)),
    }
    return result


if __name__ == "__main__":
    for key, value in savings().items():
        print(f"{key:<34} {value}")
