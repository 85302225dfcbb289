"""The agent runtime's planner: what a run may do, and what is measured when it ends.

:class:`AgentPlanner` plugs into :class:`~quarterdeck.runs.executor.RunExecutor`. For each run it
picks the agent type's system prompt, tools and limits, hands the model real workspace tools, and
after the run ends records the workspace diff, the code-quality score and the test coverage on the
run and in the guide's histograms, then applies the retention policy.

Runs on the simulated provider without a workspace keep the stand-in tools: load tests and demos
then cost no filesystem work per run. Give such a run a workspace and its scripted tool calls run
for real.
"""

from __future__ import annotations

import base64
import functools
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import structlog

from quarterdeck.agents.checkpoint import WorkspaceCheckpoints
from quarterdeck.agents.claude_code.plan import ClaudeCodeDeps, claude_code_plan
from quarterdeck.agents.coverage import measure_coverage, record_coverage
from quarterdeck.agents.egress import RunEgress
from quarterdeck.agents.guard import Guard, GuardedTools, refused
from quarterdeck.agents.quality import (
    QualityError,
    diff_line_numbers,
    record_quality,
    score_python,
)
from quarterdeck.agents.sandbox import SandboxLimits, run_identity, run_sandboxed
from quarterdeck.agents.templates import AgentCatalog, AgentType
from quarterdeck.agents.tools import WorkspaceTools
from quarterdeck.agents.workspace import Workspace, WorkspaceError
from quarterdeck.config import Settings
from quarterdeck.exceptions import QuarterdeckError
from quarterdeck.providers.types import ToolResultBlock, ToolSpec, ToolUseBlock
from quarterdeck.runs.executor import Outcome, RunPlan, SimulatedTools, ToolRunner
from quarterdeck.runs.models import Run, RunStatus
from quarterdeck.runs.store_protocol import RunStore

log = structlog.get_logger(__name__)
NETWORK_LISTED = 100
"""Egress connections listed in a ``run_command``'s tool-call event (all are audited)."""


class AllowedTools:
    """The workspace tools an agent type may use; other calls become tool errors. With
    ``egress`` (the type has ``network: egress``), each ``run_command`` gets its own proxy."""

    def __init__(
        self, tools: WorkspaceTools, agent: AgentType, run: Run, egress: RunEgress | None = None
    ) -> None:
        self.inner = tools
        self.agent = agent
        self.run_with_source = run  # carries an uploaded archive the first time
        self.egress = egress

    def specs(self) -> list[ToolSpec]:
        return [s for s in self.inner.specs() if s.name in self.agent.tools]

    async def run(self, run: Run, call: ToolUseBlock) -> tuple[ToolResultBlock, dict[str, Any]]:
        if call.name not in self.agent.tools:
            message = (
                f"tool {call.name!r} is not available to agent type {self.agent.name!r}; "
                f"available: {', '.join(self.agent.tools)}"
            )
            return refused(call, message)
        if self.egress is None or call.name != "run_command":
            return await self.inner.run(self.run_with_source, call)
        async with self.egress.open(run, run_identity(run.id)) as proxy:
            self.inner.egress_sockets[run.id] = proxy.socket_path
            try:
                result, event = await self.inner.run(self.run_with_source, call)
            finally:
                self.inner.egress_sockets.pop(run.id, None)
        # Closed: every connection has ended and been audited on its own (egress.connection);
        # the call's event lists the first ones, so a connection loop cannot bloat it.
        listed = event.setdefault("network", [])
        listed.extend(r.to_dict() for r in proxy.records[:NETWORK_LISTED])
        if len(proxy.records) > NETWORK_LISTED:
            listed.append({"omitted": len(proxy.records) - NETWORK_LISTED})
        return result, event


def project_label(spec: dict[str, Any] | None) -> str:
    """A bounded label for the coverage histogram: the repository or directory name."""
    if not spec or spec.get("type") in (None, "empty"):
        return "workspace"
    if spec.get("type") == "tar":
        return "upload"
    value = str(spec.get("value") or "")
    name = Path(urlparse(value).path if spec.get("type") == "git" else value).name
    return name.removesuffix(".git") or "workspace"


