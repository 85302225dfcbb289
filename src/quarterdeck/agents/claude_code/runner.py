"""One claude-code run: the real CLI, headless in the run's sandbox, with Quarterdeck around it.

:class:`ClaudeCodeAgent` is the executor's :class:`~quarterdeck.runs.executor.ExternalAgent`
for agent types with ``runner: claude-code``. Per attempt it

1. restores the workspace (the transcript rides in it, under ``.quarterdeck-agent/``) when the
   run resumes, and records the base checkpoint when it starts;
2. mints a gateway token for this attempt only (``security/auth/run_tokens.py``): the gateway
   meters, budgets and audits every model call against the run, and refuses the token once the
   run ends or another attempt takes it over;
3. serves two Unix sockets bound into the sandbox: the gateway bridge (``bridge.py``) and the
   policy gate (``gate.py``) that the CLI's fail-closed ``PreToolUse`` hook asks before every
   tool call;
4. starts ``claude -p`` (``command.py``) and turns its stream-json into run events
   (``stream.py``); after each batch of tool results the workspace delta (transcript included)
   is checkpointed with them, fenced by the attempt, so a resume anywhere continues with
   ``--resume`` from the last completed tool batch;
5. when it exits, judges the end from its result and takes turns, tokens and cost from the
   gateway's metering (``metering.py``: the CLI's own ``total_cost_usd`` is kept beside it; a
   mismatch is an event).

What the agent can write and reach (its HOME and config dir, the gate's socket) cannot widen
what it may do: see ``command.py`` and ``gate.py``. The runner's share: it binds an empty
read-only ``/etc/claude-code`` (no managed settings can be planted), audits a contested call's
outcome whatever the gate recorded, and records gate requests that never became a tool result
(``gate_unanswered``).

Cancellation (a cancel request, or a draining worker releasing the run) kills the CLI's whole
process group at once; a drain also checkpoints the workspace first so the run resumes
elsewhere without losing a completed tool call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio
import structlog

from quarterdeck.agents.checkpoint import WorkspaceCheckpoints
from quarterdeck.agents.claude_code import command, metering, stream
from quarterdeck.agents.claude_code.bridge import GatewayBridge
from quarterdeck.agents.claude_code.gate import HOOK_PATH, GateServer
from quarterdeck.agents.guard import Guard
from quarterdeck.agents.sandbox import AGENT_STATE_DIRNAME, SandboxLimits, prepare_dir
from quarterdeck.agents.sandbox import run_identity as sandbox_identity
from quarterdeck.agents.sandbox.session import Bridge, Mount, SandboxProcess, open_sandboxed
from quarterdeck.agents.templates import AgentType
from quarterdeck.exceptions import Fenced
from quarterdeck.gateway.models import UsageRow
from quarterdeck.runs.executor import Outcome, RunPlan
from quarterdeck.runs.models import Run, RunStatus
from quarterdeck.runs.store_protocol import RunStore
from quarterdeck.tracing import carrier_of_current

log = structlog.get_logger(__name__)

TRANSCRIPT_TAIL_BYTES = 4 * 1024 * 1024
"""How much of the transcript's end is searched for the tool results just printed."""
TRANSCRIPT_WAIT_S = 3.0
"""How long a checkpoint waits for the transcript to catch up with the stream."""


def _transcript_has(state: Path, session: str, needles: list[str]) -> bool:
    found = command.transcript(state, session)
    if found is None:
        return False
    try:
        with found.open("rb") as fh:  # only the end: a long run's transcript is megabytes
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - TRANSCRIPT_TAIL_BYTES))
            tail = fh.read()
    except OSError:
        return False
    # A result names its call as "tool_use_id" (the call itself has only "id"); the CLI writes
    # its transcript with JSON.stringify, so without spaces.
    return all(f'"tool_use_id":"{n}"'.encode() in tail for n in needles)


class RunTokenMinter(Protocol):
    async def mint(self, run_id: str, attempt: int) -> str: ...


