"""Secret settings from files (``QUARTERDECK_SECRETS_DIR``), as the Kubernetes manifests give them.

Proves: a secret read from its file (named by the setting, in the layout the kubelet writes); the
documented priority (overrides > environment > file > YAML > default); every mistake in the
directory is a start-up error that names the file and never its content; REDIS_URL composed with
a password from its own file; production starting with every secret from files.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from quarterdeck.config import SECRET_FIELDS, load_settings, secret_file_fields
from quarterdeck.config import sources as config
from quarterdeck.exceptions import ConfigError

GUIDE_VARS = ("POSTGRES_URL", "REDIS_URL", "ANTHROPIC_API_KEY", "LOG_LEVEL")
ADMIN_KEY = "file-admin-key-" + "a" * 32
PG_URL = "postgresql://qd:pg-file-secret@db.internal:5432/quarterdeck"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("QUARTERDECK_") or name in GUIDE_VARS:
            monkeypatch.delenv(name, raising=False)
    return monkeypatch


def kubelet_dir(root: Path, files: dict[str, str]) -> Path:
    """A secret volume as the kubelet writes it: the data in a timestamped dir, ``..data`` a
    symlink to it, and each visible name a symlink through ``..data``."""
    root.mkdir(parents=True, exist_ok=True)
    data = root / "..2026_12_06_11_00_00.000000001"
    data.mkdir()
    for name, content in files.items():
        (data / name).write_text(content)
        (data / name).chmod(0o400)
    (root / "..data").symlink_to(data.name)
    for name in files:
        (root / name).symlink_to(f"..data/{name}")
    return root


def secrets_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **files: str) -> Path:
    directory = kubelet_dir(tmp_path / "secrets", files)
    monkeypatch.setenv("QUARTERDECK_SECRETS_DIR", str(directory))
    return directory


def test_secrets_are_read_from_files_named_by_setting(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    directory = secrets_env(
        clean_env,
        tmp_path,
        admin_api_key=ADMIN_KEY + "\n",  # `echo … > file` and kubectl --from-file keep the \n
        postgres_url=PG_URL,
        anthropic_api_key="sk-ant-from-file\n",
    )
    s = load_settings()
    assert s.admin_api_key is not None and s.admin_api_key.get_secret_value() == ADMIN_KEY
    assert s.postgres_url is not None and s.postgres_url.get_secret_value() == PG_URL
    assert s.anthropic_api_key is not None
    assert s.anthropic_api_key.get_secret_value() == "sk-ant-from-file"
    assert s.provider_name == "anthropic" and not s.embedded_postgres
    assert s.secrets_dir == directory


def test_without_a_secrets_dir_nothing_is_read(tmp_path: Path) -> None:
    s = load_settings()
    assert s.secrets_dir is None and s.admin_api_key is None


def test_environment_wins_over_file_and_file_wins_over_yaml(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secrets_env(
        clean_env,
        tmp_path,
        anthropic_api_key="sk-ant-file",
        admin_api_key=ADMIN_KEY,
        notify_webhook_secret="whsec-file",
    )
    clean_env.setenv("ANTHROPIC_API_KEY", "sk-ant-env")
    yaml_file = tmp_path / "quarterdeck.yaml"
    yaml_file.write_text("admin_api_key: yaml-admin-key\nnotify_smtp_password: smtp-yaml\n")
    s = load_settings(yaml_file)
    assert s.anthropic_api_key is not None
    assert s.anthropic_api_key.get_secret_value() == "sk-ant-env"  # env > file
    assert s.admin_api_key is not None and s.admin_api_key.get_secret_value() == ADMIN_KEY
    assert s.notify_smtp_password is not None  # YAML still fills what no file gives
    assert s.notify_smtp_password.get_secret_value() == "smtp-yaml"
    # An explicit override beats the file too.
    s = load_settings(yaml_file, notify_webhook_secret="whsec-override")
    assert s.notify_webhook_secret is not None
    assert s.notify_webhook_secret.get_secret_value() == "whsec-override"


def test_secrets_dir_can_come_from_an_override_or_the_yaml_file(tmp_path: Path) -> None:
    directory = kubelet_dir(tmp_path / "s", {"openai_api_key": "sk-openai-file"})
    s = load_settings(None, secrets_dir=directory)
    assert s.openai_api_key is not None and s.openai_api_key.get_secret_value() == "sk-openai-file"
    yaml_file = tmp_path / "quarterdeck.yaml"
    yaml_file.write_text(f"secrets_dir: {directory}\n")
    s = load_settings(yaml_file)
    assert s.openai_api_key is not None and s.openai_api_key.get_secret_value() == "sk-openai-file"


def test_the_default_mount_point_is_used_when_it_exists(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    directory = kubelet_dir(tmp_path / "default", {"admin_api_key": ADMIN_KEY})
    clean_env.setattr(config, "DEFAULT_SECRETS_DIR", directory)
    s = load_settings()
    assert s.secrets_dir == directory
    assert s.admin_api_key is not None and s.admin_api_key.get_secret_value() == ADMIN_KEY
    clean_env.setattr(config, "DEFAULT_SECRETS_DIR", tmp_path / "absent")
    assert load_settings().admin_api_key is None


def test_a_named_but_missing_directory_is_an_error(clean_env: pytest.MonkeyPatch, tmp_path: Path):
    clean_env.setenv("QUARTERDECK_SECRETS_DIR", str(tmp_path / "nope"))
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.errors == [
        ("QUARTERDECK_SECRETS_DIR", f"{tmp_path / 'nope'} is not a directory")
    ]


def test_every_mistake_in_the_directory_is_reported_without_the_content(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    directory = secrets_env(
        clean_env,
        tmp_path,
        admin_key="typo-secret-value-1",  # not a setting
        http_port="8080",  # a setting, but not a secret: belongs in the config file
        anthropic_api_key="\n",  # empty
        gateway_tenant_upstream_keys="not-a-mapping-secret-2",
    )
    (directory / "nested").mkdir()
    with pytest.raises(ConfigError) as info:
        load_settings()
    reasons = dict(info.value.errors)
    assert reasons[str(directory / "admin_key")].startswith("not a secret setting (known: ")
    assert reasons[str(directory / "http_port")].startswith("not a secret setting")
    assert reasons[str(directory / "anthropic_api_key")] == "is empty"
    assert reasons[str(directory / "gateway_tenant_upstream_keys")] == (
        "must hold a YAML or JSON mapping"
    )
    assert reasons[str(directory / "nested")].startswith("not a secret setting")
    assert len(reasons) == 5, "the kubelet's ..data entries are skipped"
    for secret in ("typo-secret-value-1", "not-a-mapping-secret-2"):
        assert secret not in str(info.value)


def test_a_structured_secret_is_a_json_or_yaml_mapping(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secrets_env(
        clean_env, tmp_path, gateway_tenant_upstream_keys='{"acme": "sk-ant-acme", "beta": "sk-b"}'
    )
    keys = load_settings().gateway_tenant_upstream_keys
    assert {k: v.get_secret_value() for k, v in keys.items()} == {
        "acme": "sk-ant-acme",
        "beta": "sk-b",
    }


def test_a_bad_secret_from_a_file_is_named_but_not_echoed(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secrets_env(clean_env, tmp_path, postgres_url="mysql://app:hunter2-file@db/app")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert [name for name, _ in info.value.errors] == ["POSTGRES_URL"]
    assert "hunter2-file" not in str(info.value)


def test_every_file_settable_field_is_treated_as_secret() -> None:
    """A SecretStr field added without SECRET_FIELDS would be echoed in validation errors."""
    fields = secret_file_fields()
    assert set(fields) == set(SECRET_FIELDS)
    assert {"postgres_url", "anthropic_api_key", "admin_api_key", "audit_master_key"} <= set(fields)
    assert {"redis_password", "notify_webhook_secret", "openai_api_key"} <= set(fields)


# -- REDIS_URL in the ConfigMap, its password in a file -----------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://cache:6379/0", "redis://:p%40ss%2Fw%3Ard@cache:6379/0"),
        ("rediss://app@cache:6380/1", "rediss://app:p%40ss%2Fw%3Ard@cache:6380/1"),
        ("redis://a%40b@cache/0", "redis://a%40b:p%40ss%2Fw%3Ard@cache/0"),
        ("unix:///run/redis.sock?db=2", "unix:///run/redis.sock?db=2&password=p%40ss%2Fw%3Ard"),
    ],
)
def test_redis_password_is_added_to_the_url(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, url: str, expected: str
) -> None:
    secrets_env(clean_env, tmp_path, redis_password="p@ss/w:rd\n")
    clean_env.setenv("REDIS_URL", url)
    s = load_settings()
    assert s.redis_url is not None and s.redis_url.get_secret_value() == expected


def test_redis_password_works_with_the_real_client_url_parser(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from redis.connection import parse_url

    secrets_env(clean_env, tmp_path, redis_password="p@ss/w:rd")
    clean_env.setenv("REDIS_URL", "redis://redis-cluster-0.redis-cluster:6379/0")
    s = load_settings()
    assert s.redis_url is not None
    parsed = parse_url(s.redis_url.get_secret_value())
    assert parsed["password"] == "p@ss/w:rd"
    assert parsed["host"] == "redis-cluster-0.redis-cluster"


def test_redis_password_needs_a_password_free_url(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secrets_env(clean_env, tmp_path, redis_password="pw-secret-3")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.errors == [
        ("QUARTERDECK_REDIS_PASSWORD", "set REDIS_URL too (the password is added to it)")
    ]
    clean_env.setenv("REDIS_URL", "redis://:other@cache:6379/0")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.errors == [
        (
            "QUARTERDECK_REDIS_PASSWORD",
            "REDIS_URL already carries a password: set one or the other",
        )
    ]
    assert "pw-secret-3" not in str(info.value)


def test_production_starts_with_every_secret_from_files(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The production overlay's shape: no secret in the environment, all of them as files."""
    secrets_env(
        clean_env,
        tmp_path,
        admin_api_key=ADMIN_KEY,
        postgres_url=PG_URL,
        anthropic_api_key="sk-ant-prod",
        audit_master_key="A" * 43 + "=",
        redis_password="redis-pw",
    )
    clean_env.setenv("QUARTERDECK_ENV", "production")
    clean_env.setenv("QUARTERDECK_AUDIT_SIGNING_KEY_FILE", "/app/secrets/audit/signing.pem")
    clean_env.setenv("REDIS_URL", "redis://redis-cluster-0.redis-cluster:6379/0")
    s = load_settings()
    assert s.env == "production" and s.auth_required and not s.embedded_postgres
    assert s.redis_url is not None
    assert (
        s.redis_url.get_secret_value() == "redis://:redis-pw@redis-cluster-0.redis-cluster:6379/0"
    )
