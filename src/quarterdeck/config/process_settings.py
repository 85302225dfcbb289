"""The process's own settings, the first part of :class:`~quarterdeck.config.settings.Settings`.

Separate because they are a different concern from the rest: where this process keeps its data,
which databases and secrets it reaches, what it listens on and logs, and how many API and worker
processes it runs (the deployment's shape), while ``settings.py`` holds how the features behave
(providers, health, scaling, rollouts, notifications, sandboxes, audit). A base class only so the
one settings object stays readable (each part under ~400 lines); nothing builds it alone. It sits
right above :class:`~quarterdeck.config.gateway_settings.GatewaySettings` and holds the fields
that came first in ``Settings``, so the fields keep their order (schema, env names, errors).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from quarterdeck.config.gateway_settings import GatewaySettings
from quarterdeck.config.sources import guide
from quarterdeck.config.validators import (
    Duration,
    LabelList,
    PostgresUrl,
    RedisPassword,
    RedisUrl,
)
from quarterdeck.metrics import DEFAULT_OPERATIONS


class ProcessSettings(GatewaySettings):
    model_config = SettingsConfigDict(
        env_prefix="QUARTERDECK_", extra="ignore", populate_by_name=True, validate_default=True
    )

    env: Literal["development", "production"] = "development"
    data_dir: Path = Field(default=Path(".data"), description="Embedded Postgres and workspaces.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", validation_alias=guide("log_level")
    )
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto",
        description="Log lines on stderr: JSON, coloured console lines, or auto (console on a "
        "terminal, JSON otherwise).",
    )

    postgres_url: PostgresUrl = Field(default=None, validation_alias=guide("postgres_url"))
    redis_url: RedisUrl = Field(default=None, validation_alias=guide("redis_url"))
    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=guide("anthropic_api_key")
    )
    admin_api_key: SecretStr | None = Field(default=None, description="Bootstrap admin key.")
    redis_password: RedisPassword = Field(
        default=None,
        description="Password added to REDIS_URL (which then must carry none), so the URL can "
        "live in the ConfigMap and only the password in a secret file.",
    )
    secrets_dir: Path | None = Field(
        default=None,
        description="Directory of secret files named by setting (admin_api_key, postgres_url, "
        "...); unset: /var/run/secrets/quarterdeck if it exists.",
    )

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    # Request bodies (security/auth/body_gate.py); larger ones get 413 before they are read.
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="Largest request body of every route but run submission and the gateway.",
    )
    run_max_body_bytes: int = Field(
        default=80 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="Largest body of POST /v1/runs and /v1/runs/batch: a tar workspace is up "
        "to 70,000,000 base64 characters (the CLI's 50 MiB upload), plus the prompt.",
    )
    metrics_port: int = Field(default=9090, ge=0, le=65535)
    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token the metrics listener requires (401 without it); unset: open.",
    )
    metrics_tenant_labels: bool = Field(
        default=False,
        description="Expose tenant names in metric labels; false: t-<8 hex of their SHA-256>.",
    )
    # Label values that reach Prometheus: anything outside these sets is counted as "other".
    metric_operations: LabelList = Field(
        default_factory=lambda: list(DEFAULT_OPERATIONS),
        description="Run operations (comma list) kept as the operation label; others: other.",
    )
    metric_projects: LabelList = Field(
        default_factory=list,
        description="Projects (comma list) kept as the coverage project label; empty: every "
        "named project is other.",
    )
    metric_models: LabelList = Field(
        default_factory=list,
        description="Model names (comma list) kept as the model label besides the price table's.",
    )
    db_pool_min: int = Field(default=2, ge=1)
    db_pool_max: int = Field(default=20, ge=1)

    worker_concurrency: int = Field(default=50, ge=1, le=100_000)
    worker_batch_size: int = Field(default=10, ge=1, le=1000)
    worker_processes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Worker processes per `up`/`worker` (this one plus N-1 children); one "
        "event loop uses one core, so raise it to the core count for CPU-bound load.",
    )
    api_processes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="API processes per `up`/`serve` (this one plus N-1 `serve` children), all "
        "on the HTTP port (SO_REUSEPORT): one event loop uses one core, and the gateway's "
        "relay is CPU-bound at a few hundred calls per second.",
    )
    worker_heartbeat_timeout: Duration = 10.0
    worker_dequeue_timeout: Duration = 5.0
    worker_poll_interval: float = Field(
        default=0.02,
        ge=0.001,
        le=5.0,
        description="Re-poll delay when work arrived during a dispatch (seconds).",
    )
    drain_timeout: Duration = 30.0
    max_attempts: int = Field(default=3, ge=1, le=100)