class RunUsage(Protocol):
    async def run_usage(self, run_id: str) -> UsageRow: ...


@dataclass(frozen=True)
class ClaudeCodeConfig:
    cli: Path
    """The CLI's binary, symlinks resolved (its npm package directory is bound read-only)."""
    gateway: tuple[str, int]
    hook_timeout_s: float


class ClaudeCodeAgent:
    def __init__(
        self,
        config: ClaudeCodeConfig,
        agent: AgentType,
        store: RunStore,
        tokens: RunTokenMinter,
        usage: RunUsage,
        checkpoints: WorkspaceCheckpoints,
        guard: Guard | None,
    ) -> None:
        self.config = config
        self.agent = agent
        self.store = store
        self.tokens = tokens
        self.usage = usage
        self.checkpoints = checkpoints
        self.guard = guard
        self.state = Path()
        self.session = ""
        self.captured = 0
        """The last workspace capture's number: one per checkpoint, never reused (several tool
        results can arrive in one turn, and the transcript changes with each)."""
        self.results: set[str] = set()
        """The ``tool_use_id`` of every tool result the CLI printed in this attempt."""

    async def execute(self, run: Run, plan: RunPlan) -> Outcome:
        ws = self.checkpoints.ws.path
        state = self.state = ws / AGENT_STATE_DIRNAME
        session = self.session = command.session_id(run.id)
        resume = await self._prepare(run, ws, state, session)
        token = await self.tokens.mint(run.id, run.attempts)
        sockets = Path(tempfile.mkdtemp(prefix="qd-cc-"))  # short: a socket path has 108 bytes
        os.chmod(sockets, 0o711)
        # The gate answers (refusing an approval nobody gave) before the hook would give up.
        answer_s = max(1.0, self.config.hook_timeout_s - 5)
        gate = GateServer(self.guard, run, ws, sockets / "gate.sock", answer_timeout_s=answer_s)
        bridge = GatewayBridge(sockets / "gateway.sock", *self.config.gateway)
        try:
            await gate.start()
            await bridge.start()
            return await self._run(run, plan, ws, state, session, resume, token, gate, sockets)
        finally:
            with anyio.CancelScope(shield=True):
                await gate.close()
                await bridge.close()
                shutil.rmtree(sockets, ignore_errors=True)

    async def _prepare(self, run: Run, ws: Path, state: Path, session: str) -> bool:
        """Restore a resumed run's workspace (and with it the transcript), record the base of
        a new one; True when there is a session to resume."""
        if run.attempts > 1:
            saved = await self.store.workspace_state(run.id)
            if saved is not None:
                self.captured = saved.turn
                await self.checkpoints.restore(
                    saved, functools.partial(self.store.workspace_blobs, run.id)
                )
        for sub in ("home", "claude"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(prepare_dir, state, sandbox_identity(run.id))
        if not self.checkpoints.started:
            base = await self.checkpoints.capture()
            await self.store.save_workspace_base(run.id, base, epoch=run.attempts)
        return run.attempts > 1 and command.place_transcript(state, session, ws)

    def _argv(self, run: Run, plan: RunPlan, session: str, resume: bool) -> list[str]:
        agent = self.agent
        python = os.path.realpath(sys.executable)
        doc = command.settings(
            python=python, hook_timeout_s=self.config.hook_timeout_s, deny=agent.denied_tools
        )
        return command.argv(
            str(self.config.cli),
            prompt=command.RESUME_PROMPT if resume else run.prompt,
            model=run.model,
            session=session,
            resume=resume,
            limits=command.Limits(plan.max_turns, plan.budget_usd),
            settings_json=json.dumps(doc),
            system_prompt=plan.system_prompt,
            tools=agent.claude_tools,
            mcp_config=agent.mcp_config,
        )

    async def _run(
        self,
        run: Run,
        plan: RunPlan,
        ws: Path,
        state: Path,
        session: str,
        resume: bool,
        token: str,
        gate: GateServer,
        sockets: Path,
    ) -> Outcome:
        cli = self.config.cli
        sealed = sockets / "managed"  # empty: no managed settings the agent could plant
        sealed.mkdir(mode=0o755, exist_ok=True)
        mounts = [
            Mount(cli.parent.parent, str(cli.parent.parent)),  # the npm package (binary + vendor)
            Mount(HOOK_PATH, command.HOOK_PATH),
            Mount(sockets / "gate.sock", command.GATE_SOCKET, writable=True),
            Mount(sealed, command.MANAGED_SETTINGS_DIR),
        ]
        bridges = [Bridge(command.GATEWAY_PORT, sockets / "gateway.sock")]
        limits = SandboxLimits(
            cpu_s=int(plan.timeout_s) + 60, address_space=2**40, nproc=512, open_files=4096
        )
        deadline = time.monotonic() + max(
            0.0,
            plan.timeout_s - (time.time() - run.started_at.timestamp())
            if run.started_at
            else plan.timeout_s,
        )
        seen = stream.Transcript(turns=await self._turns_so_far(run))
        info = {"agent": "claude-code", "session_id": session, "resumed": resume}
        await self._events(run, [("agent_started", None, {**info, "attempt": run.attempts})])
        timed_out = False
        async with open_sandboxed(
            self._argv(run, plan, session, resume),
            ws,
            env=command.environment(
                state=state, token=token, traceparent=carrier_of_current().get("traceparent")
            ),
            run_as=sandbox_identity(run.id),
            limits=limits,
            mounts=mounts,
            bridges=bridges,
        ) as proc:
            try:
                timed_out = await self._follow(run, proc, seen, gate, deadline)
            except BaseException as exc:
                # Cancelled (a cancel request, or a drain releasing the run), fenced, or a bug:
                # the CLI stops now; a drain's last completed tool results are already stored,
                # and what the CLI wrote since is checkpointed so the resume finds it.
                with anyio.CancelScope(shield=True):
                    await proc.kill()
                    if not isinstance(exc, Fenced):
                        with contextlib.suppress(Exception):
                            await self._checkpoint(run, [])
                        with contextlib.suppress(Exception):  # its spend so far, on the run
                            usage = await self._metered(run, seen, wait_s=0.0)
                            await self.store.record_usage(run.id, usage, epoch=run.attempts)
                raise
            if timed_out:
                await proc.kill()
            returncode = await proc.wait()
            stderr = proc.stderr_tail()
        await self._unanswered(run, gate)
        metered = await self._metered(run, seen)
        if timed_out:
            return Outcome(
                RunStatus.timed_out,
                result=seen.last_text or None,
                error=f"run exceeded its wall-clock timeout of {plan.timeout_s:g}s",
                error_type="timeout",
                metered=metered,
            )
        verdict = stream.judge(seen.result, returncode, stderr)
        return Outcome(
            verdict.status,
            result=verdict.result,
            error=verdict.error,
            error_type=verdict.error_type,
            metered=metered,
        )

    async def _turns_so_far(self, run: Run) -> int:
        """Turns recorded by earlier attempts, so a resumed run keeps numbering them."""
        if run.attempts <= 1:
            return 0
        events = await self.store.events(run.id, 0, 100_000)
        return max((e.turn or 0 for e in events if e.type == "turn"), default=0)

    async def _follow(
        self,
        run: Run,
        proc: SandboxProcess,
        seen: stream.Transcript,
        gate: GateServer,
        deadline: float,
    ) -> bool:
        """Read the CLI's stream until it ends; True if the run's deadline passed first."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), timeout=left)
            except TimeoutError:
                return True
            if not line:
                return False
            msg = stream.parse(line)
            if msg is None:
                continue
            kind = msg.get("type")
            if kind == "system" and msg.get("subtype") == "init":
                seen.session = msg.get("session_id")
                info = {
                    k: msg.get(k)
                    for k in ("model", "claude_code_version", "permissionMode", "session_id")
                }
                await self._events(run, [("agent_init", None, info)])
            elif kind == "assistant":
                event = seen.assistant(msg)
                if event is not None:
                    await self._events(run, [event])
            elif kind == "user":
                calls = seen.tool_results(msg)
                self.results.update(c["tool_use_id"] for c in calls)
                if calls:
                    events: list[tuple[str, int | None, dict[str, Any]]] = [
                        ("tool_call", seen.turns, self._audited(run, c, gate)) for c in calls
                    ]
                    await self._transcribed([c["tool_use_id"] for c in calls])
                    await self._checkpoint(run, events)
            elif kind == "result":
                seen.result = msg
                await self._events(run, [("agent_result", None, stream.result_event(msg))])

    async def _transcribed(self, tool_use_ids: list[str]) -> None:
        """Wait (briefly) until the session transcript holds these tool results: the CLI
        prints a result on its stream before it appends it to the transcript, and a checkpoint
        taken in between would resume without the result and have the model redo the call."""
        deadline = time.monotonic() + TRANSCRIPT_WAIT_S
        while True:
            found = await asyncio.to_thread(_transcript_has, self.state, self.session, tool_use_ids)
            if found or time.monotonic() >= deadline:
                if not found:
                    log.warning("claude_code.transcript_behind", tool_use_ids=tool_use_ids)
                return
            await asyncio.sleep(0.02)

    def _audited(self, run: Run, call: dict[str, Any], gate: GateServer) -> dict[str, Any]:
        """A tool call's event with the gate's decision; audited like a native call (a call
        the gate refused was audited by the gate already)."""
        decision = gate.decisions.get(call["tool_use_id"])
        if decision is not None:
            call["policy"] = decision
        # Denied, rejected, expired, unrecorded: audited by the gate. A contested id (asked
        # twice, so once not by the CLI's hook) is audited here whatever the gate recorded.
        refused = call["tool_use_id"] in gate.refusals
        if call["tool_use_id"] in gate.contested:
            call["gate_contested"] = True
            refused = False
        if self.guard is not None and self.guard.trail is not None and not refused:
            self.guard.trail.tool_call(run, dict(call))
        return call

    async def _unanswered(self, run: Run, gate: GateServer) -> None:
        """Gate requests whose call never produced a tool result: asked by something other than
        the CLI's hook (any process in the sandbox can reach the socket; see ``gate.py``), or
        cut off when the CLI stopped. Recorded, so such records are attributed."""
        unanswered = sorted(gate.asked - self.results)
        if unanswered or gate.contested:
            data = {"tool_use_ids": unanswered[:100], "contested": sorted(gate.contested)[:100]}
            log.warning("claude_code.gate_unanswered", run_id=run.id, **data)
            await self._events(run, [("gate_unanswered", None, data)])

    async def _events(self, run: Run, events: list[tuple[str, int | None, dict[str, Any]]]) -> None:
        await self.store.append_events(run.id, events, epoch=run.attempts)

    async def _checkpoint(
        self, run: Run, events: list[tuple[str, int | None, dict[str, Any]]]
    ) -> None:
        """The tool calls and what they (and the transcript) changed, in one fenced write."""
        delta = await self.checkpoints.capture()
        self.captured += 1
        await self.store.save_tool_results(run.id, self.captured, events, delta, epoch=run.attempts)

    async def _metered(
        self, run: Run, seen: stream.Transcript, wait_s: float = metering.METER_WAIT_S
    ) -> dict[str, Any]:
        """The run's totals from the gateway once its last calls are recorded (``wait_s`` 0:
        what is recorded now), with their ``metered`` (and any ``cost_mismatch``) event."""
        read = functools.partial(self.usage.run_usage, run.id)
        row = await metering.settled_usage(read, len(seen.message_ids), wait_s)
        cli_cost = (seen.result or {}).get("total_cost_usd")
        metered, events = metering.reconcile(row, seen.turns, cli_cost)
        await self._events(run, events)
        return metered
