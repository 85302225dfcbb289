"""An agent type with settings changed for one run, and the version that names the result.

Why: a new model or system prompt is a change like a new image, so a share of runs can be sent
to a candidate configuration and compared (agent-configuration canaries, ``rollouts/``). The
run carries the settings it was given (``params["agent_config"]``) so whichever worker runs or
resumes it applies exactly them, and every run records ``config_version``: the agent type's name
and a hash of the effective configuration, so two runs with the same version ran with the same
prompt, model and limits.

Only settings that shape how a run behaves and that a canary can be judged on are changeable;
the tool set, runner, network and MCP servers are not (widening what an agent may do is a policy
decision for the YAML, not something to trial on a share of production runs).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from quarterdeck.agents.templates import AgentType
from quarterdeck.exceptions import ValidationFailed

SETTABLE: tuple[str, ...] = (
    "model",
    "system_prompt",
    "max_turns",
    "max_tokens",
    "thinking_budget",
    "cache_ttl",
    "timeout_s",
    "budget_usd",
)
"""What ``canary start --set`` may change."""

_INTS = frozenset({"max_turns", "max_tokens", "thinking_budget"})
_FLOATS = frozenset({"timeout_s", "budget_usd"})


def parse_setting(text: str) -> tuple[str, Any]:
    """``"model=claude-haiku-4-5"`` into ``("model", "claude-haiku-4-5")``, typed by field
    (``max_turns=20`` is an int, ``thinking_budget=none`` unsets). Raises ``ValidationFailed``
    naming the setting."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise _bad("set", f"expected NAME=VALUE, got {text!r}")
    if name not in SETTABLE:
        raise _bad(name, f"cannot be changed by a canary; settable: {', '.join(SETTABLE)}")
    value: Any = raw
    if raw.strip().lower() in ("none", "null") and name in ("thinking_budget", "budget_usd"):
        return name, None
    try:
        if name in _INTS:
            value = int(raw)
        elif name in _FLOATS:
            value = float(raw)
    except ValueError as exc:
        raise _bad(name, f"must be a number, got {raw!r}") from exc
    return name, value


_NULLABLE = frozenset({"thinking_budget", "budget_usd"})


def check_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings as given, each known and of its field's JSON type: strict like every request
    body (``"3"`` is not a turn limit), so what is stored is what the runs get."""
    out: dict[str, Any] = {}
    for name, value in settings.items():
        if name not in SETTABLE:
            raise _bad(name, f"cannot be changed by a canary; settable: {', '.join(SETTABLE)}")
        if value is None:
            if name not in _NULLABLE:
                raise _bad(name, "must not be null")
        elif name in _INTS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise _bad(name, f"must be a whole number, got {value!r}")
        elif name in _FLOATS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _bad(name, f"must be a number, got {value!r}")
            value = float(value)
        elif not isinstance(value, str):
            raise _bad(name, f"must be a string, got {value!r}")
        out[name] = value
    return out


def with_settings(agent: AgentType, settings: Mapping[str, Any]) -> AgentType:
    """``agent`` with ``settings`` applied, validated by the same rules as the YAML (so a
    thinking budget above the new ``max_tokens`` is refused here, not on a worker)."""
    if not settings:
        return agent
    checked = check_settings(settings)
    try:
        return AgentType.model_validate(agent.model_dump() | checked)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "set"
        raise _bad(field, first["msg"].removeprefix("Value error, ")) from exc


def config_version(agent: AgentType) -> str:
    """``"coder@3f9a0c1b2d"``: the type's name and a hash of its effective configuration."""
    return _version(agent.model_dump_json())


@functools.lru_cache(maxsize=256)
def _version(dumped: str) -> str:
    raw = json.loads(dumped)
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"))
    return f"{raw['name']}@{hashlib.sha256(canonical.encode()).hexdigest()[:10]}"


def _bad(field: str, message: str) -> ValidationFailed:
    path = f"set.{field}" if field != "set" else "set"
    return ValidationFailed(f"{path}: {message}", errors=[{"field": path, "message": message}])
