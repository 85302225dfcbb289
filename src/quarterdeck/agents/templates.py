"""Agent types: named run templates (prompt, tools, limits) that a run selects by ``agent_type``.

Three are built in (``coder``, ``reviewer``, ``test-writer``). Operators add or adjust types in
the YAML config under ``agent_types``; an entry whose name matches a built-in is a *partial*
override (only the fields it sets change), so tightening ``coder``'s budget does not mean copying
its whole system prompt. A new type must at least set ``system_prompt``; its ``tools`` default to
the read-only set, so a forgotten ``tools:`` line never hands a model write or shell access.
Likewise ``network`` defaults to ``none``: a type reaches the network only when its entry says
``network: egress``, and then only through the egress proxy (:mod:`quarterdeck.agents.egress`).

Each type also chooses how its model calls are made: ``max_tokens`` (default 4096),
``thinking_budget`` (extended thinking's token budget, at least 1024 and below ``max_tokens``;
default off) and ``cache_ttl`` (prompt caching of the tools, system prompt and conversation:
``5m`` by default, ``1h`` for types whose turns are more than five minutes apart, ``off``).

Everything is validated when the catalog is built (at startup), and every problem is reported as
``agent_types.<name>.<field>`` so the operator can find the line in their YAML.
"""

from __future__ import annotations

import builtins
import json
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from quarterdeck.exceptions import ConfigError, ValidationFailed

if TYPE_CHECKING:
    from quarterdeck.config import Settings

#: Every tool the agent runtime implements, in a stable order (the order tools are offered in).
KNOWN_TOOLS: tuple[str, ...] = (
    "read_file",
    "write_file",
    "edit_file",
    "list_files",
    "search",
    "run_command",
    "http_fetch",
)
READ_ONLY_TOOLS: tuple[str, ...] = ("read_file", "list_files", "search")
WRITE_TOOLS: tuple[str, ...] = (
    "read_file",
    "write_file",
    "edit_file",
    "list_files",
    "search",
    "run_command",
)

#: Same shape as a run's ``agent_type`` field, so every catalog entry is selectable via the API.
_NAME = re.compile(r"^[a-z][a-z0-9_\-]{0,62}$")


