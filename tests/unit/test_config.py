"""Settings: defaults, environment names, the YAML file, eager validation and secret hygiene.

Every test starts from an environment with no Quarterdeck or guide variables set, so the host's
own configuration can never leak into (or break) these checks.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from quarterdeck.config import GUIDE_ENV_NAMES, Settings, env_name, env_names, load_settings
from quarterdeck.exceptions import ConfigError

GUIDE_VARS = ("POSTGRES_URL", "REDIS_URL", "ANTHROPIC_API_KEY", "LOG_LEVEL")
ADMIN_KEY = "a" * 40
PG_URL = "postgresql://qd:pg-password-123@db.internal:5432/quarterdeck"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("QUARTERDECK_") or name in GUIDE_VARS:
            monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _errors(**env: str) -> list[tuple[str, str]]:
    """Set ``env``, load settings, and return the ConfigError's (name, reason) pairs."""
    mp = pytest.MonkeyPatch()
    try:
        for key, value in env.items():
            mp.setenv(key, value)
        with pytest.raises(ConfigError) as info:
            load_settings()
        return info.value.errors
    finally:
        mp.undo()


def _write(tmp_path: Path, text: str, name: str = "quarterdeck.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- defaults ---------------------------------------------------------------------------------


def test_defaults_match_the_guide():
    s = load_settings()
    assert s.http_port == 8080
    assert s.metrics_port == 9090
    assert s.worker_concurrency == 50
    assert s.max_attempts == 3
    assert s.drain_timeout == 30.0
    assert s.env == "development"
    assert s.log_level == "info"
    assert s.postgres_url is None and s.embedded_postgres
    assert s.redis_url is None


def test_provider_auto_is_simulated_without_an_anthropic_key():
    s = load_settings()
    assert s.provider == "auto"
    assert s.provider_name == "simulated"
    assert s.model == "simulated-sonnet"


def test_provider_auto_is_anthropic_when_anthropic_api_key_is_set(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    s = load_settings()
    assert s.provider_name == "anthropic"
    assert s.model != "simulated-sonnet"


def test_explicit_provider_wins_over_auto_detection(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    clean_env.setenv("QUARTERDECK_PROVIDER", "simulated")
    assert load_settings().provider_name == "simulated"


def test_default_model_override(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("QUARTERDECK_DEFAULT_MODEL", "simulated-haiku")
    assert load_settings().model == "simulated-haiku"


def test_default_simulated_latency_is_zero():
    profile = load_settings().latency_profile
    assert profile.kind == "fixed" and profile.median == 0


# -- environment names ------------------------------------------------------------------------


def test_env_names_use_guide_names_for_guide_settings():
    names = env_names()
    assert names["postgres_url"] == "POSTGRES_URL"
    assert names["redis_url"] == "REDIS_URL"
    assert names["anthropic_api_key"] == "ANTHROPIC_API_KEY"
    assert names["log_level"] == "LOG_LEVEL"


def test_env_names_prefix_everything_else_with_quarterdeck():
    names = env_names()
    assert set(names) == set(Settings.model_fields)
    for field, name in names.items():
        if field in GUIDE_ENV_NAMES:
            continue
        assert name == f"QUARTERDECK_{field.upper()}", field
    assert names["http_port"] == "QUARTERDECK_HTTP_PORT"
    assert names["admin_api_key"] == "QUARTERDECK_ADMIN_API_KEY"
    assert env_name("worker_concurrency") == "QUARTERDECK_WORKER_CONCURRENCY"


def test_guide_env_names_are_read(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("POSTGRES_URL", PG_URL)
    clean_env.setenv("REDIS_URL", "redis://cache:6379/0")
    clean_env.setenv("LOG_LEVEL", "debug")
    s = load_settings()
    assert s.postgres_url is not None and s.postgres_url.get_secret_value() == PG_URL
    assert s.redis_url is not None and s.redis_url.get_secret_value() == "redis://cache:6379/0"
    assert s.log_level == "debug"
    assert not s.embedded_postgres


def test_prefixed_spelling_of_guide_names_is_accepted_too(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("QUARTERDECK_POSTGRES_URL", PG_URL)
    s = load_settings()
    assert s.postgres_url is not None and s.postgres_url.get_secret_value() == PG_URL


def test_quarterdeck_prefixed_env_vars_are_read(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("QUARTERDECK_HTTP_PORT", "8181")
    clean_env.setenv("QUARTERDECK_WORKER_CONCURRENCY", "7")
    clean_env.setenv("QUARTERDECK_MAX_ATTEMPTS", "5")
    clean_env.setenv("QUARTERDECK_ENV", "development")
    s = load_settings()
    assert (s.http_port, s.worker_concurrency, s.max_attempts) == (8181, 7, 5)


def test_explicit_overrides_beat_the_environment(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("QUARTERDECK_HTTP_PORT", "8181")
    assert load_settings(None, http_port=9999).http_port == 9999


def test_secrets_are_masked_in_repr(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("POSTGRES_URL", PG_URL)
    clean_env.setenv("QUARTERDECK_ADMIN_API_KEY", ADMIN_KEY)
    text = repr(load_settings())
    assert "pg-password-123" not in text
    assert ADMIN_KEY not in text


# -- YAML file --------------------------------------------------------------------------------


def test_yaml_file_is_loaded(tmp_path: Path):
    path = _write(
        tmp_path,
        "worker_concurrency: 20\nhttp_port: 8181\ndrain_timeout: 5m\nsimulated_latency: 250ms\n",
    )
    s = load_settings(path)
    assert s.worker_concurrency == 20
    assert s.http_port == 8181
    assert s.drain_timeout == 300.0
    assert s.latency_profile.median == 0.25


def test_environment_overrides_yaml(tmp_path: Path, clean_env: pytest.MonkeyPatch):
    path = _write(tmp_path, "worker_concurrency: 20\nhttp_port: 8181\n")
    clean_env.setenv("QUARTERDECK_WORKER_CONCURRENCY", "7")
    s = load_settings(path)
    assert s.worker_concurrency == 7  # env wins
    assert s.http_port == 8181  # YAML still applies where env is silent


def test_guide_env_name_overrides_yaml(tmp_path: Path, clean_env: pytest.MonkeyPatch):
    path = _write(tmp_path, "postgres_url: postgresql://from-yaml/db\n")
    clean_env.setenv("POSTGRES_URL", PG_URL)
    s = load_settings(path)
    assert s.postgres_url is not None and s.postgres_url.get_secret_value() == PG_URL


def test_quarterdeck_config_env_var_names_the_file(tmp_path: Path, clean_env: pytest.MonkeyPatch):
    path = _write(tmp_path, "max_attempts: 9\n")
    clean_env.setenv("QUARTERDECK_CONFIG", str(path))
    assert load_settings().max_attempts == 9


def test_yaml_does_not_stick_to_later_loads(tmp_path: Path):
    path = _write(tmp_path, "worker_concurrency: 20\n")
    assert load_settings(path).worker_concurrency == 20
    assert load_settings().worker_concurrency == 50


def test_unknown_yaml_key_is_rejected_by_name(tmp_path: Path):
    path = _write(tmp_path, "worker_concurency: 20\nhttp_port: 8181\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "worker_concurency" in info.value.detail
    assert str(path) in info.value.detail


def test_yaml_that_is_not_a_mapping_is_rejected(tmp_path: Path):
    path = _write(tmp_path, "- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(path)


def test_unparseable_yaml_is_rejected(tmp_path: Path):
    path = _write(tmp_path, "http_port: [8080\n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(path)


def test_missing_config_path_is_rejected(tmp_path: Path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_settings(missing)
    assert info.value.errors == [("--config", f"{missing} does not exist")]


def test_missing_config_path_from_env_is_rejected(tmp_path: Path, clean_env: pytest.MonkeyPatch):
    clean_env.setenv("QUARTERDECK_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()


def test_bad_yaml_value_is_named_by_its_env_name(tmp_path: Path):
    path = _write(tmp_path, "http_port: not-a-port\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert [name for name, _ in info.value.errors] == ["QUARTERDECK_HTTP_PORT"]


# -- eager validation -------------------------------------------------------------------------


def test_config_error_lists_every_bad_field_at_once():
    errors = _errors(
        QUARTERDECK_HTTP_PORT="abc",
        QUARTERDECK_SIMULATED_LATENCY="nope",
        QUARTERDECK_SIMULATED_ERROR_RATE="2",
    )
    assert len(errors) == 3
    assert {name for name, _ in errors} == {
        "QUARTERDECK_HTTP_PORT",
        "QUARTERDECK_SIMULATED_LATENCY",
        "QUARTERDECK_SIMULATED_ERROR_RATE",
    }


def test_config_error_detail_mentions_each_field_and_the_count(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("QUARTERDECK_HTTP_PORT", "abc")
    clean_env.setenv("QUARTERDECK_WORKER_CONCURRENCY", "0")
    with pytest.raises(ConfigError) as info:
        load_settings()
    detail = info.value.detail
    assert "2 problem(s)" in detail
    assert "QUARTERDECK_HTTP_PORT" in detail
    assert "QUARTERDECK_WORKER_CONCURRENCY" in detail


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("QUARTERDECK_HTTP_PORT", "70000"),
        ("QUARTERDECK_METRICS_PORT", "-1"),
        ("QUARTERDECK_WORKER_CONCURRENCY", "0"),
        ("QUARTERDECK_MAX_ATTEMPTS", "0"),
        ("QUARTERDECK_SIMULATED_ERROR_RATE", "-0.1"),
        ("QUARTERDECK_SIMULATED_LATENCY", "lognormal:1s"),
        ("QUARTERDECK_ENV", "staging"),
        ("QUARTERDECK_PROVIDER", "gpt"),
        ("LOG_LEVEL", "loud"),
        ("QUARTERDECK_DRAIN_TIMEOUT", "soon"),
        ("QUARTERDECK_DRAIN_TIMEOUT", "0"),
        ("REDIS_URL", "http://cache:6379"),
        ("POSTGRES_URL", "mysql://db/app"),
    ],
)
def test_bad_value_is_reported_under_the_name_the_user_set(name: str, value: str):
    errors = _errors(**{name: value})
    assert [n for n, _ in errors] == [name]


def test_pool_min_above_max_is_rejected(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("QUARTERDECK_DB_POOL_MIN", "30")
    clean_env.setenv("QUARTERDECK_DB_POOL_MAX", "10")
    with pytest.raises(ConfigError, match="QUARTERDECK_DB_POOL_MIN"):
        load_settings()


# -- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("2s", 2.0), ("5m", 300.0), ("1h", 3600.0), ("45", 45.0), ("1.5s", 1.5)],
)
def test_duration_settings_accept_human_durations(
    clean_env: pytest.MonkeyPatch, text: str, seconds: float
):
    clean_env.setenv("QUARTERDECK_DRAIN_TIMEOUT", text)
    clean_env.setenv("QUARTERDECK_RUN_TIMEOUT", text)
    s = load_settings()
    assert s.drain_timeout == pytest.approx(seconds)
    assert s.run_timeout == pytest.approx(seconds)


def test_duration_settings_accept_numbers_from_overrides():
    s = load_settings(None, worker_dequeue_timeout=1.5, drain_timeout="500ms")
    assert s.worker_dequeue_timeout == 1.5
    assert s.drain_timeout == 0.5


def test_bad_duration_error_explains_the_format():
    [(name, reason)] = _errors(QUARTERDECK_WORKER_HEARTBEAT_TIMEOUT="10 seconds")
    assert name == "QUARTERDECK_WORKER_HEARTBEAT_TIMEOUT"
    assert "500ms" in reason  # the hint lists example spellings


@pytest.mark.parametrize("latency", ["0", "2s", "250ms", "lognormal:1.5s:0.6"])
def test_simulated_latency_accepts_profiles(clean_env: pytest.MonkeyPatch, latency: str):
    clean_env.setenv("QUARTERDECK_SIMULATED_LATENCY", latency)
    assert load_settings().simulated_latency == latency


# -- production guards ------------------------------------------------------------------------


def test_production_refuses_to_start_without_an_admin_key(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("QUARTERDECK_ENV", "production")
    clean_env.setenv("POSTGRES_URL", PG_URL)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "QUARTERDECK_ADMIN_API_KEY" in info.value.detail
    assert "POSTGRES_URL must be set" not in info.value.detail


def test_production_refuses_a_short_admin_key(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("QUARTERDECK_ENV", "production")
    clean_env.setenv("POSTGRES_URL", PG_URL)
    clean_env.setenv("QUARTERDECK_ADMIN_API_KEY", "x" * 31)
    with pytest.raises(ConfigError, match="QUARTERDECK_ADMIN_API_KEY"):
        load_settings()


def test_production_refuses_the_embedded_database(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("QUARTERDECK_ENV", "production")
    clean_env.setenv("QUARTERDECK_ADMIN_API_KEY", ADMIN_KEY)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "POSTGRES_URL" in info.value.detail
    assert "at least 32 characters" not in info.value.detail


def test_production_reports_both_missing_admin_key_and_postgres(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("QUARTERDECK_ENV", "production")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "QUARTERDECK_ADMIN_API_KEY" in info.value.detail
    assert "POSTGRES_URL" in info.value.detail


def test_production_starts_with_admin_key_and_postgres(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("QUARTERDECK_ENV", "production")
    clean_env.setenv("QUARTERDECK_ADMIN_API_KEY", ADMIN_KEY)
    clean_env.setenv("POSTGRES_URL", PG_URL)
    clean_env.setenv("QUARTERDECK_AUDIT_MASTER_KEY", "A" * 43 + "=")
    clean_env.setenv("QUARTERDECK_AUDIT_SIGNING_KEY_FILE", "/run/secrets/audit-signing.pem")
    s = load_settings()
    assert s.env == "production" and not s.embedded_postgres and s.auth_required


def test_production_refuses_auth_off_and_a_missing_audit_key(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("QUARTERDECK_ENV", "production")
    clean_env.setenv("QUARTERDECK_ADMIN_API_KEY", ADMIN_KEY)
    clean_env.setenv("POSTGRES_URL", PG_URL)
    clean_env.setenv("QUARTERDECK_AUTH_ENABLED", "false")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "QUARTERDECK_AUTH_ENABLED" in info.value.detail
    assert "QUARTERDECK_AUDIT_MASTER_KEY" in info.value.detail
    assert "QUARTERDECK_AUDIT_SIGNING_KEY_FILE" in info.value.detail


def test_auth_defaults_off_in_development_and_can_be_turned_on(clean_env: pytest.MonkeyPatch):
    assert load_settings().auth_required is False
    clean_env.setenv("QUARTERDECK_AUTH_ENABLED", "true")
    assert load_settings().auth_required is True


def test_development_needs_neither_admin_key_nor_postgres():
    s = load_settings()
    assert s.admin_api_key is None and s.embedded_postgres


# -- secrets never echoed ---------------------------------------------------------------------


def test_non_secret_bad_values_are_echoed_to_help_the_user():
    [(_, reason)] = _errors(QUARTERDECK_HTTP_PORT="eighty")
    assert "eighty" in reason


def test_bad_postgres_url_value_is_not_echoed(clean_env: pytest.MonkeyPatch):
    secret = "mysql://app:hunter2-secret@db.internal/app"
    clean_env.setenv("POSTGRES_URL", secret)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert [n for n, _ in info.value.errors] == ["POSTGRES_URL"]
    assert "hunter2-secret" not in info.value.detail
    assert "hunter2-secret" not in str(info.value)


def test_bad_redis_url_value_is_not_echoed(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("REDIS_URL", "http://:hunter2-secret@cache:6379")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "hunter2-secret" not in info.value.detail


def test_short_admin_key_is_not_echoed_in_production_error(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("QUARTERDECK_ENV", "production")
    clean_env.setenv("POSTGRES_URL", PG_URL)
    clean_env.setenv("QUARTERDECK_ADMIN_API_KEY", "short-admin-secret")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "short-admin-secret" not in info.value.detail


def test_postgres_password_is_not_echoed_in_model_level_errors(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("POSTGRES_URL", PG_URL)
    clean_env.setenv("QUARTERDECK_DB_POOL_MIN", "30")
    clean_env.setenv("QUARTERDECK_DB_POOL_MAX", "10")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "pg-password-123" not in info.value.detail


def test_bad_anthropic_key_type_is_not_echoed():
    with pytest.raises(ConfigError) as info:
        load_settings(None, anthropic_api_key=12345678901234)
    assert "12345678901234" not in info.value.detail


def test_list_settings_take_a_comma_list_or_json(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("QUARTERDECK_WORKSPACE_ROOTS", "/srv/a, /srv/b")
    clean_env.setenv("QUARTERDECK_GIT_ALLOWED_HOSTS", '["github.com"]')
    s = load_settings()
    assert s.workspace_roots == [Path("/srv/a"), Path("/srv/b")]
    assert s.git_allowed_hosts == ["github.com"]
    clean_env.setenv("QUARTERDECK_GIT_ALLOWED_HOSTS", '["github.com"')
    with pytest.raises(ConfigError) as bad:
        load_settings()
    assert "QUARTERDECK_GIT_ALLOWED_HOSTS" in str(bad.value) and "JSON list" in str(bad.value)


def test_bad_json_in_a_structured_setting_is_a_named_error(clean_env: pytest.MonkeyPatch):
    # pydantic-settings raises its own SettingsError (a traceback) before validation runs.
    clean_env.setenv("QUARTERDECK_RETRY_SCHEDULE", "1,2,4")
    with pytest.raises(ConfigError) as bad:
        load_settings()
    assert "QUARTERDECK_RETRY_SCHEDULE" in str(bad.value) and "must be JSON" in str(bad.value)
