"""Claude Code's tool calls in the policy gate's vocabulary (pure).

The gate's rules are written once, against the native runtime's tools (``read_file``,
``write_file``, ``edit_file``, ``list_files``, ``search``, ``run_command``, ``http_fetch`` and
their input keys, :mod:`quarterdeck.security.policy.facts`). Translating Claude Code's calls into
that vocabulary, rather than writing a second rule set, means a rule such as "no ``rm -rf``
outside the workspace" or "no reading ``~/.ssh``" holds for both runners, and an operator's
rules file does too.

Three kinds of call:

- **Effects** (Bash, Write, Edit, MultiEdit, NotebookEdit, Read, NotebookRead, Glob, Grep, LS,
  WebFetch) are translated and judged by the gate like the native tool that does the same.
  Every text that would be written goes along (``content``; an edit's ``new``), so the gate's
  secrets-in-input rules see it.
- **Session bookkeeping** (:data:`SESSION_TOOLS`: the task list, plan mode, a subagent, a
  background shell's output) changes nothing outside the CLI's own session, and whatever a
  subagent or a background command does is itself a tool call that passes the hook. These are
  admitted without asking the gate (it does not know them and would refuse them).
- **Anything else** keeps its own name and input: MCP tools (``mcp__server__tool``),
  ``WebSearch``, ``Skill``, ``Cron*``, worktrees, tools of CLI versions not known here. The gate's
  built-in rule ``gate.unknown-tool`` denies a tool it does not know, so the default is
  *closed*: an operator opens one with an override in the rules file (``- id:
  gate.unknown-tool``, ``append: true``, ``unless: {tool: [mcp__github__get_issue]}``).

A call whose input does not have the shape its tool needs (say a Bash call without a string
``command``) is not translated either, so the same rule refuses it: judging a call by facts it
does not carry would let it through.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

SESSION_TOOLS = frozenset(
    {
        "Task",  # a subagent: each of its own tool calls passes the hook
        "Agent",
        "TodoWrite",
        "TaskCreate",
        "TaskGet",
        "TaskList",
        "TaskUpdate",
        "TaskOutput",  # reads what an already admitted background command printed
        "TaskStop",  # stops an already admitted background command
        "BashOutput",
        "KillShell",
        "KillBash",
        "ExitPlanMode",
        "EnterPlanMode",
    }
)
"""Claude Code tools whose only effect is on the CLI's own session (see the module doc)."""

_GLOB_CHARS = re.compile(r"[*?\[{]")


@dataclass(frozen=True, slots=True)
class GateCall:
    """What the gate judges for one Claude Code call; ``session_only``: admit without it."""

    tool: str
    input: dict[str, Any] = field(default_factory=dict)
    session_only: bool = False


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _path(value: Any, cwd: str) -> str | None:
    """A non-empty string path, made absolute against the call's ``cwd`` (Claude Code
    expands file paths already; a relative one would otherwise be judged against the
    workspace root instead of where the tool looks)."""
    text = _text(value)
    if not text:
        return None
    return text if text.startswith(("/", "~")) else posixpath.join(cwd, text)


def _glob_base(base: str, pattern: str) -> str:
    """The directory a glob pattern can reach: ``base`` joined with the pattern's literal
    leading directories (``../../etc/*.conf`` from ``/w`` lists ``/w/../../etc``, which the
    gate normalises to ``/etc``)."""
    literal: list[str] = []
    parts = pattern.split("/")
    for part in parts[:-1]:
        if _GLOB_CHARS.search(part):
            break
        literal.append(part)
    if not literal:
        return base
    prefix = "/".join(literal)
    if pattern.startswith("/"):
        return prefix or "/"
    return posixpath.join(base, prefix)


def _bash(i: Mapping[str, Any], cwd: str) -> dict[str, Any] | None:
    command = _text(i.get("command"))
    return {"command": command} if command else None


