"""The ``claude -p`` command line, settings and environment of one run: pure functions.

Everything the CLI is told is decided here, so this module answers "what can Claude Code do in a
run?" and its unit tests pin it down:

- repository settings are ignored (``--setting-sources ""``: a checked-out repository's
  ``.claude/settings.json`` hooks and ``.mcp.json`` servers would otherwise run unasked), and
  MCP servers are only the agent type's own (``--strict-mcp-config``);
- ``--settings`` carries the fail-closed ``PreToolUse`` hook (every tool call goes to
  Quarterdeck's policy gate first) and the agent type's deny rules, which the CLI applies
  whatever the hook says;
- ``--permission-mode dontAsk`` and no allow rules: nothing is ever prompted (nobody is there
  to answer), and a call runs only when the gate's hook answered allow;
- ``--session-id`` is derived from the run, so the gateway joins each model call to the run
  (``X-Claude-Code-Session-Id``) and a resume on any replica names the same session;
- ``--max-turns`` and ``--max-budget-usd`` are soft second nets; the hard budget is the
  gateway's reservation;
- the prompt comes last, after ``--``, so no prompt is ever read as a flag.

The environment holds nothing of the worker's: the gateway's loopback bridge as
``ANTHROPIC_BASE_URL``, a token minted for this run only, a private ``HOME`` and
``CLAUDE_CONFIG_DIR`` inside the run's state directory, and the switches that keep the CLI from
calling anywhere else.

``HOME`` and ``CLAUDE_CONFIG_DIR`` are the agent's to write (its Bash runs as the same uid in the
same sandbox; the state directory rides in the workspace), so nothing the CLI reads from them
may widen what it does. Measured with CLI 2.1.197 under exactly these flags, on a first attempt
and on ``--resume``, with all of these planted (tests/integration/test_claude_code_hook.py keeps
it so): ``settings.json`` in the config dir and ``~/.claude`` (``disableAllHooks``, allow rules,
``defaultMode: bypassPermissions``, a PreToolUse hook of its own), ``remote-settings.json`` and
``managed-settings.json``/``managed-settings.d`` there, the workspace's ``.claude/settings*.json``,
``.claude.json`` (``projects[cwd].allowedTools``, ``hasTrustDialogAccepted``, ``mcpServers``
global and per project, ``bypassPermissionsModeAccepted``), ``agents/``, ``skills/``,
``commands/``, and ``permission-mode``/``agent-setting`` entries appended to the session's
transcript. Every time the gate's hook was still asked, the planted hook never ran, no MCP
server, agent, skill or command was loaded, and the mode stayed ``dontAsk``. With
``--setting-sources ""`` the CLI loads settings only from ``--settings`` and the managed path
(``/etc/claude-code``, read-only in the sandbox); ``.claude.json`` is its state, not its
permissions. Managed settings are the exception the CLI always reads: see
:data:`MANAGED_SETTINGS_DIR`. What the agent can change there is its own transcript: what the model remembers,
never what a call may do (every call still passes the hook).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quarterdeck.agents.claude_code.hook import hook_settings

GATEWAY_PORT = 8787
"""The loopback port inside the sandbox that is bridged to the gateway."""
INSIDE_DIR = "/run/agent"
"""Where the hook and the gate socket appear inside the sandbox (/run/quarterdeck is the
sandbox's own: its bridge sockets)."""
HOOK_PATH = f"{INSIDE_DIR}/hook.py"
GATE_SOCKET = f"{INSIDE_DIR}/gate.sock"
MANAGED_SETTINGS_DIR = "/etc/claude-code"
"""Where the CLI reads managed (policy) settings on Linux, whatever ``--setting-sources`` says;
they can turn hooks off (``disableAllHooks``, ``allowManagedHooksOnly``). The runner binds an
empty directory there read-only: in the not-root sandbox the agent owns the tmpfs ``/etc`` and
could otherwise create it (2.1.197 reads it only at start, so a later attempt would see it if
the sandbox's ``/etc`` ever outlived one)."""
_NAMESPACE = uuid.UUID("6f1d1b4e-6c3e-4f0e-9a57-0d7b6b1e2c41")
RESUME_PROMPT = (
    "Quarterdeck resumed this run on another worker after the previous one stopped. Check the "
    "state of your working directory, then continue the task where you left off."
)


def session_id(run_id: str) -> str:
    """The run's Claude Code session: stable across attempts, so ``--resume`` finds it."""
    return str(uuid.uuid5(_NAMESPACE, run_id))


def project_dir_name(cwd: Path | str) -> str:
    """Where the CLI keeps a working directory's transcripts under ``projects/`` (every
    character but letters and digits becomes ``-``; checked against CLI 2.1.197)."""
    return re.sub(r"[^A-Za-z0-9]", "-", str(cwd))


@dataclass(frozen=True)
class Limits:
    max_turns: int
    budget_usd: float | None


def settings(*, python: str, hook_timeout_s: float, deny: tuple[str, ...]) -> dict[str, Any]:
    """The ``--settings`` document: the gate's fail-closed hook for every tool (matcher ``*``),
    and the agent type's deny rules, which the CLI applies whatever the hook says.

    No allow rules, ever: under ``dontAsk`` a call then runs only when the hook answered allow,
    so a hook that cannot even start (its interpreter missing) denies instead of letting an
    allow rule run the call unasked (seen with CLI 2.1.197: ``rm -rf`` ran under an allow rule
    ``Bash`` when the hook could not start)."""
    doc = hook_settings(python, HOOK_PATH, GATE_SOCKET, hook_timeout_s)
    doc["permissions"] = {"deny": list(deny)}
    doc["cleanupPeriodDays"] = 3650  # the transcript is the run's: never expire it mid-run
    return doc


def argv(
    cli: str,
    *,
    prompt: str,
    model: str,
    session: str,
    resume: bool,
    limits: Limits,
    settings_json: str,
    system_prompt: str | None,
    tools: tuple[str, ...] | None,
    mcp_config: dict[str, Any] | None,
) -> list[str]:
    out = [cli, "-p", "--output-format", "stream-json", "--verbose"]
    out += ["--model", model, "--setting-sources", "", "--settings", settings_json]
    out += ["--permission-mode", "dontAsk", "--max-turns", str(limits.max_turns)]
    out += ["--resume", session] if resume else ["--session-id", session]
    if limits.budget_usd is not None:
        out += ["--max-budget-usd", f"{limits.budget_usd:g}"]
    if system_prompt:
        out += ["--append-system-prompt", system_prompt]
    if tools is not None:
        out += ["--tools", ",".join(tools) if tools else ""]
    out += ["--strict-mcp-config"]
    if mcp_config:
        out += ["--mcp-config", json.dumps(mcp_config)]
    # Last, after "--": a prompt is the submitter's text, and one that starts with "--" must
    # never be read as a flag (a prompt "--dangerously-skip-permissions" would be one).
    return [*out, "--", prompt]


def environment(*, state: Path, token: str, traceparent: str | None = None) -> dict[str, str]:
    """The CLI's whole environment on top of the sandbox's minimal one. ``traceparent``: the
    attempt's span, sent on every model call (``ANTHROPIC_CUSTOM_HEADERS``), so the gateway's
    ``chat`` spans of this run join the run's trace without a database read per call."""
    extra = {"ANTHROPIC_CUSTOM_HEADERS": f"traceparent: {traceparent}"} if traceparent else {}
    return {
        **extra,
        "HOME": str(state / "home"),
        "CLAUDE_CONFIG_DIR": str(state / "claude"),
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{GATEWAY_PORT}",
        "ANTHROPIC_AUTH_TOKEN": token,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_ENTRYPOINT": "quarterdeck",
    }


def transcript(state: Path, session: str) -> Path | None:
    """The session's transcript anywhere under the state dir (the workspace path, and so its
    project directory name, can differ on the replica that resumes it)."""
    projects = state / "claude" / "projects"
    if not projects.is_dir():
        return None
    found = sorted(projects.glob(f"*/{session}.jsonl"))
    return found[0] if found else None


def place_transcript(state: Path, session: str, cwd: Path) -> bool:
    """Make the session resumable from ``cwd``: its transcript moved to ``cwd``'s project
    directory if it was written under another. False when there is no transcript."""
    found = transcript(state, session)
    if found is None:
        return False
    wanted = state / "claude" / "projects" / project_dir_name(cwd) / found.name
    if found != wanted:
        wanted.parent.mkdir(parents=True, exist_ok=True)
        found.replace(wanted)
    return True
