"""Builds the configured provider from :class:`~quarterdeck.config.Settings`.

Provider modules are imported lazily, so a deployment running only the simulated provider never
imports an SDK it does not use, and an import problem in one provider cannot break the others.

Settings this reads that ``Settings`` may not define yet are looked up with ``getattr``:
``anthropic_base_url`` (``QUARTERDECK_ANTHROPIC_BASE_URL``), ``openai_base_url``
(``QUARTERDECK_OPENAI_BASE_URL``), ``openai_api_key`` (``QUARTERDECK_OPENAI_API_KEY``) and
``provider_timeout`` (``QUARTERDECK_PROVIDER_TIMEOUT``, seconds).
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import SecretStr

from quarterdeck.config import Settings
from quarterdeck.exceptions import ConfigError
from quarterdeck.providers.types import Provider

DEFAULT_PROVIDER_TIMEOUT = 600.0


def _setting(settings: Settings, name: str) -> str | None:
    """An optional string setting; falls back to its ``QUARTERDECK_*`` variable until the
    field exists on Settings (``extra="ignore"`` drops unknown variables today)."""
    value: Any = getattr(settings, name, None)
    if value is None:
        value = os.environ.get(f"QUARTERDECK_{name.upper()}")
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return str(value) if value not in (None, "") else None


def _timeout(settings: Settings) -> float:
    raw = _setting(settings, "provider_timeout")
    if raw is None:
        return DEFAULT_PROVIDER_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        raise ConfigError([("QUARTERDECK_PROVIDER_TIMEOUT", f"not a number: {raw!r}")]) from None
    if seconds <= 0:
        raise ConfigError([("QUARTERDECK_PROVIDER_TIMEOUT", "must be greater than zero")])
    return seconds


def build_provider(settings: Settings) -> Provider:
    """The provider named by ``settings.provider_name``: anthropic, openai or simulated."""
    name = settings.provider_name
    if name == "anthropic":
        from quarterdeck.providers.anthropic import AnthropicProvider

        if settings.anthropic_api_key is None:
            raise ConfigError(
                [("ANTHROPIC_API_KEY", "must be set when QUARTERDECK_PROVIDER=anthropic")]
            )
        return AnthropicProvider(
            settings.anthropic_api_key.get_secret_value(),
            base_url=_setting(settings, "anthropic_base_url"),
            timeout=_timeout(settings),
        )
    if name == "openai":
        from quarterdeck.providers.openai_compat import OpenAICompatProvider

        base_url = _setting(settings, "openai_base_url")
        if base_url is None:
            raise ConfigError(
                [
                    (
                        "QUARTERDECK_OPENAI_BASE_URL",
                        "must be set when QUARTERDECK_PROVIDER=openai "
                        "(e.g. http://localhost:8000/v1 for vLLM)",
                    )
                ]
            )
        return OpenAICompatProvider(
            base_url,
            api_key=_setting(settings, "openai_api_key") or "none",
            timeout=_timeout(settings),
        )
    if name == "simulated":
        from quarterdeck.providers.simulated import SimulatedProvider

        return SimulatedProvider(
            latency=settings.latency_profile,
            error_rate=settings.simulated_error_rate,
            turns=settings.simulated_turns,
        )
    raise ConfigError([("QUARTERDECK_PROVIDER", f"unknown provider {name!r}")])
