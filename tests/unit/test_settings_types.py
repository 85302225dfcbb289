"""The setting types of ``config/validators.py`` and the names the split modules still export.

The validators moved out of ``Settings`` into annotated types: each field now says what it is
where it is declared. These tests pin that every field that had a validator still has it (a
field left as a plain ``float`` would accept ``0`` or refuse ``2m``), with the same messages, and
that the names the rest of the code imports from ``runs.store`` and ``config.settings`` are the
very objects of their new homes.
"""

from __future__ import annotations

import os

import pytest

from quarterdeck import config
from quarterdeck.config import load_settings
from quarterdeck.config import settings as settings_module
from quarterdeck.exceptions import ConfigError
from quarterdeck.runs import store, store_protocol

GUIDE_VARS = ("POSTGRES_URL", "REDIS_URL", "ANTHROPIC_API_KEY", "LOG_LEVEL")

DURATIONS = (
    *("worker_heartbeat_timeout", "worker_dequeue_timeout", "drain_timeout", "run_timeout"),
    *("provider_timeout", "command_timeout", "retry_budget", "breaker_open_for"),
    *("breaker_window", "notify_escalate_after_s", "health_check_interval"),
    *("health_leader_retry", "health_lease_duration", "health_provider_window"),
    *("audit_checkpoint_interval", "audit_retention", "run_purge_interval"),
    *("audit_purge_interval", "audit_verify_interval", "tenant_erase_wait"),
    *("policy_approval_timeout", "gateway_retry_after_cap", "gateway_budget_timeout"),
    "gateway_hold_ttl",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("QUARTERDECK_") or name in GUIDE_VARS:
            monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _problems(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, str]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    return dict(info.value.errors)


@pytest.mark.parametrize("field", DURATIONS)
def test_every_duration_setting_parses_units_and_refuses_zero(
    clean_env: pytest.MonkeyPatch, field: str
) -> None:
    name = f"QUARTERDECK_{field.upper()}"
    clean_env.setenv(name, "2m")
    assert getattr(load_settings(), field) == 120.0
    assert _problems(clean_env, **{name: "0"}) == {name: "must be greater than zero (got '0')"}


@pytest.mark.parametrize(
    ("env", "name", "reason"),
    [
        ({"POSTGRES_URL": "mysql://db/x"}, "POSTGRES_URL", "must start with postgresql://"),
        ({"REDIS_URL": "http://cache"}, "REDIS_URL", "must start with redis://, rediss://"),
        (
            {"QUARTERDECK_REDIS_PASSWORD": "pw"},
            "QUARTERDECK_REDIS_PASSWORD",
            "set REDIS_URL too (the password is added to it)",
        ),
        (
            {"REDIS_URL": "redis://:old@cache:6379/0", "QUARTERDECK_REDIS_PASSWORD": "pw"},
            "QUARTERDECK_REDIS_PASSWORD",
            "REDIS_URL already carries a password",
        ),
        (
            {"QUARTERDECK_METRIC_PROJECTS": "ok, not ok!"},
            "QUARTERDECK_METRIC_PROJECTS",
            "'not ok!' is not a label value",
        ),
        (
            {"QUARTERDECK_EGRESS_ALLOWED_HOSTS": "user@host"},
            "QUARTERDECK_EGRESS_ALLOWED_HOSTS",
            "'user@host' is not a host name or glob",
        ),
        (
            {"QUARTERDECK_SIMULATED_LATENCY": "soon"},
            "QUARTERDECK_SIMULATED_LATENCY",
            "'soon' is not a duration",
        ),
    ],
)
def test_each_setting_type_refuses_what_its_validator_refused(
    clean_env: pytest.MonkeyPatch, env: dict[str, str], name: str, reason: str
) -> None:
    problems = _problems(clean_env, **env)
    assert list(problems) == [name]
    assert reason in problems[name]


def test_list_settings_still_take_comma_lists_from_the_environment(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("QUARTERDECK_NOTIFY_SMTP_TO", "a@example.com, b@example.com")
    clean_env.setenv("QUARTERDECK_HTTP_FETCH_ALLOWLIST", '["docs.example"]')
    clean_env.setenv("QUARTERDECK_POLICY_EGRESS_ALLOWLIST", "pypi.org")
    clean_env.setenv("QUARTERDECK_METRIC_MODELS", "claude-x, gpt:4")
    clean_env.setenv("REDIS_URL", "redis://cache:6379/0")
    clean_env.setenv("QUARTERDECK_REDIS_PASSWORD", "pw")
    loaded = load_settings()
    assert loaded.notify_smtp_to == ["a@example.com", "b@example.com"]
    assert loaded.http_fetch_allowlist == ["docs.example"]
    assert loaded.policy_egress_allowlist == ["pypi.org"]
    assert loaded.metric_models == ["claude-x", "gpt:4"]
    assert loaded.redis_url is not None
    assert loaded.redis_url.get_secret_value() == "redis://:pw@cache:6379/0"


def test_secret_settings_are_still_found_by_their_type() -> None:
    # secret_file_fields reads the annotation: an annotated type must still show SecretStr.
    fields = config.secret_file_fields()
    assert {"postgres_url", "redis_url", "redis_password"} <= set(fields)


def test_split_modules_keep_their_old_import_paths() -> None:
    for name in store_protocol.__all__:
        assert getattr(store, name) is getattr(store_protocol, name), name
    assert store.TurnRecord.__module__ == "quarterdeck.runs.attempt_repository"
    for name in ("Settings", "env_name", "env_names", "secret_file_fields"):
        assert getattr(config, name) is getattr(settings_module, name), name
