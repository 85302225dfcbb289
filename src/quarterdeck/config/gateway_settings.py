"""The gateway's settings, a part of :class:`~quarterdeck.config.settings.Settings`.

A base class only so that the one settings object stays readable (each part about one
concern, under ~400 lines); nothing builds it alone. Its fields are ``QUARTERDECK_GATEWAY_*``
like every other setting, loaded, validated and documented with the rest.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from quarterdeck.config.validators import Duration


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="QUARTERDECK_", extra="ignore", populate_by_name=True, validate_default=True
    )

    # The Anthropic-compatible gateway (POST /v1/messages and friends on the API port).
    gateway_enabled: bool = True
    gateway_upstream_url: str | None = Field(
        default=None,
        description="Where gateway calls go; unset: QUARTERDECK_ANTHROPIC_BASE_URL, else "
        "Anthropic's API, or the built-in simulated upstream when there is no API key.",
    )
    gateway_upstream_api_key: SecretStr | None = Field(
        default=None, description="Upstream key for gateway calls; unset: ANTHROPIC_API_KEY."
    )
    gateway_tenant_upstream_keys: dict[str, SecretStr] = Field(
        default_factory=dict, description="Per-tenant upstream keys (tenant -> key)."
    )
    gateway_max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    gateway_max_retries: int = Field(
        default=1, ge=0, le=2, description="Retries before the first byte reaches the client."
    )
    gateway_retry_after_cap: Duration = Field(
        default=10.0, gt=0, description="Longest upstream retry-after the gateway waits out."
    )
    gateway_fallback: bool = Field(
        default=False,
        description="Default for keys without their own gateway_fallback: let their gateway "
        "calls fail over along QUARTERDECK_MODEL_FALLBACKS.",
    )
    gateway_unknown_model_price: str | None = Field(
        default=None,
        description="Deprecated name of unknown_model_price, still read (with a warning).",
    )
    gateway_budget_fail_open: bool = Field(
        default=False,
        description="Admit a call when the budget check cannot finish in time (default: refuse).",
    )
    gateway_budget_timeout: Duration = 2.0
    gateway_hold_ttl: Duration = 900.0
    gateway_key_tokens_per_minute: float | None = Field(default=None, gt=0)
    gateway_secrets: Literal["flag", "redact", "refuse"] = "flag"
    gateway_drain_on_disconnect: bool = Field(
        default=True,
        description="Keep reading an upstream stream its client left, to bill it exactly.",
    )
    gateway_max_drains: int = Field(default=64, ge=0, le=100_000)

    # Claude Code as a run's agent (agent types with runner: claude-code): the CLI reaches the
    # model only through this gateway, with a token minted for its run.
    claude_code_path: str | None = Field(
        default=None,
        description="The claude CLI (pinned @anthropic-ai/claude-code); unset: the one `make "
        "deps` installs under the venv, else `claude` on PATH.",
    )
    agent_gateway_url: str | None = Field(
        default=None,
        description="Where a worker's claude-code runs reach the gateway (http://host:port); "
        "unset: this host's API port on 127.0.0.1.",
    )
    claude_code_hook_timeout: Duration = Field(
        default=3600.0,
        gt=0,
        description="How long a claude-code tool call may wait at the policy gate (an operator's "
        "approval included) before it is refused.",
    )