class AgentType(BaseModel):
    """One run template. ``max_turns``/``timeout_s`` are ceilings a run request may lower."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME.pattern)
    description: str = Field(default="", max_length=1000)
    system_prompt: str = Field(min_length=1, max_length=100_000)
    tools: tuple[str, ...] = READ_ONLY_TOOLS
    max_turns: int = Field(default=50, ge=1, le=10_000)
    budget_usd: float | None = Field(default=None, gt=0)
    timeout_s: float = Field(default=3600.0, gt=0, le=7 * 86400)
    model: str | None = Field(default=None, min_length=1, max_length=128)
    max_tokens: int = Field(default=4096, ge=1, le=128_000)
    thinking_budget: int | None = Field(
        default=None,
        ge=1024,
        description="Extended thinking's token budget per call (the API's minimum is 1024; it "
        "must be below max_tokens); unset: no extended thinking.",
    )
    cache_ttl: Literal["5m", "1h", "off"] = Field(
        default="5m",
        description="Prompt caching: how long the cached prefix (tools, system prompt, "
        "conversation) lives after its last use; off sends no breakpoints.",
    )
    runner: Literal["native", "claude-code"] = Field(
        default="native",
        description="native: Quarterdeck's own tool loop over the Messages API; claude-code: the "
        "real claude CLI, headless in the run's sandbox, its model calls through the gateway "
        "(system_prompt is appended to Claude Code's own).",
    )
    claude_tools: tuple[str, ...] | None = Field(
        default=None,
        description="claude-code only: the built-in tools the CLI offers (--tools, e.g. Bash, "
        "Read, Edit, Write, Glob, Grep); unset: its defaults. Every call of any of them still "
        "passes the policy gate.",
    )
    denied_tools: tuple[str, ...] = Field(
        default=(),
        description="claude-code only: permission deny rules, evaluated by the CLI whatever the "
        "gate says (a static second net).",
    )
    mcp_config: dict[str, Any] | None = Field(
        default=None,
        description="claude-code only: an MCP config ({'mcpServers': {...}}) passed with "
        "--strict-mcp-config; unset: no MCP servers.",
    )
    network: Literal["none", "egress"] = Field(
        default="none",
        description="none: commands have no network at all; egress: only through Quarterdeck's "
        "egress proxy, to hosts on egress_allowed_hosts that the policy gate allows, every "
        "connection audited.",
    )

    @field_validator("tools", mode="before")
    @classmethod
    def _known_tools(cls, value: Any) -> tuple[str, ...]:
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ValueError("must be a list of tool names")
        unknown = [t for t in value if t not in KNOWN_TOOLS]
        if unknown:
            raise ValueError(
                f"unknown tool(s) {', '.join(map(repr, unknown))}; known: {', '.join(KNOWN_TOOLS)}"
            )
        # Deduplicate and put in canonical order so equal configs compare (and render) equal.
        return tuple(t for t in KNOWN_TOOLS if t in value)

    @field_validator("cache_ttl", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare ``off`` (or ``false``/``no``) as the boolean False.
        return "off" if value is False else value

    @field_validator("thinking_budget")
    @classmethod
    def _below_max_tokens(cls, value: int | None, info: ValidationInfo) -> int | None:
        max_tokens = info.data.get("max_tokens")
        if value is not None and isinstance(max_tokens, int) and value >= max_tokens:
            raise ValueError(
                f"must be below max_tokens ({max_tokens}): thinking tokens count toward it"
            )
        return value

    @field_validator("system_prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


_CODER_PROMPT = """\
You are a careful software engineer working in a project checkout (your current directory).
Complete the task you are given by reading the relevant code, making focused changes, and
verifying them: run the project's tests or a quick check with run_command before you finish.
Prefer small, reviewable edits that follow the existing style. Do not touch files unrelated to
the task. When you are done, reply with a short summary of what you changed and how you verified
it, including anything you could not finish."""

_REVIEWER_PROMPT = """\
You are a code reviewer. Review the change described in the task against the code in your
current directory, which you can read but not modify: do not attempt edits. Look for bugs,
missing error handling, security problems, unclear code and missing tests. Report your findings
as a list, most severe first; for each give the file and line, what is wrong, why it matters and
a suggested fix. If you find nothing significant, say so plainly."""

_TEST_WRITER_PROMPT = """\
You are a test engineer. Write automated tests for the code named in the task, in the project's
existing test framework and layout (look at the tests that already exist first). Cover normal
behaviour, edge cases and error paths; keep each test small and independent. Run the tests with
run_command and iterate until they pass, changing production code only to fix a real bug you
found (and say so). Finish with a summary of what the new tests cover and their results."""

_CLAUDE_CODE_PROMPT = """\
You are running unattended under Quarterdeck: nobody will answer questions, so make reasonable
choices and finish the task. Work only inside your current directory. A tool call may be refused
by policy; read the reason and choose another way. End with a short summary of what you changed
and how you verified it."""

_BUILTINS: dict[str, dict[str, Any]] = {
    "coder": {
        "description": "Implements a change: reads, edits and runs code in the workspace.",
        "system_prompt": _CODER_PROMPT,
        "tools": WRITE_TOOLS,
    },
    "reviewer": {
        "description": "Reviews code and reports findings; read-only, makes no edits.",
        "system_prompt": _REVIEWER_PROMPT,
        "tools": READ_ONLY_TOOLS,
    },
    "test-writer": {
        "description": "Writes tests for existing code and runs them until they pass.",
        "system_prompt": _TEST_WRITER_PROMPT,
        "tools": WRITE_TOOLS,
    },
    "claude-code": {
        "description": "The real Claude Code CLI, headless in the run's sandbox: every model "
        "call through the gateway, every tool call through the policy gate.",
        "system_prompt": _CLAUDE_CODE_PROMPT,
        "runner": "claude-code",
        "tools": WRITE_TOOLS,
    },
}

BUILTIN_NAMES: frozenset[str] = frozenset(_BUILTINS)


def _errors_for(name: str, exc: ValidationError) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for err in exc.errors():
        loc = err["loc"]
        field = str(loc[0]) if loc else "settings"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown field; allowed: {', '.join(sorted(AgentType.model_fields))}"
        out.append((f"agent_types.{name}.{field}", msg))
    return out


Availability = Callable[[AgentType], str | None]
"""Whether this process can run an agent type now: None, or why not (with how to fix it)."""


class AgentCatalog:
    """The agent types this deployment offers; immutable once built.

    ``availability`` answers whether a type can run here (a ``claude-code`` type needs its CLI
    and the bwrap sandbox). It is asked only when a type is listed or selected, never when the
    catalog is built: probing runs a binary, and many catalogs are built (every runtime, the
    OpenAPI document) that never list a type."""

    def __init__(
        self, types: Mapping[str, AgentType], availability: Availability | None = None
    ) -> None:
        self._types = dict(sorted(types.items()))
        self.availability = availability
        self._versions: dict[tuple[str, str], str] = {}  # a few entries: types x canaries

    @classmethod
    def defaults(cls, *, max_turns: int = 50, timeout_s: float = 3600.0) -> AgentCatalog:
        return cls(
            {
                name: AgentType(name=name, max_turns=max_turns, timeout_s=timeout_s, **fields)
                for name, fields in _BUILTINS.items()
            }
        )

    @classmethod
    def from_settings(cls, settings: Settings, *, need_sandbox: bool = True) -> AgentCatalog:
        """Built-ins (using the global ``max_turns``/``run_timeout``) with YAML entries merged over.

        Availability is the Claude Code probe (:mod:`quarterdeck.agents.claude_code.install`);
        ``need_sandbox`` is False in a process that runs no workers, where only the CLI itself
        is checked (the worker checks the sandbox before it starts the run).

        ``model`` stays unset unless a type sets it, so a run falls back to the deployment's
        default model (``settings.model``) rather than a copy of it frozen at startup.

        Raises :class:`ConfigError` listing every bad entry, and also when
        ``default_agent_type`` names a type that does not exist, because every run submitted
        without an ``agent_type`` would then fail.
        """
        from quarterdeck.agents.claude_code.install import ClaudeCodeProbe

        catalog = cls.from_mapping(
            settings.agent_types,
            max_turns=settings.max_turns,
            timeout_s=settings.run_timeout,
            default_agent_type=settings.default_agent_type,
        )
        return cls(catalog._types, ClaudeCodeProbe(settings, need_sandbox=need_sandbox))

    @classmethod
    def from_mapping(
        cls,
        overrides: Mapping[str, Any],
        *,
        max_turns: int = 50,
        timeout_s: float = 3600.0,
        default_agent_type: str | None = None,
    ) -> AgentCatalog:
        base: dict[str, Any] = {"max_turns": max_turns, "timeout_s": timeout_s}
        types = dict(cls.defaults(max_turns=max_turns, timeout_s=timeout_s)._types)
        errors: list[tuple[str, str]] = []
        for name, raw in overrides.items():
            name = str(name)
            if not _NAME.match(name):
                errors.append(
                    (
                        f"agent_types.{name}",
                        "name must be lowercase letters, digits, '-' or '_', starting with a letter",
                    )
                )
                continue
            if raw is None:
                raw = {}
            if not isinstance(raw, Mapping):
                errors.append((f"agent_types.{name}", "must be a mapping of fields"))
                continue
            fields = dict(raw)
            if "name" in fields and fields.pop("name") != name:
                errors.append((f"agent_types.{name}.name", "must match the key it is listed under"))
                continue
            existing = types.get(name)
            if existing is not None:
                merged = existing.model_dump() | fields
            else:
                if "system_prompt" not in fields:
                    errors.append(
                        (f"agent_types.{name}.system_prompt", "required for a new agent type")
                    )
                    continue
                merged = base | fields
            merged["name"] = name
            try:
                types[name] = AgentType.model_validate(merged)
            except ValidationError as exc:
                errors.extend(_errors_for(name, exc))
        if not errors and default_agent_type is not None and default_agent_type not in types:
            errors.append(
                (
                    "QUARTERDECK_DEFAULT_AGENT_TYPE",
                    f"{default_agent_type!r} is not a known agent type "
                    f"(known: {', '.join(sorted(types))})",
                )
            )
        if errors:
            raise ConfigError(errors)
        return cls(types)

    @property
    def names(self) -> builtins.list[str]:
        return list(self._types)

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __len__(self) -> int:
        return len(self._types)

    def get(self, name: str) -> AgentType:
        """The type called ``name``; a 422 naming the known types when there is none."""
        found = self._types.get(name)
        if found is None:
            known = ", ".join(self._types)
            raise ValidationFailed(
                f"unknown agent_type {name!r}; known agent types: {known}",
                errors=[
                    {
                        "field": "agent_type",
                        "message": f"unknown agent type; known: {known}",
                        "known": list(self._types),
                    }
                ],
            )
        return found

    def list(self) -> builtins.list[AgentType]:
        return list(self._types.values())

    def unavailable_reason(self, name: str) -> str | None:
        """None when the type called ``name`` can run here, else why not and how to fix it
        (a 422 when there is no such type). May run the CLI probe: call it off the event loop."""
        agent_type = self.get(name)
        return None if self.availability is None else self.availability(agent_type)

    def configured(self, name: str, settings: Mapping[str, Any] | None) -> AgentType:
        """Type ``name`` with a canary's ``settings`` applied (see ``agents/configured.py``)."""
        from quarterdeck.agents.configured import with_settings

        return with_settings(self.get(name), settings or {})

    def version(self, name: str, settings: Mapping[str, Any]) -> str:
        """The configuration version a run of ``name`` with ``settings`` records."""
        key = (name, json.dumps(dict(settings), sort_keys=True, default=str) if settings else "")
        found = self._versions.get(key)
        if found is None:
            from quarterdeck.agents.configured import config_version

            found = self._versions[key] = config_version(self.configured(name, settings))
        return found
