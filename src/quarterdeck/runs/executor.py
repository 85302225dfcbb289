"""The turn loop of one run: model call, tool calls, checkpoint, repeat.

Each completed turn is checkpointed (conversation, usage, cost, events) in one transaction that is
shielded from cancellation, so a turn is either fully recorded or not at all. A resumed run loads
the last checkpoint and continues with the next turn; completed turns are never called or billed
again.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import structlog

from quarterdeck import metrics
from quarterdeck.budgets.service import BudgetExceeded, BudgetService
from quarterdeck.exceptions import ProviderError
from quarterdeck.providers.types import (
    Message,
    ModelRequest,
    Provider,
    TextBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
    Usage,
)
from quarterdeck.resilience.calls import CallResult, CostFn, ResilientCaller
from quarterdeck.runs.models import Run, RunStatus
from quarterdeck.runs.store import RunStore, TurnRecord
from quarterdeck.security.redaction import redact_message

log = structlog.get_logger(__name__)


class ToolRunner(Protocol):
    """Executes the model's tool calls for one run. The agent runtime provides the real one."""

    def specs(self) -> list[ToolSpec]: ...

    async def run(self, run: Run, call: ToolUseBlock) -> tuple[ToolResultBlock, dict[str, Any]]:
        """The result the model sees, and the event data to record for the call."""


class SimulatedTools:
    """Stand-in tools for the simulated provider: deterministic output, nothing executed."""

    def specs(self) -> list[ToolSpec]:
        return []

    async def run(self, run: Run, call: ToolUseBlock) -> tuple[ToolResultBlock, dict[str, Any]]:
        output = f"(simulated) {call.name} completed"
        return ToolResultBlock(tool_use_id=call.id, content=output), {
            "tool": call.name,
            "input": call.input,
            "output": output,
            "simulated": True,
            "duration_ms": 0.0,
        }


@dataclass
class Outcome:
    status: RunStatus
    result: str | None = None
    error: str | None = None
    error_type: str | None = None
    usage: Usage = field(default_factory=Usage)


@dataclass
class ExecutorConfig:
    max_turns: int = 50
    timeout_s: float = 3600.0
    system_prompt: str = "You are a careful software engineer working in a repository."
    max_tokens: int = 4096


@dataclass
class RunPlan:
    """How one run executes: decided per run from its agent type and request."""

    system_prompt: str
    tools: ToolRunner
    max_turns: int
    timeout_s: float
    budget_usd: float | None = None
    max_tokens: int = 4096
    refusal: str | None = None
    """Why the run cannot start at all (e.g. its workspace source was refused): it fails with
    this reason before any model call."""


class Planner(Protocol):
    """Chooses a run's plan and does the work after it ends (diffs, quality, cleanup)."""

    async def plan(self, run: Run) -> RunPlan: ...

    async def finalize(self, run: Run, outcome: Outcome) -> None: ...


