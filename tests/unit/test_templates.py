"""Agent types: the built-ins, YAML overrides merged over them, errors by name, and the 422."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from quarterdeck.agents.api import router
from quarterdeck.agents.templates import (
    KNOWN_TOOLS,
    READ_ONLY_TOOLS,
    AgentCatalog,
    AgentType,
)
from quarterdeck.config import load_settings
from quarterdeck.exceptions import ConfigError, ValidationFailed
from quarterdeck.kit.wiring import services


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("QUARTERDECK_"):
            monkeypatch.delenv(name, raising=False)


def _errors(overrides: dict[str, Any], **kw: Any) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        AgentCatalog.from_mapping(overrides, **kw)
    return info.value.errors


def test_builtins_exist_with_the_expected_tools() -> None:
    catalog = AgentCatalog.from_settings(load_settings())
    assert catalog.names == ["claude-code", "coder", "reviewer", "test-writer"]
    coder, reviewer, writer = (
        catalog.get("coder"),
        catalog.get("reviewer"),
        catalog.get("test-writer"),
    )
    assert coder.tools == (
        "read_file",
        "write_file",
        "edit_file",
        "list_files",
        "search",
        "run_command",
    )
    assert "http_fetch" not in coder.tools
    assert reviewer.tools == ("read_file", "list_files", "search")
    assert "no edits" in reviewer.description or "not modify" in reviewer.system_prompt
    assert writer.tools == coder.tools
    assert "test" in writer.system_prompt.lower()
    for agent in catalog.list():
        assert agent.system_prompt.strip()
        assert agent.model is None  # falls back to the deployment's model at run time
        assert agent.budget_usd is None


def test_builtins_take_limits_from_settings() -> None:
    catalog = AgentCatalog.from_settings(load_settings(max_turns=7, run_timeout="90s"))
    coder = catalog.get("coder")
    assert (coder.max_turns, coder.timeout_s) == (7, 90.0)


def test_yaml_partial_override_and_new_type(tmp_path: Path) -> None:
    config = tmp_path / "quarterdeck.yaml"
    config.write_text(
        """
agent_types:
  coder:
    budget_usd: 2.5
    max_turns: 30
  reviewer:
    model: claude-haiku-4-5
  docs-writer:
    description: Writes documentation.
    system_prompt: You write clear documentation.
    tools: [read_file, write_file, list_files, write_file]
  auditor:
    system_prompt: Audit the dependencies.