class AgentPlanner:
    def __init__(
        self,
        settings: Settings,
        store: RunStore,
        catalog: AgentCatalog,
        *,
        simulated: bool,
        guard: Guard | None = None,
        egress: RunEgress | None = None,
        claude_code: ClaudeCodeDeps | None = None,
    ) -> None:
        """``claude_code``: what runs of ``runner: claude-code`` types need (a run token
        minter and the gateway's metering); without it such runs fail with the reason."""
        self.guard = guard
        self.claude_code = claude_code
        self.egress = egress or RunEgress.from_settings(
            settings, guard.gate if guard else None, guard.trail if guard else None
        )
        self.settings = settings
        self.store = store
        self.catalog = catalog
        self.simulated = simulated
        self.tools = WorkspaceTools(settings)
        self.stand_in = SimulatedTools()

    def uses_workspace(self, run: Run) -> bool:
        if run.agent_type in self.catalog and self.agent(run).runner == "claude-code":
            return True  # the CLI always works in a real directory
        return run.params.get("workspace") is not None or not self.simulated

    def agent(self, run: Run) -> AgentType:
        """The run's agent type, with the settings a canary routed it (``agent_config``)."""
        if run.agent_type in self.catalog:
            return self.catalog.configured(run.agent_type, run.params.get("agent_config"))
        # Validated at submission; a type removed from config since then falls back loudly.
        log.warning("agent_type_gone", run_id=run.id, agent_type=run.agent_type)
        return self.catalog.get(self.settings.default_agent_type)

    async def plan(self, run: Run) -> RunPlan:
        agent = self.agent(run)
        tools: ToolRunner = self.stand_in
        workspace: Path | None = None
        checkpoints: WorkspaceCheckpoints | None = None
        if self.uses_workspace(run):
            egress = self.egress if agent.network == "egress" else None
            prepared = run
            if not await self._restorable(run):
                prepared = await self._with_archive(run)
                try:
                    # Made up front, so a refused or oversized source fails the run with its
                    # reason instead of turning every tool call into the same error.
                    await self.tools.workspace(prepared)
                except WorkspaceError as exc:
                    return RunPlan(
                        system_prompt=agent.system_prompt,
                        tools=tools,
                        max_turns=0,
                        timeout_s=0.0,
                        refusal=exc.detail,
                    )
            tools = AllowedTools(self.tools, agent, prepared, egress)
            workspace = Workspace(self.settings.data_dir, run.id).path
            checkpoints = self.checkpoints(run)
        if self.guard is not None:
            tools = GuardedTools(tools, self.guard, workspace=workspace)
        plan = self._limits(run, agent, tools, checkpoints)
        if agent.runner == "claude-code":
            return await claude_code_plan(
                plan, agent, self.settings, self.store, self.claude_code, self.guard, checkpoints
            )
        return plan

    def _limits(
        self,
        run: Run,
        agent: AgentType,
        tools: ToolRunner,
        checkpoints: WorkspaceCheckpoints | None,
    ) -> RunPlan:
        requested_turns = int(run.params.get("max_turns") or agent.max_turns)
        requested_timeout = float(run.params.get("timeout_s") or agent.timeout_s)
        return RunPlan(
            system_prompt=agent.system_prompt,
            tools=tools,
            max_turns=min(requested_turns, agent.max_turns),
            timeout_s=min(requested_timeout, agent.timeout_s),
            budget_usd=run.budget_usd if run.budget_usd is not None else agent.budget_usd,
            max_tokens=agent.max_tokens,
            thinking_budget=agent.thinking_budget,
            cache_ttl=None if agent.cache_ttl == "off" else agent.cache_ttl,
            checkpoints=checkpoints,
        )

    def checkpoints(self, run: Run) -> WorkspaceCheckpoints:
        """The run's workspace checkpointer: kept in Postgres, so any replica can resume it."""
        return WorkspaceCheckpoints(
            Workspace(self.settings.data_dir, run.id),
            turn_max_bytes=self.settings.workspace_checkpoint_turn_max_bytes,
            run_max_bytes=self.settings.workspace_checkpoint_max_bytes,
            max_entries=self.settings.workspace_max_files,
        )

    async def _restorable(self, run: Run) -> bool:
        """A resumed run this replica has no tree for, whose workspace is checkpointed: the
        executor rebuilds it from Postgres, so its source is not fetched again (a git remote may
        have moved on, a server path may not exist on this replica, and it would be replaced)."""
        if run.attempts <= 1 or Workspace(self.settings.data_dir, run.id).ready:
            return False
        return await self.store.workspace_state(run.id) is not None

    async def _with_archive(self, run: Run) -> Run:
        """Put an uploaded tar back into the run's workspace spec before the workspace exists."""
        spec = run.params.get("workspace")
        if not spec or spec.get("type") != "tar" or spec.get("value"):
            return run
        if Workspace(self.settings.data_dir, run.id).ready:
            return run  # resumed: the tree is already there
        archive = await self.store.load_archive(run.id)
        params = dict(run.params)
        params["workspace"] = {**spec, "value": base64.b64encode(archive or b"").decode()}
        return run.model_copy(update={"params": params})

    async def finalize(self, run: Run, outcome: Outcome) -> None:
        if not self.uses_workspace(run):
            return
        ws = Workspace(self.settings.data_dir, run.id, retention=self.settings.workspace_retention)
        if not ws.ready:
            return  # no tool ever touched it: nothing changed
        try:
            await self._measure(run, ws, outcome)
        except (QuarterdeckError, OSError) as exc:
            log.warning("run_results_failed", run_id=run.id, error=str(exc))
        finally:
            self.tools.cleanup(run, outcome.status.value)

    async def _measure(self, run: Run, ws: Workspace, outcome: Outcome) -> None:
        diff = await ws.diff()
        changed = await ws.changed_files()
        quality: dict[str, Any] = {}
        score = coverage = None
        runner = functools.partial(
            run_sandboxed, run_as=run_identity(run.id), limits=SandboxLimits(cpu_s=300)
        )
        if changed and outcome.status is not RunStatus.cancelled:
            try:
                result = await score_python(
                    ws.path,
                    changed,
                    runner=runner,
                    changed_line_numbers=diff_line_numbers(diff),
                )
                if result is not None:
                    score = result.score
                    quality["python"] = result.model_dump(exclude={"details"})
                    record_quality(run.agent_type, result)
            except QualityError as exc:
                quality["python_error"] = exc.detail
            try:
                cov = await measure_coverage(ws.path, runner=runner)
                if cov is not None:
                    coverage = cov.percent
                    quality["coverage"] = cov.model_dump()
                    record_coverage(run.agent_type, project_label(run.params.get("workspace")), cov)
            except QualityError as exc:
                quality["coverage_error"] = exc.detail
        await self.store.save_results(
            run.id,
            diff or None,
            changed,
            score,
            coverage,
            quality,
            {
                "changed_files": changed,
                "diff_bytes": len(diff.encode()),
                "quality_score": score,
                "coverage_percent": coverage,
                **{k: v for k, v in quality.items() if k.endswith("_error")},
            },
        )
