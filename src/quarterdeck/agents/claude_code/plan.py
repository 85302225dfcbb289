"""How a ``runner: claude-code`` run is planned: the native plan's limits, with the CLI as the
agent, or a refusal that says what is missing (the CLI, the sandbox, the wiring)."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass

from quarterdeck.agents.checkpoint import WorkspaceCheckpoints
from quarterdeck.agents.claude_code.bridge import gateway_address
from quarterdeck.agents.claude_code.install import probe_cli
from quarterdeck.agents.claude_code.runner import (
    ClaudeCodeAgent,
    ClaudeCodeConfig,
    RunTokenMinter,
    RunUsage,
)
from quarterdeck.agents.guard import Guard
from quarterdeck.agents.templates import AgentType
from quarterdeck.config import Settings
from quarterdeck.exceptions import ConfigError
from quarterdeck.runs.executor import RunPlan
from quarterdeck.runs.store_protocol import RunStore


@dataclass(frozen=True)
class ClaudeCodeDeps:
    """What a worker gives claude-code runs: run tokens for the gateway, and its metering."""

    tokens: RunTokenMinter
    usage: RunUsage


def gateway_url(settings: Settings) -> str:
    return settings.agent_gateway_url or f"http://127.0.0.1:{settings.http_port or 8080}"


async def claude_code_plan(
    plan: RunPlan,
    agent: AgentType,
    settings: Settings,
    store: RunStore,
    deps: ClaudeCodeDeps | None,
    guard: Guard | None,
    checkpoints: WorkspaceCheckpoints | None,
) -> RunPlan:
    def refuse(why: str) -> RunPlan:
        return dataclasses.replace(
            plan, refusal=why, refusal_type="agent_unavailable", max_turns=0, timeout_s=0.0
        )

    if plan.refusal is not None:
        return plan
    install = await asyncio.to_thread(probe_cli, settings)  # runs the binary once, cached
    if install.path is None or not install.available:
        return refuse(f"agent type {agent.name!r} is unavailable: {install.problem}")
    if deps is None or checkpoints is None:
        return refuse("this worker was started without what claude-code runs need")
    try:
        address = gateway_address(gateway_url(settings))
    except ConfigError as exc:
        return refuse(exc.detail)
    config = ClaudeCodeConfig(
        cli=install.path.resolve(),
        gateway=address,
        hook_timeout_s=settings.claude_code_hook_timeout,
    )
    runner = ClaudeCodeAgent(config, agent, store, deps.tokens, deps.usage, checkpoints, guard)
    return dataclasses.replace(plan, agent=runner)
