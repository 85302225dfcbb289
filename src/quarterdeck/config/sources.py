"""Where settings come from besides the environment: the YAML file, the secrets directory, and
the guide's unprefixed variable names. Kept apart from :class:`~quarterdeck.config.settings.Settings`
so the field list reads as one table."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import yaml
from pydantic import AliasChoices, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from quarterdeck.exceptions import ConfigError

DEFAULT_CONFIG_PATHS = (Path("/app/config/quarterdeck.yaml"), Path("/app/config/quarterdeck.yml"))
# Where the Kubernetes manifests mount the secret volume; used when it exists and no
# QUARTERDECK_SECRETS_DIR says otherwise (see kit/secret_files.py for why files, not env).
DEFAULT_SECRETS_DIR = Path("/var/run/secrets/quarterdeck")
GUIDE_ENV_NAMES = {
    "postgres_url": "POSTGRES_URL",
    "redis_url": "REDIS_URL",
    "anthropic_api_key": "ANTHROPIC_API_KEY",
    "log_level": "LOG_LEVEL",
}


def guide(name: str) -> Any:
    return AliasChoices(GUIDE_ENV_NAMES[name], f"QUARTERDECK_{GUIDE_ENV_NAMES[name]}", name)


class YamlSource(PydanticBaseSettingsSource):
    """Reads the optional YAML file; keys are the field names (``worker_concurrency: 20``)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self.path = path
        self._data: dict[str, Any] | None = None

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if self._data is None:  # read once: the secrets source asks it for secrets_dir too
            self._data = self._read()
        return self._data

    def _read(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        try:
            data = yaml.safe_load(self.path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError([(str(self.path), f"cannot read config file: {exc}")]) from exc
        if not isinstance(data, dict):
            raise ConfigError([(str(self.path), "config file must hold a mapping of settings")])
        unknown = sorted(set(data) - set(self.settings_cls.model_fields))
        if unknown:
            raise ConfigError([(str(self.path), f"unknown setting(s): {', '.join(unknown)}")])
        return data


def resolve_config_path(explicit: str | Path | None) -> Path | None:
    if explicit:
        return Path(explicit)
    from_env = os.environ.get("QUARTERDECK_CONFIG")
    if from_env:
        return Path(from_env)
    return next((p for p in DEFAULT_CONFIG_PATHS if p.exists()), None)


SECRET_FIELDS = frozenset(
    {
        "postgres_url",
        "redis_url",
        "redis_password",
        "gateway_upstream_api_key",
        "gateway_tenant_upstream_keys",
        "anthropic_api_key",
        "admin_api_key",
        "openai_api_key",
        "notify_slack_webhook_url",
        "notify_pagerduty_routing_key",
        "notify_webhook_secret",
        "notify_smtp_password",
        "audit_master_key",
        "metrics_token",
    }
)


def secrets_dir(init: PydanticBaseSettingsSource, yaml_source: YamlSource) -> Path | None:
    """The secrets directory: an override, QUARTERDECK_SECRETS_DIR, the YAML file, else the
    default mount point if it exists. One that is named but missing is an error."""
    named = init().get("secrets_dir")
    if named is None:
        named = next(
            (v for k, v in os.environ.items() if k.upper() == "QUARTERDECK_SECRETS_DIR"), None
        )
    if named is None:
        named = yaml_source().get("secrets_dir")
    if named in (None, ""):
        return DEFAULT_SECRETS_DIR if DEFAULT_SECRETS_DIR.is_dir() else None
    path = Path(str(named))
    if not path.is_dir():
        raise ConfigError([("QUARTERDECK_SECRETS_DIR", f"{path} is not a directory")])
    return path


def with_password(url: str, password: SecretStr) -> str:
    """``url`` with ``password`` added: in the userinfo, or as unix:// URLs take it."""
    secret = quote(password.get_secret_value(), safe="")
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"{url}{'&' if parts.query else '?'}password={secret}"  # keeps unix:///
    user, _, host = parts.netloc.rpartition("@")  # the user part as written (no password)
    return urlunsplit(parts._replace(netloc=f"{user}:{secret}@{host}"))


def comma_or_json_list(value: Any) -> Any:
    """A list setting from the environment: ``a, b`` (what people type) or ``["a", "b"]``
    (what older docs said); a list from YAML or overrides passes through."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON list: {exc.msg}") from exc
    return [item.strip() for item in text.split(",") if item.strip()]
