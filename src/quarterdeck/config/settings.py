"""The one settings object: every setting, its default, its validation.

Values come from, highest priority first: explicit overrides, environment variables, secret files,
the YAML file, then defaults (see :mod:`quarterdeck.config.sources`).

Its first fields live in two base classes, each about one concern: the process's own (storage,
listeners, logs, process counts: :mod:`quarterdeck.config.process_settings`) and the gateway's
(:mod:`quarterdeck.config.gateway_settings`). Here: how the features behave.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import structlog
from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from quarterdeck.config.process_settings import ProcessSettings
from quarterdeck.config.sources import (
    GUIDE_ENV_NAMES,
    SECRET_FIELDS,
    YamlSource,
    secrets_dir,
    with_password,
)
from quarterdeck.config.validators import (
    Duration,
    HostList,
    LatencySpec,
    PathList,
    StrList,
)
from quarterdeck.kit.durations import parse_duration
from quarterdeck.kit.latency import LatencyProfile, parse_latency
from quarterdeck.kit.secret_files import SecretDirSource

log = structlog.get_logger(__name__)


class Settings(ProcessSettings):
    model_config = SettingsConfigDict(
        env_prefix="QUARTERDECK_", extra="ignore", populate_by_name=True, validate_default=True
    )
    _config_path: Path | None = None

    provider: Literal["auto", "anthropic", "openai", "simulated"] = "auto"
    anthropic_base_url: str | None = None
    openai_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    provider_timeout: Duration = 600.0
    pricing_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    default_model: str | None = None
    default_agent_type: str = "coder"
    run_timeout: Duration = 3600.0
    max_turns: int = Field(default=50, ge=1, le=10_000)

    retry_schedule: list[float] = Field(
        default_factory=lambda: [1.0, 5.0, 15.0, 30.0],
        min_length=1,
        description="Seconds before retry 1, 2, 3, ... (the guide's schedule); the last repeats.",
    )
    retry_max_attempts: int = Field(default=5, ge=1, le=100)
    retry_budget: Duration = 120.0
    breaker_failure_threshold: int = Field(default=5, ge=1, le=10_000)
    breaker_open_for: Duration = 60.0
    breaker_window: Duration = 30.0
    provider_requests_per_minute: float | None = Field(default=None, gt=0)
    provider_tokens_per_minute: float | None = Field(default=None, gt=0)
    provider_input_tokens_per_minute: float | None = Field(default=None, gt=0)
    provider_output_tokens_per_minute: float | None = Field(default=None, gt=0)
    unknown_model_price: str | None = Field(
        default=None,
        description="Known model whose price unknown models pay, in runs and gateway calls "
        "alike (marked estimated); unset: the most expensive known model.",
    )
    model_fallbacks: dict[str, list[str]] = Field(default_factory=dict)
    context_fallbacks: dict[str, list[str]] = Field(default_factory=dict)

    health_monitor_enabled: bool = True
    health_check_interval: Duration = 10.0
    health_leader_retry: Duration = 5.0
    health_leader_backend: Literal["postgres", "kubernetes"] = "postgres"
    health_lease_duration: Duration = 15.0
    kubernetes_api_url: str | None = None
    kubernetes_namespace: str | None = None
    health_provider_window: Duration = 300.0
    health_provider_max_error_rate: float = Field(default=0.5, gt=0, le=1)
    health_min_free_bytes: int = Field(default=1024**3, ge=0)
    health_min_free_ratio: float = Field(default=0.05, ge=0, lt=1)
    health_max_loop_lag_ms: float = Field(default=500.0, gt=0)
    health_escalate_after_failed_recoveries: int = Field(default=3, ge=1, le=1000)
    health_probe_retention_days: float = Field(
        default=400.0,
        gt=0,
        le=36500,
        description="Days the health monitor's per-tick probe history (the monthly report's "
        "probe coverage and uptime) is kept; older rows are purged hourly, in batches.",
    )

    # The autoscaler (scaling/). The defaults are scaling.policy.ScalerConfig's (config/ sits
    # below scaling/ and cannot read them; a unit test keeps the two equal). The mode's values
    # are scaling.models.ScalerMode's. Concurrency per worker is worker_concurrency; the
    # kubernetes mode's API and namespace are kubernetes_api_url and kubernetes_namespace.
    scaler_mode: Literal["off", "dry-run", "metric", "kubernetes"] = Field(
        default="off",
        description="off; dry-run (decide and record only); metric (export the desired count "
        "for KEDA or an HPA); kubernetes (write the worker Deployment's scale subresource).",
    )
    scaler_policy: Literal["quarterdeck", "guide-hpa", "guide-pressure"] = "quarterdeck"
    scaler_interval: Duration = 15.0
    scaler_deployment: str = Field(default="claude-agent-worker", min_length=1)
    scaler_min_replicas: int = Field(default=2, ge=0, le=10_000)
    scaler_max_replicas: int = Field(default=20, ge=1, le=10_000)
    scaler_target_utilization: float = Field(default=0.8, gt=0, le=1)
    scaler_tolerance: float = Field(default=0.1, ge=0, lt=1)
    scaler_max_backlog_age: Duration = 60.0
    scaler_scale_up_stabilization: Annotated[float, BeforeValidator(parse_duration)] = 0.0
    scaler_scale_down_stabilization: Annotated[float, BeforeValidator(parse_duration)] = 300.0
    scaler_cooldown: Annotated[float, BeforeValidator(parse_duration)] = 30.0
    scaler_max_step: int = Field(default=10, ge=1, le=10_000)
    scaler_cpu_guard: float = Field(default=0.9, gt=0)
    scaler_memory_guard: float = Field(default=0.9, gt=0)
    scaler_decision_retention: Duration = 7 * 86_400.0

    @field_validator("scaler_max_replicas")
    @classmethod
    def _scaler_max_not_below_min(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("scaler_min_replicas")  # absent when itself invalid
        if low is not None and value < low:
            raise ValueError(f"must be >= QUARTERDECK_SCALER_MIN_REPLICAS ({low})")
        return value

    # Progressive delivery (rollouts/). The service and its API always exist; this turns on
    # the leader-elected controller loop that moves canary weights (Kubernetes: the namespace
    # and API of kubernetes_namespace / kubernetes_api_url) and judges steps via Prometheus.
    rollouts_enabled: bool = False
    rollouts_interval: Duration = 15.0
    prometheus_url: str | None = None

    # Traces (tracing/): exported only when the standard OTEL_* variables ask for it
    # (OTEL_TRACES_EXPORTER=otlp or an OTEL_EXPORTER_OTLP_ENDPOINT). Prompts, completions and tool
    # arguments carry code and secrets, so they go on spans only when this says so.
    trace_content: bool = Field(
        default=False,
        description="Record prompt and completion content and tool arguments on spans.",
    )

    # The monthly report's ROI section (reports/). ROI and hours saved are assumptions, not
    # measurements: the report computes them only from these inputs (or the request's), prints
    # them beside the result and labels it an estimate; unset, the section says what to set.
    report_hourly_cost_usd: float | None = Field(
        default=None, gt=0, le=100_000, description="Loaded cost of one engineer-hour, USD."
    )
    report_minutes_saved_per_run: float | None = Field(
        default=None,
        ge=0,
        le=100_000,
        description="Engineer minutes one successful run saves (an estimate you supply).",
    )

    notify_slack_webhook_url: SecretStr | None = None
    notify_pagerduty_routing_key: SecretStr | None = None
    notify_pagerduty_url: str = "https://events.pagerduty.com"
    notify_webhook_url: str | None = None
    notify_webhook_secret: SecretStr | None = None
    notify_smtp_host: str | None = None
    notify_smtp_port: int = Field(default=25, ge=1, le=65535)
    notify_smtp_from: str = "quarterdeck@localhost"
    notify_smtp_to: StrList = Field(default_factory=list)
    notify_smtp_username: str | None = None
    notify_smtp_password: SecretStr | None = None
    notify_smtp_starttls: bool = False
    notify_min_severity: Literal["info", "low", "medium", "high", "critical"] = "medium"
    notify_pagerduty_min_severity: Literal["info", "low", "medium", "high", "critical"] = "high"
    notify_escalate_after_s: Duration = 14400.0
    notify_rate_limits: dict[str, float] = Field(default_factory=dict)
    notify_max_attempts: int = Field(default=3, ge=1, le=20)

    agent_types: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Extra or overriding agent types (YAML)."
    )
    workspace_retention: Literal["keep", "delete_succeeded", "delete"] = "keep"
    command_timeout: Duration = 120.0
    tool_output_limit: int = Field(default=30_000, ge=1_000, le=10_000_000)
    sandbox_network: bool = Field(
        default=False,
        description="Host network for run_command in the weak modes (unshare, rlimits) only; "
        "bwrap mode has no network, or only the egress proxy.",
    )
    sandbox_mode: Literal["auto", "bwrap", "unshare", "rlimits"] = Field(
        default="auto", description="Isolation mode for agent commands; auto = strongest."
    )
    sandbox_allow_weak: bool = Field(
        default=False, description="Let production start when only rlimits isolation exists."
    )
    sandbox_tmp_limit: int = Field(
        default=256 * 1024**2, ge=1024**2, description="Size of bwrap's private /tmp (memory)."
    )
    http_fetch_allowlist: StrList = Field(default_factory=list)
    egress_allowed_hosts: HostList = Field(
        default_factory=list,
        description="Hosts (comma list of names or globs) commands of agent types with "
        "network: egress may reach through the egress proxy; empty: none.",
    )
    workspace_roots: PathList = Field(
        default_factory=list,
        description="Server directories admins may seed workspaces from (path, local git); "
        "empty: none.",
    )
    workspace_max_bytes: int = Field(
        default=1024**3,
        ge=1024**2,
        description="Largest workspace: bounds source copies, and a command growing past it is "
        "killed (checked while it runs and after).",
    )
    workspace_max_files: int = Field(default=200_000, ge=10)
    workspace_checkpoint_max_bytes: int = Field(
        default=256 * 1024**2,
        ge=1024**2,
        description="Compressed bytes a run's workspace checkpoints may hold in Postgres in all "
        "(the base plus every turn's change); past it the run fails "
        "(workspace_checkpoint_too_large).",
    )
    workspace_checkpoint_turn_max_bytes: int = Field(
        default=64 * 1024**2,
        ge=1024**2,
        description="Compressed bytes one turn's workspace change may add; past it the run "
        "fails (workspace_checkpoint_too_large).",
    )
    git_allowed_hosts: StrList = Field(
        default_factory=lambda: ["github.com", "gitlab.com", "bitbucket.org"],
        description="Hosts https git workspaces may be cloned from; empty: any public host.",
    )

    simulated_latency: LatencySpec = Field(
        default="0",
        description="0, 2s, or lognormal:1.5s:0.6; unset, `up` with the simulated provider "
        "uses DEMO_LATENCY (cli.py) so a demo's runs last long enough to follow and cancel.",
    )
    simulated_error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    simulated_turns: int = Field(
        default=0, ge=0, le=1000, description="Turns per simulated run; 0 lets the script choose."
    )

    auth_enabled: bool | None = Field(
        default=None,
        description="Require API keys; unset means on in production, off in development.",
    )
    ui_session_lifetime: Duration = Field(
        default=43_200.0,
        description="How long a web dashboard sign-in lasts (its key is re-checked on every "
        "request, so a revoked key ends it at once).",
    )
    ui_secure_cookies: bool | None = Field(
        default=None,
        description="Mark the dashboard's cookies Secure (HTTPS only); unset means on in "
        "production, and on for any request that came over HTTPS.",
    )
    rate_limit_key_per_minute: float = Field(default=600.0, ge=0)
    rate_limit_tenant_per_minute: float = Field(default=3000.0, ge=0)
    audit_master_key: SecretStr | None = None
    audit_master_key_file: Path | None = None
    audit_signing_key_file: Path | None = None
    audit_checkpoint_interval: Duration = 60.0
    audit_retention: Duration = 7 * 31_536_000.0
    run_retention_days: float = Field(
        default=90.0, gt=0, description="Finished runs older than this are purged (tenants/)."
    )
    run_purge_interval: Duration = 3600.0
    audit_purge_interval: Duration = 86_400.0
    audit_verify_interval: Duration = 86_400.0
    maintenance_enabled: bool = Field(
        default=True, description="Scheduled run-data purge, audit purge and full verification."
    )
    tenant_erase_wait: Duration = 60.0
    policy_rules_file: Path | None = None
    policy_egress_mode: Literal["blocklist", "allowlist"] = "blocklist"
    policy_egress_allowlist: StrList = Field(default_factory=list)
    policy_approval_timeout: Duration = 3600.0

    @model_validator(mode="after")
    def _deprecated_names(self) -> Settings:
        """Settings read under an old name still work, with a warning naming the new one."""
        if self.gateway_unknown_model_price is not None:
            log.warning(
                "config.deprecated_setting",
                setting="QUARTERDECK_GATEWAY_UNKNOWN_MODEL_PRICE",
                use="QUARTERDECK_UNKNOWN_MODEL_PRICE",
                ignored=self.unknown_model_price is not None,
            )
            if self.unknown_model_price is None:
                self.unknown_model_price = self.gateway_unknown_model_price
        return self

    @model_validator(mode="after")
    def _redis_urlwith_password(self) -> Settings:
        if self.redis_password is not None and self.redis_url is not None:
            self.redis_url = SecretStr(
                with_password(self.redis_url.get_secret_value(), self.redis_password)
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Priority: overrides, environment, secret files, YAML, defaults. An environment variable
        # beats its file so a developer can override one; the manifests set none for secrets.
        yaml_source = YamlSource(settings_cls, cls._config_path)
        secrets = SecretDirSource(
            settings_cls,
            locate=lambda: secrets_dir(init_settings, yaml_source),
            fields=secret_file_fields(),
            dir_field="secrets_dir",
        )
        return (init_settings, env_settings, secrets, yaml_source)

    # -- derived values -------------------------------------------------------------------
    @property
    def provider_name(self) -> str:
        if self.provider != "auto":
            return self.provider
        return "anthropic" if self.anthropic_api_key else "simulated"

    @property
    def model(self) -> str:
        if self.default_model:
            return self.default_model
        return "simulated-sonnet" if self.provider_name == "simulated" else "claude-sonnet-4-5"

    @property
    def latency_profile(self) -> LatencyProfile:
        return parse_latency(self.simulated_latency)

    @property
    def embedded_postgres(self) -> bool:
        return self.postgres_url is None

    @property
    def auth_required(self) -> bool:
        """Auth is on unless explicitly turned off; development turns it off by default."""
        if self.auth_enabled is None:
            return self.env == "production"
        return self.auth_enabled


def env_name(field: str) -> str:
    """The environment variable a user sets for ``field``."""
    return GUIDE_ENV_NAMES.get(field, f"QUARTERDECK_{field.upper()}")


def env_names() -> dict[str, str]:
    return {name: env_name(name) for name in Settings.model_fields}


def secret_file_fields() -> dict[str, bool]:
    """Settings a secret file may give (name -> holds a mapping): every secret setting."""
    fields: dict[str, bool] = {}
    for name, info in Settings.model_fields.items():
        annotation = str(info.annotation)
        if name in SECRET_FIELDS or "SecretStr" in annotation:
            fields[name] = annotation.startswith("dict")
    return fields