"""
    )
    settings = load_settings(config)
    catalog = AgentCatalog.from_settings(settings)
    coder = catalog.get("coder")
    assert coder.budget_usd == 2.5 and coder.max_turns == 30
    # untouched fields keep the built-in values
    assert coder.system_prompt == AgentCatalog.defaults().get("coder").system_prompt
    assert coder.timeout_s == settings.run_timeout
    assert catalog.get("reviewer").model == "claude-haiku-4-5"
    docs = catalog.get("docs-writer")
    assert docs.tools == ("read_file", "write_file", "list_files")  # deduplicated, canonical order
    assert docs.max_turns == settings.max_turns
    # a new type without tools gets the read-only set, never write or shell access
    assert catalog.get("auditor").tools == READ_ONLY_TOOLS
    assert catalog.names == [
        "auditor",
        "claude-code",
        "coder",
        "docs-writer",
        "reviewer",
        "test-writer",
    ]


def test_unknown_tool_is_named_with_its_field() -> None:
    errors = _errors({"coder": {"tools": ["read_file", "rm_rf"]}})
    assert len(errors) == 1
    name, reason = errors[0]
    assert name == "agent_types.coder.tools"
    assert "'rm_rf'" in reason and all(tool in reason for tool in KNOWN_TOOLS)


def test_every_bad_field_is_reported_at_once() -> None:
    errors = _errors(
        {
            "coder": {"max_turns": 0, "colour": "blue"},
            "reviewer": {"budget_usd": "lots"},
            "newbie": {"tools": ["read_file"]},
            "Bad Name": {"system_prompt": "x"},
            "scalar": "not a mapping",
            "blank": {"system_prompt": "   "},
            "tools-str": {"system_prompt": "x", "tools": "read_file"},
        }
    )
    names = {name for name, _ in errors}
    assert names == {
        "agent_types.coder.max_turns",
        "agent_types.coder.colour",
        "agent_types.reviewer.budget_usd",
        "agent_types.newbie.system_prompt",
        "agent_types.Bad Name",
        "agent_types.scalar",
        "agent_types.blank.system_prompt",
        "agent_types.tools-str.tools",
    }
    reasons = dict(errors)
    assert "unknown field" in reasons["agent_types.coder.colour"]
    assert "required for a new agent type" in reasons["agent_types.newbie.system_prompt"]


def test_bad_override_in_yaml_fails_catalog_build(tmp_path: Path) -> None:
    config = tmp_path / "quarterdeck.yaml"
    config.write_text("agent_types:\n  reviewer:\n    timeout_s: -1\n")
    with pytest.raises(ConfigError) as info:
        AgentCatalog.from_settings(load_settings(config))
    assert [name for name, _ in info.value.errors] == ["agent_types.reviewer.timeout_s"]


def test_name_in_body_must_match_key() -> None:
    assert _errors({"coder": {"name": "other"}})[0][0] == "agent_types.coder.name"
    # matching is fine
    AgentCatalog.from_mapping({"coder": {"name": "coder"}})


def test_default_agent_type_must_exist() -> None:
    with pytest.raises(ConfigError) as info:
        AgentCatalog.from_settings(load_settings(default_agent_type="nope"))
    (name, reason), *_ = info.value.errors
    assert name == "QUARTERDECK_DEFAULT_AGENT_TYPE"
    assert "coder" in reason


def test_unknown_type_is_422_naming_the_known_types() -> None:
    catalog = AgentCatalog.from_mapping({})
    with pytest.raises(ValidationFailed) as info:
        catalog.get("painter")
    exc = info.value
    assert exc.status == 422
    assert "'painter'" in exc.detail
    assert "claude-code, coder, reviewer, test-writer" in exc.detail
    (err,) = exc.extra["errors"]
    assert err["field"] == "agent_type"
    assert err["known"] == ["claude-code", "coder", "reviewer", "test-writer"]
    assert "painter" not in catalog and "coder" in catalog and len(catalog) == 4


def test_agent_type_is_immutable() -> None:
    coder = AgentCatalog.defaults().get("coder")
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError for frozen models
        coder.max_turns = 1  # type: ignore[misc]
    assert isinstance(coder, AgentType)


async def test_api_lists_agent_types() -> None:
    app = FastAPI()
    app.include_router(router)

    class Runtime:
        agent_catalog = AgentCatalog.from_mapping(
            {"docs-writer": {"system_prompt": "Write docs.", "tools": ["read_file"]}}
        )

    services(app).add(AgentCatalog, Runtime.agent_catalog)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/v1/agent-types")
    assert response.status_code == 200
    body = response.json()
    assert [t["name"] for t in body] == [
        "claude-code",
        "coder",
        "docs-writer",
        "reviewer",
        "test-writer",
    ]
    reviewer = next(t for t in body if t["name"] == "reviewer")
    assert reviewer["tools"] == ["read_file", "list_files", "search"]
    assert set(reviewer) == set(AgentType.model_fields) | {"available", "unavailable_reason"}
    assert app.openapi()["paths"]["/v1/agent-types"]["get"]["tags"] == ["agents"]


def test_model_call_settings_per_agent_type() -> None:
    catalog = AgentCatalog.from_mapping(
        {
            "coder": {"max_tokens": 16000, "thinking_budget": 8000, "cache_ttl": "1h"},
            "reviewer": {"cache_ttl": False},  # YAML's bare `off`
        }
    )
    coder = catalog.get("coder")
    assert (coder.max_tokens, coder.thinking_budget, coder.cache_ttl) == (16000, 8000, "1h")
    assert catalog.get("reviewer").cache_ttl == "off"
    default = catalog.get("test-writer")
    assert (default.max_tokens, default.thinking_budget, default.cache_ttl) == (4096, None, "5m")


def test_bad_model_call_settings_are_named() -> None:
    errors = dict(
        _errors(
            {
                "coder": {"thinking_budget": 4096},  # not below the default max_tokens
                "reviewer": {"cache_ttl": "2h"},
                "test-writer": {"max_tokens": 0, "thinking_budget": 100},
            }
        )
    )
    assert "below max_tokens" in errors["agent_types.coder.thinking_budget"]
    assert "'5m', '1h' or 'off'" in errors["agent_types.reviewer.cache_ttl"]
    assert "agent_types.test-writer.max_tokens" in errors
    assert "1024" in errors["agent_types.test-writer.thinking_budget"]