def _write(i: Mapping[str, Any], cwd: str) -> dict[str, Any] | None:
    path, content = _path(i.get("file_path"), cwd), _text(i.get("content"))
    return {"path": path, "content": content} if path and content is not None else None


def _edit(i: Mapping[str, Any], cwd: str) -> dict[str, Any] | None:
    path = _path(i.get("file_path"), cwd)
    if not path:
        return None
    old, new = _text(i.get("old_string")) or "", _text(i.get("new_string")) or ""
    return {"path": path, "old": old, "new": new}


def _multi_edit(i: Mapping[str, Any], cwd: str) -> dict[str, Any] | None:
    path, edits = _path(i.get("file_path"), cwd), i.get("edits")
    if not path or not isinstance(edits, list):
        return None
    olds = [_text(e.get("old_string")) or "" for e in edits if isinstance(e, Mapping)]
    news = [_text(e.get("new_string")) or "" for e in edits if isinstance(e, Mapping)]
    return {"path": path, "old": "\n".join(olds), "new": "\n".join(news)}


def _notebook_edit(i: Mapping[str, Any], cwd: str) -> dict[str, Any] | None:
    path = _path(i.get("notebook_path"), cwd)
    return {"path": path, "old": "", "new": _text(i.get("new_source")) or ""} if path else None


def _read(key: str) -> Callable[[Mapping[str, Any], str], dict[str, Any] | None]:
    def read(i: Mapping[str, Any], cwd: str) -> dict[str, Any] | None:
        path = _path(i.get(key), cwd)
        return {"path": path} if path else None

    return read


def _glob(i: Mapping[str, Any], cwd: str) -> dict[str, Any] | None:
    pattern = _text(i.get("pattern"))
    if not pattern:
        return None
    base = _path(i.get("path"), cwd) if i.get("path") is not None else cwd
    return {"path": _glob_base(base, pattern)} if base else None


def _grep(i: Mapping[str, Any], cwd: str) -> dict[str, Any] | None:
    pattern = _text(i.get("pattern"))
    path = _path(i.get("path"), cwd) if i.get("path") is not None else cwd
    if not pattern or not path:
        return None
    found: dict[str, Any] = {"pattern": pattern, "path": path}
    if _text(i.get("glob")):
        found["glob"] = i["glob"]
    return found


def _ls(i: Mapping[str, Any], cwd: str) -> dict[str, Any] | None:
    path = _path(i.get("path"), cwd) if i.get("path") is not None else cwd
    return {"path": path} if path else None


def _web_fetch(i: Mapping[str, Any], cwd: str) -> dict[str, Any] | None:
    url = _text(i.get("url"))
    return {"url": url} if url else None


_EFFECTS: dict[str, tuple[str, Callable[[Mapping[str, Any], str], dict[str, Any] | None]]] = {
    "Bash": ("run_command", _bash),
    "Write": ("write_file", _write),
    "Edit": ("edit_file", _edit),
    "MultiEdit": ("edit_file", _multi_edit),
    "NotebookEdit": ("edit_file", _notebook_edit),
    "Read": ("read_file", _read("file_path")),
    "NotebookRead": ("read_file", _read("notebook_path")),
    "Glob": ("list_files", _glob),
    "Grep": ("search", _grep),
    "LS": ("list_files", _ls),
    "WebFetch": ("http_fetch", _web_fetch),
}
"""Claude Code tool -> (gate tool, input translation); None from a translation: wrong shape."""


def to_gate(tool: str, tool_input: Mapping[str, Any], *, cwd: str) -> GateCall:
    """The call the gate judges for Claude Code's ``tool`` with ``tool_input``, run in
    ``cwd`` (the hook input's working directory, absolute)."""
    if tool in SESSION_TOOLS:
        return GateCall(tool, dict(tool_input), session_only=True)
    effect = _EFFECTS.get(tool)
    if effect is not None:
        name, translate = effect
        translated = translate(tool_input, cwd)
        if translated is not None:
            return GateCall(name, translated)
    return GateCall(tool, dict(tool_input))
