"""Routing a new run to a canary's arm, and an agent type's settings changed for one run."""

from __future__ import annotations

import pytest

from quarterdeck.agents.configured import config_version, parse_setting, with_settings
from quarterdeck.agents.templates import AgentCatalog
from quarterdeck.exceptions import ValidationFailed
from quarterdeck.runs.config_routes import ConfigRoute, assign, bucket_of

STABLE = {"model": "claude-sonnet-4-5"}
CANDIDATE = {"model": "claude-haiku-4-5"}


def live(weight: int) -> ConfigRoute:
    return ConfigRoute("ro_1", live=True, weight=weight, stable=STABLE, candidate=CANDIDATE)


def test_the_share_follows_the_weight_and_an_id_always_lands_in_the_same_arm() -> None:
    ids = [f"run_{i:06d}" for i in range(4000)]
    for weight in (5, 30, 100):
        arms = [assign(i, live(weight), frozenset()).arm for i in ids]
        share = arms.count("candidate") / len(ids)
        assert abs(share - weight / 100) < 0.03, (weight, share)
    assert assign(ids[0], live(30), frozenset()) == assign(ids[0], live(30), frozenset())
    assert all(0 <= bucket_of(i) < 10_000 for i in ids[:100])


def test_enrolled_runs_carry_their_arm_settings() -> None:
    got = {a.arm: a for a in (assign(f"r{i}", live(50), frozenset()) for i in range(200))}
    assert got["candidate"].settings == CANDIDATE and got["candidate"].canary_id == "ro_1"
    assert got["stable"].settings == STABLE and got["stable"].canary_id == "ro_1"


def test_a_run_pinning_a_changed_setting_is_not_enrolled() -> None:
    for i in range(50):
        a = assign(f"r{i}", live(100), frozenset({"model"}))
        assert (a.arm, a.canary_id, dict(a.settings)) == (None, None, STABLE)
    # Pinning a setting the candidate does not change keeps the run in the comparison.
    assert assign("r1", live(100), frozenset({"max_turns"})).arm == "candidate"


def test_an_ended_canary_leaves_its_settings_in_force() -> None:
    done = ConfigRoute("ro_1", live=False, weight=100, stable=STABLE, candidate=CANDIDATE,
                       promoted=True)  # fmt: skip
    back = ConfigRoute("ro_1", live=False, weight=0, stable=STABLE, candidate=CANDIDATE)
    assert (assign("r", done, frozenset()).settings, assign("r", done, frozenset()).arm) == (
        CANDIDATE, None)  # fmt: skip
    assert assign("r", back, frozenset()).settings == STABLE
    assert assign("r", None, frozenset()).settings == {}


def test_settings_parse_typed_and_unknown_ones_are_refused() -> None:
    assert parse_setting("max_turns=20") == ("max_turns", 20)
    assert parse_setting("budget_usd=1.5") == ("budget_usd", 1.5)
    assert parse_setting("thinking_budget=none") == ("thinking_budget", None)
    assert parse_setting("system_prompt=a=b") == ("system_prompt", "a=b")
    for bad, field in (("tools=run_command", "set.tools"), ("max_turns=lots", "set.max_turns"),
                       ("model", "set")):  # fmt: skip
        with pytest.raises(ValidationFailed) as caught:
            parse_setting(bad)
        assert caught.value.extra["errors"][0]["field"] == field


def test_settings_are_validated_with_the_type_and_versions_name_the_configuration() -> None:
    coder = AgentCatalog.defaults().get("coder")
    assert with_settings(coder, {}) is coder
    cheaper = with_settings(coder, {"model": "claude-haiku-4-5"})
    assert cheaper.model == "claude-haiku-4-5" and cheaper.tools == coder.tools
    assert config_version(cheaper) != config_version(coder)
    assert config_version(coder).startswith("coder@")
    assert config_version(with_settings(coder, {"model": "claude-haiku-4-5"})) == config_version(
        cheaper
    )
    with pytest.raises(ValidationFailed) as caught:  # the thinking budget must stay < max_tokens
        with_settings(coder, {"thinking_budget": 5000, "max_tokens": 4096})
    assert caught.value.extra["errors"][0]["field"] == "set.thinking_budget"
