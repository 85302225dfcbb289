"""The turn loop of one run: model call, tool calls, checkpoint, repeat.

Each completed turn is checkpointed (conversation, usage, cost, events) in one transaction that is
shielded from cancellation, so a turn is either fully recorded or not at all. A resumed run loads
the last checkpoint and continues with the next turn; completed turns are never called or billed
again.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import structlog
from opentelemetry.trace import Span

from quarterdeck import metrics
from quarterdeck.budgets.models import BudgetExceeded
from quarterdeck.exceptions import Fenced, ProviderError
from quarterdeck.kit.prompt_cache import CacheTTL
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
from quarterdeck.runs.fencing import discarded_call
from quarterdeck.runs.models import Run, RunStatus
from quarterdeck.runs.precall import CallGuard, Reserver
from quarterdeck.runs.store_protocol import RunStore, TurnRecord
from quarterdeck.runs.workspace_state import (
    CheckpointTooLarge,
    RestoreFailed,
    WorkspaceCheckpointer,
)
from quarterdeck.security.redaction import redact_arguments, redact_message
from quarterdeck.tracing import execute_tool_span, record_content, record_error

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


def traced_tool(span: Span, call: ToolUseBlock, result: ToolResultBlock) -> None:
    """A tool call's end on its span: an error if the model got one (refused or failed); its
    arguments (secrets redacted) and result only when content recording is on, clipped."""
    if result.is_error:
        record_error(span, "tool_error", result.content)
    if record_content():
        arguments, _ = redact_arguments(call.input)
        span.set_attribute(
            "gen_ai.tool.call.arguments",
            clip(json.dumps(arguments, separators=(",", ":"), default=str)),
        )
        span.set_attribute("gen_ai.tool.call.result", clip(result.content))


CONTENT_LIMIT = 4096
"""Characters of a tool's arguments or result put on its span (when content is recorded)."""


def clip(text: str) -> str:
    return text if len(text) <= CONTENT_LIMIT else text[: CONTENT_LIMIT - 1] + "…"


@dataclass
class Outcome:
    status: RunStatus
    result: str | None = None
    error: str | None = None
    error_type: str | None = None
    usage: Usage = field(default_factory=Usage)
    metered: dict[str, Any] | None = None
    """The run's totals when its model calls were metered outside its turns (a claude-code
    run's, by the gateway); recorded on the run when it ends (``Finish.usage``)."""


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
    thinking_budget: int | None = None
    """Extended thinking's budget per call (below ``max_tokens``); None: off."""
    cache_ttl: CacheTTL | None = "5m"
    """Prompt caching of tools, system prompt and conversation; None: no breakpoints."""
    refusal: str | None = None
    """Why the run cannot start at all (e.g. its workspace source was refused): it fails with
    this reason before any model call."""
    refusal_type: str = "workspace_unavailable"
    checkpoints: WorkspaceCheckpointer | None = None
    """Captures the run's workspace after each turn's tools and restores it on resume, so the
    run can continue on any replica (runs/workspace_state.py); None: no workspace to keep."""
    agent: ExternalAgent | None = None
    """An agent that runs the whole loop itself (Claude Code); None: this executor's own loop."""


class ExternalAgent(Protocol):
    """A run's agent that is not this executor's turn loop: it makes its own model calls (the
    gateway meters them) and keeps its own checkpoints through the run store, so the executor
    only hands it the run and its plan."""

    async def execute(self, run: Run, plan: RunPlan) -> Outcome: ...


class Planner(Protocol):
    """Chooses a run's plan and does the work after it ends (diffs, quality, cleanup)."""

    async def plan(self, run: Run) -> RunPlan: ...

    async def finalize(self, run: Run, outcome: Outcome) -> None: ...


BUDGET_ERRORS = {
    "run": "budget_exceeded",
    "tenant": "tenant_budget_exceeded",
    "key": "key_budget_exceeded",
}
"""A refused reservation's ``error_type``, by whose budget refused it."""


