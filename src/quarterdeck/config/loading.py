"""Building a valid :class:`~quarterdeck.config.settings.Settings`, or one error naming every bad
field by the name the user set; and the CLI's ``--config``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from quarterdeck.config.settings import Settings, env_name
from quarterdeck.config.sources import SECRET_FIELDS, resolve_config_path
from quarterdeck.exceptions import ConfigError


def _field_of(loc: str) -> str:
    """The field an error location names: pydantic reports env aliases (``POSTGRES_URL``)."""
    if loc in Settings.model_fields:
        return loc
    for name in Settings.model_fields:
        if loc in (env_name(name), f"QUARTERDECK_{name.upper()}"):
            return name
    return loc


def cross_field_problems(settings: Settings) -> list[tuple[str, str]]:
    """Rules that involve more than one setting, each reported under the setting to change."""
    problems: list[tuple[str, str]] = []
    if settings.db_pool_min > settings.db_pool_max:
        problems.append(("QUARTERDECK_DB_POOL_MIN", "must not exceed QUARTERDECK_DB_POOL_MAX"))
    if settings.env == "production":
        key = settings.admin_api_key.get_secret_value() if settings.admin_api_key else ""
        if len(key) < 32:
            problems.append(
                ("QUARTERDECK_ADMIN_API_KEY", "must be set to at least 32 characters in production")
            )
        if settings.auth_enabled is False:
            problems.append(("QUARTERDECK_AUTH_ENABLED", "must not be false in production"))
        if settings.audit_master_key is None and settings.audit_master_key_file is None:
            problems.append(
                (
                    "QUARTERDECK_AUDIT_MASTER_KEY",
                    "set it (or QUARTERDECK_AUDIT_MASTER_KEY_FILE) in production; development"
                    " generates one in the data directory",
                )
            )
        if settings.audit_signing_key_file is None:
            problems.append(
                (
                    "QUARTERDECK_AUDIT_SIGNING_KEY_FILE",
                    "set it in production: every replica must sign audit checkpoints with the"
                    " same Ed25519 key, or they flag each other's checkpoints as forged",
                )
            )
        if settings.postgres_url is None:
            problems.append(
                (
                    "POSTGRES_URL",
                    "must be set in production (the embedded database is for development)",
                )
            )
    return problems


def load_settings(config: str | Path | None = None, **overrides: Any) -> Settings:
    """Build and validate settings, or raise ConfigError naming every bad field.

    Values of secret settings are never echoed back in an error.
    """
    path = resolve_config_path(config)
    if path is not None and not path.exists():
        raise ConfigError([("--config", f"{path} does not exist")])
    Settings._config_path = path
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        errors: list[tuple[str, str]] = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"]]
            field = _field_of(loc[0]) if loc else ""
            name = env_name(field) if field in Settings.model_fields else (field or "settings")
            msg = err["msg"].removeprefix("Value error, ")
            value = err.get("input")
            secret = field in SECRET_FIELDS or field not in Settings.model_fields
            shown = "" if secret or value is None else f" (got {value!r})"
            errors.append((name, msg + shown))
        raise ConfigError(errors) from exc
    except SettingsError as exc:
        # A value from the environment that is not the JSON a list/dict setting expects: named
        # like any other bad field, never a traceback.
        found = re.search(r'field "(\w+)"', str(exc))
        field = found.group(1) if found else ""
        name = env_name(field) if field in Settings.model_fields else "settings"
        hint = 'must be JSON here, e.g. [1, 2] for a list or {"k": ["v"]} for a map'
        raise ConfigError([(name, hint)]) from exc
    finally:
        Settings._config_path = None
    problems = cross_field_problems(settings)
    if problems:
        raise ConfigError(problems)
    return settings


_cli_config: Path | None = None


def set_cli_config(path: Path | None) -> None:
    """The root command's ``--config``: every subcommand's :func:`cli_settings` reads it."""
    global _cli_config
    _cli_config = path


def cli_config_path() -> str | None:
    """The ``--config`` this process was started with, to hand on to processes it starts."""
    return str(_cli_config) if _cli_config is not None else None


def cli_settings() -> Settings:
    """Settings for a CLI command, or exit 2 with every bad field listed (never a traceback)."""
    import typer

    from quarterdeck.kit.console import err_console

    try:
        return load_settings(_cli_config)
    except ConfigError as exc:
        err_console.print(f"[bold red]error:[/] {exc.detail}", highlight=False)
        raise typer.Exit(2) from None