def worst_case_usage(messages: list[Message], system: str, max_tokens: int) -> Usage:
    """A deliberately high estimate of one call's usage, for the budget check before it.

    Three characters per token over-counts English and code for Claude's tokenizer, and the
    output is assumed to use all of ``max_tokens``; so a run stops before a call that *could*
    overspend, which keeps overspend to less than one call.
    """
    chars = len(system) + sum(len(json.dumps(m.to_dict())) for m in messages)
    return Usage(input_tokens=chars // 3 + 1, output_tokens=max_tokens)


class RunExecutor:
    def __init__(
        self,
        store: RunStore,
        provider: Provider,
        planner: Planner,
        cost_of: CostFn,
        config: ExecutorConfig,
        caller: ResilientCaller | None = None,
        budgets: BudgetService | None = None,
    ) -> None:
        """``caller`` prices and counts each model call (give it ``cost_of``); the default does."""
        self.budgets = budgets
        self.store = store
        self.provider = provider
        self.caller = caller or ResilientCaller(provider, cost_of=cost_of)
        self.planner = planner
        self.cost_of = cost_of
        self.config = config

    async def execute(self, run: Run) -> Outcome:
        plan = await self.planner.plan(run)
        if plan.refusal is not None:
            outcome = Outcome(RunStatus.failed, error=plan.refusal, error_type="workspace")
        else:
            outcome = await self._loop(run, plan)
        await self.planner.finalize(run, outcome)
        return outcome

    async def _loop(self, run: Run, plan: RunPlan) -> Outcome:
        checkpoint = None
        if run.attempts > 1:  # only a resumed run can have a checkpoint
            checkpoint = await self.store.last_checkpoint(run.id)
        if checkpoint:
            turn, raw = checkpoint
            messages = [Message.from_dict(m) for m in raw]
        else:
            turn, messages = 0, [Message(role="user", content=[TextBlock(run.prompt)])]
        max_turns, timeout_s = plan.max_turns, plan.timeout_s
        spent = run.cost_usd or 0.0  # completed turns, including those before a resume
        started = run.started_at.timestamp() if run.started_at else time.time()
        deadline = started + timeout_s
        total = Usage()
        last_text = messages[-1].text if messages[-1].role == "assistant" else ""
        if messages[-1].role == "assistant":
            # The checkpoint holds the model's reply. If its tool calls had finished, their
            # results were recorded and are reused; only if the worker died during the tools do
            # they run again. The model call itself is paid for and never repeated.
            if not messages[-1].tool_uses:
                return Outcome(RunStatus.succeeded, result=last_text, usage=total)
            recorded = await self.store.tool_results(run.id, turn)
            if recorded is not None:
                messages = [*messages, Message.from_dict(recorded)]
            else:
                messages = [*messages, await self._run_tools(run, plan, turn, messages[-1])]

        while True:
            if turn >= max_turns:
                return Outcome(
                    RunStatus.max_turns,
                    result=last_text or None,
                    error=f"stopped after max_turns={max_turns} turns without finishing",
                    error_type="max_turns",
                    usage=total,
                )
            if time.time() >= deadline:
                return Outcome(
                    RunStatus.timed_out,
                    error=f"run exceeded its wall-clock timeout of {timeout_s:g}s",
                    error_type="timeout",
                    usage=total,
                )
            if plan.budget_usd is not None:
                estimate = self.cost_of(
                    run.model, worst_case_usage(messages, plan.system_prompt, plan.max_tokens)
                )
                if estimate is not None and spent + float(estimate) > plan.budget_usd:
                    return Outcome(
                        RunStatus.budget_exceeded,
                        result=last_text or None,
                        error=f"stopped before turn {turn + 1}: ${spent:.4f} spent of a "
                        f"${plan.budget_usd:.4f} budget, and the next call could cost up to "
                        f"${float(estimate):.4f}",
                        error_type="budget_exceeded",
                        usage=total,
                    )
            if self.budgets is not None:

                def worst(messages: list[Message] = messages) -> float:
                    usage = worst_case_usage(messages, plan.system_prompt, plan.max_tokens)
                    return float(self.cost_of(run.model, usage) or 0)

                try:
                    await self.budgets.check(run.tenant, worst)
                except BudgetExceeded as exc:
                    return Outcome(
                        RunStatus.budget_exceeded,
                        result=last_text or None,
                        error=f"stopped before turn {turn + 1}: {exc.detail}",
                        error_type="tenant_budget_exceeded",
                        usage=total,
                    )
            request = ModelRequest(
                model=run.model,
                messages=messages,
                system=plan.system_prompt,
                tools=plan.tools.specs(),
                max_tokens=plan.max_tokens,
                metadata={"run_id": run.id, "turn": str(turn), "agent_type": run.agent_type},
            )
            try:
                # asyncio.timeout, not wait_for: no extra task per call on the hot path.
                async with asyncio.timeout(max(0.001, deadline - time.time())):
                    called = await self._call(run, request)
            except TimeoutError:
                continue  # the deadline check above ends the run
            except ProviderError as exc:
                return Outcome(
                    RunStatus.failed,
                    error=f"model call failed: {exc.detail}",
                    error_type=exc.error_type,
                    usage=total,
                )
            response = called.response
            turn += 1
            stored, secrets = redact_message(response.message)
            cost = await self._complete_turn(run, turn, messages, called, stored, secrets)
            spent += float(cost or 0)
            total = total + response.usage
            messages = [*messages, stored]
            last_text = stored.text
            if response.message.tool_uses and response.stop_reason == "tool_use":
                messages = [*messages, await self._run_tools(run, plan, turn, response.message)]
                continue
            return Outcome(RunStatus.succeeded, result=last_text, usage=total)

    async def _call(self, run: Run, request: ModelRequest) -> CallResult:
        """One model call through the resilience layer (limits, breaker, retries, fallback)."""
        return await self.caller.call(run.agent_type, request)

    async def _run_tools(self, run: Run, plan: RunPlan, turn: int, assistant: Message) -> Message:
        results: list[ToolResultBlock] = []
        events: list[tuple[str, int | None, dict[str, Any]]] = []
        for call in assistant.tool_uses:
            result, data = await plan.tools.run(run, call)
            results.append(result)
            events.append(("tool_call", turn, data))
        reply = Message(role="user", content=list(results))
        # Recorded with the calls, so a resumed run reuses these results instead of re-running
        # tools that already had their effect.
        events.append(("tool_results", turn, {"message": reply.to_dict()}))
        await self.store.append_events(run.id, events)
        return reply

    async def _complete_turn(
        self,
        run: Run,
        turn: int,
        before: list[Message],
        called: CallResult,
        stored: Message,
        secrets: list[str],
    ) -> Decimal | None:
        """Checkpoint the turn; ``stored`` is the model's reply with secrets redacted."""
        response = called.response
        usage = response.usage
        cost = called.cost
        messages = [m.to_dict() for m in before] + [stored.to_dict()]
        event = {
            "model": response.model,
            "stop_reason": response.stop_reason,
            "usage": usage.to_dict(),
            "cost_usd": float(cost) if cost is not None else None,
            "latency_s": round(response.latency_s, 6),
            "request_id": response.request_id,
            "tool_calls": [t.name for t in response.message.tool_uses],
            "attempts": called.attempts,
        }
        if secrets:
            event["secrets_redacted"] = secrets
        if called.fallback_from:
            event["fallback_from"] = called.fallback_from
            event["fallback_reason"] = called.fallback_reason

        record = TurnRecord(
            run.id,
            turn,
            messages,
            response.model,
            usage.to_dict(),
            cost,
            response.stop_reason,
            event,
        )
        # Group-committed with other runs' turns; the write completes even if this run is
        # cancelled while it waits, so a cancel never leaves a half-recorded turn.
        await self.store.save_turn(record)
        # A turn, not a call: counted once checkpointed. The call itself (tokens, cost, latency)
        # was counted by the resilient caller when it answered.
        metrics.TURNS.labels(run.agent_type, metrics.bounded(response.model)).inc()
        return cost