class RunExecutor:
    def __init__(
        self,
        store: RunStore,
        provider: Provider,
        planner: Planner,
        cost_of: CostFn,
        config: ExecutorConfig,
        caller: ResilientCaller | None = None,
        holds: Reserver | None = None,
    ) -> None:
        """``caller`` prices and counts each model call (give it ``cost_of``); the default does.
        ``holds`` reserves each call's worst case against the tenant and run budgets (the
        gateway's ``BudgetHolds``); without it no budget is enforced, only the attempt."""
        self.store = store
        self.provider = provider
        self.caller = caller or ResilientCaller(provider, cost_of=cost_of)
        self.guard = CallGuard(store, cost_of, holds, models_for=self.caller.models_for)
        self.planner = planner
        self.cost_of = cost_of
        self.config = config

    async def execute(self, run: Run) -> Outcome:
        plan = await self.planner.plan(run)
        if plan.refusal is not None:
            outcome = Outcome(RunStatus.failed, error=plan.refusal, error_type=plan.refusal_type)
        else:
            try:
                if plan.agent is not None:
                    outcome = await plan.agent.execute(run, plan)
                else:
                    outcome = await self._loop(run, plan)
            except (CheckpointTooLarge, RestoreFailed) as exc:
                # Never carry on without the checkpoint: a resume elsewhere would lose the work.
                outcome = Outcome(RunStatus.failed, error=exc.detail, error_type=exc.error_type)
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
        if run.attempts > 1 and plan.checkpoints is not None:
            # The workspace as of the last recorded tool results, wherever this replica is: the
            # local tree is kept if it already is that, else rebuilt (tree and diff baseline).
            state = await self.store.workspace_state(run.id)
            if state is not None:
                await plan.checkpoints.restore(
                    state, functools.partial(self.store.workspace_blobs, run.id)
                )
        max_turns, timeout_s = plan.max_turns, plan.timeout_s
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
            request = ModelRequest(
                model=run.model,
                messages=messages,
                system=plan.system_prompt,
                tools=plan.tools.specs(),
                max_tokens=plan.max_tokens,
                cache_ttl=plan.cache_ttl,
                thinking_budget=plan.thinking_budget,
                metadata={"run_id": run.id, "turn": str(turn), "agent_type": run.agent_type},
            )
            try:
                # Reserve the worst case against every budget, then confirm the attempt still
                # holds the run (runs/precall.py); Fenced propagates: the worker stops quietly.
                hold = await self.guard.before_call(run, request)
            except BudgetExceeded as exc:
                return Outcome(
                    RunStatus.budget_exceeded,
                    result=last_text or None,
                    error=f"stopped before turn {turn + 1}: {exc.detail}",
                    error_type=BUDGET_ERRORS.get(exc.extra.get("scope", ""), "budget_exceeded"),
                    usage=total,
                )
            settled = False
            try:
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
                await self._complete_turn(run, turn, messages, called, stored, secrets, hold)
                settled = True  # the turn's statement deleted the hold
            finally:
                if not settled:  # failed, timed out, cancelled or fenced: nothing to bill
                    await asyncio.shield(self.guard.release(hold))
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
        checkpoints = plan.checkpoints
        if checkpoints is not None and not checkpoints.started:
            # The workspace as prepared, before any tool touched it: the base every resume
            # rebuilds from, and the diff baseline.
            base = await checkpoints.capture()
            await self.store.save_workspace_base(run.id, base, epoch=run.attempts)
        results: list[ToolResultBlock] = []
        events: list[tuple[str, int | None, dict[str, Any]]] = []
        for call in assistant.tool_uses:
            # A child of the attempt's span, beside the turn's ``chat`` span; the guard adds
            # its policy decision to it (agents/guard.py).
            with execute_tool_span(call.name, call_id=call.id) as span:
                result, data = await plan.tools.run(run, call)
                if span.is_recording():
                    traced_tool(span, call, result)
            results.append(result)
            events.append(("tool_call", turn, data))
        reply = Message(role="user", content=list(results))
        # Recorded with the calls, so a resumed run reuses these results instead of re-running
        # tools that already had their effect; and with what they did to the workspace, so a
        # resume on another replica finds the files the results speak of.
        events.append(("tool_results", turn, {"message": reply.to_dict()}))
        delta, too_large = None, None
        if checkpoints is not None:
            try:
                delta = await checkpoints.capture()
            except CheckpointTooLarge as exc:
                too_large = exc  # the calls are still recorded; then the run fails
        await self.store.save_tool_results(run.id, turn, events, delta, epoch=run.attempts)
        if too_large is not None:
            raise too_large
        return reply

    async def _complete_turn(
        self,
        run: Run,
        turn: int,
        before: list[Message],
        called: CallResult,
        stored: Message,
        secrets: list[str],
        hold: str | None = None,
    ) -> Decimal | None:
        """Checkpoint the turn and settle its budget ``hold``; ``stored`` is the model's reply
        with secrets redacted. If the attempt lost the run while the call was in flight, the
        call was paid but cannot be recorded: a ``discarded_call`` event says so (the only
        write of a fenced attempt) and ``Fenced`` propagates."""
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
        if stored.text:  # what the agent said (redacted, clipped): `run logs` shows it
            event["text"] = stored.text[:4000]
        if secrets:
            event["secrets_redacted"] = secrets
        if called.cost_estimated:  # an unpriced model, charged at the fallback's price
            event["cost_estimated"] = True
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
            hold_id=hold,
        )
        # Group-committed with other runs' turns; the write completes even if this run is
        # cancelled while it waits, so a cancel never leaves a half-recorded turn.
        try:
            await self.store.save_turn(record, epoch=run.attempts)
        except Fenced:
            data = discarded_call(run.attempts, turn, response.model, usage.to_dict(), cost)
            await self.store.discarded_call(run.id, data)
            raise
        # A turn, not a call: counted once checkpointed. The call itself (tokens, cost, latency)
        # was counted by the resilient caller when it answered.
        metrics.TURNS.labels(run.agent_type, metrics.model(response.model)).inc()
        return cost
