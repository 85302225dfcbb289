"""Settings read from a directory of files, one file per secret: how Kubernetes and Docker hand
secrets to a process without putting them in its environment.

WHY: an environment variable is inherited by every child and readable through
``/proc/<pid>/environ`` by anything running as the same user, which is exactly what an agent's
``run_command`` is in a weak sandbox. A file in a secret volume (mode 0400/0440, owned by the
worker's uid/gid) is read once at start-up and is absent from the bubblewrap sandbox's filesystem
view, so the worker's environment holds only the directory's path.

The files are named by the setting's field name (``admin_api_key``, ``postgres_url``); the
directory may hold only such names, so a typo (``admin_key``) fails start-up instead of silently
leaving a secret unset. Entries starting with ``.`` are skipped: Kubernetes keeps its atomic-update
bookkeeping (``..data``, ``..2026_…``) there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from quarterdeck.exceptions import ConfigError

MAX_SECRET_FILE_BYTES = 64 * 1024


def read_secret_dir(directory: Path, fields: Mapping[str, bool]) -> dict[str, Any]:
    """Values from ``directory``: ``fields`` maps each allowed file name to whether its content is
    structured (a YAML/JSON mapping, e.g. per-tenant keys) rather than one string.

    Every problem is collected and raised together as one :class:`ConfigError`; a secret's content
    never appears in an error.
    """
    values: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    try:
        entries = sorted(directory.iterdir())
    except OSError as exc:
        raise ConfigError([(str(directory), f"cannot list the secrets directory: {exc}")]) from exc
    for path in entries:
        name = path.name
        if name.startswith("."):
            continue
        if name not in fields:
            problems.append(
                (str(path), f"not a secret setting (known: {', '.join(sorted(fields))})")
            )
            continue
        try:
            if not path.is_file():
                problems.append((str(path), "must be a regular file"))
                continue
            if path.stat().st_size > MAX_SECRET_FILE_BYTES:
                problems.append((str(path), f"larger than {MAX_SECRET_FILE_BYTES} bytes"))
                continue
            text = path.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            problems.append((str(path), f"cannot read: {type(exc).__name__}: {exc}"))
            continue
        if not text:
            problems.append((str(path), "is empty"))
            continue
        if fields[name]:
            try:
                parsed = yaml.safe_load(text)
            except yaml.YAMLError:
                parsed = None
            if not isinstance(parsed, dict):
                problems.append((str(path), "must hold a YAML or JSON mapping"))
                continue
            values[name] = parsed
        else:
            values[name] = text
    if problems:
        raise ConfigError(problems)
    return values


class SecretDirSource(PydanticBaseSettingsSource):
    """A pydantic-settings source over :func:`read_secret_dir`.

    ``locate`` returns the directory (or None for no directory) when the settings are built, so
    the choice can depend on the higher-priority sources. The directory in use is also returned as
    ``dir_field`` so the settings object says where its secrets came from.
    """

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        *,
        locate: Callable[[], Path | None],
        fields: Mapping[str, bool],
        dir_field: str,
    ) -> None:
        super().__init__(settings_cls)
        self.locate, self.fields, self.dir_field = locate, fields, dir_field

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        directory = self.locate()
        if directory is None:
            return {}
        return {self.dir_field: str(directory), **read_secret_dir(directory, self.fields)}
