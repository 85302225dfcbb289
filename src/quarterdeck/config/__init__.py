"""Quarterdeck's single settings object.

Settings come from, highest priority first: explicit overrides, environment variables, a YAML file
(``--config``, ``QUARTERDECK_CONFIG``, or ``/app/config/quarterdeck.yaml`` where the guide mounts
its ConfigMap), then defaults. Validation is eager: :func:`load_settings` either returns a fully
valid object or raises :class:`ConfigError` listing *every* bad field by the name the user set.
"""

from quarterdeck.config.loading import (
    cli_config_path,
    cli_settings,
    cross_field_problems,
    load_settings,
    set_cli_config,
)
from quarterdeck.config.settings import Settings, env_name, env_names, secret_file_fields
from quarterdeck.config.sources import (
    DEFAULT_CONFIG_PATHS,
    DEFAULT_SECRETS_DIR,
    GUIDE_ENV_NAMES,
    SECRET_FIELDS,
    resolve_config_path,
)

__all__ = [
    "DEFAULT_CONFIG_PATHS",
    "DEFAULT_SECRETS_DIR",
    "GUIDE_ENV_NAMES",
    "SECRET_FIELDS",
    "Settings",
    "cli_config_path",
    "cli_settings",
    "cross_field_problems",
    "env_name",
    "env_names",
    "load_settings",
    "resolve_config_path",
    "secret_file_fields",
    "set_cli_config",
]
