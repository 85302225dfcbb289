"""The five checks the health monitor runs by default, and the recovery strategy of each.

The guide's checks with safe implementations: the provider is judged from real traffic and a free
probe (never a paid message), the database by a query, Redis by a ping, the filesystem by free
space, and agents by heartbeats and the event loop's lag. Kept apart from :mod:`.monitor`, which
runs whatever checks it is given (tests give it their own).
"""

from __future__ import annotations

from quarterdeck.config import Settings
from quarterdeck.health.checks import (
    AgentResponsivenessCheck,
    DatabaseCheck,
    FilesystemCheck,
    HealthCheck,
    RedisCheck,
)
from quarterdeck.health.provider import ProviderCheck
from quarterdeck.health.recovery import (
    AgentRecovery,
    DatabaseRecovery,
    ProviderRecovery,
    RecheckOnly,
    RecoveryStrategy,
    RedisRecovery,
    ScaleRequester,
)
from quarterdeck.resilience.breaker import Breakers
from quarterdeck.store.pool import Database


def default_checks(
    settings: Settings,
    db: Database,
    breakers: Breakers | None = None,
    scaler: ScaleRequester | None = None,
) -> tuple[list[HealthCheck], dict[str, RecoveryStrategy]]:
    """The guide's five checks with our safe implementations and their strategies."""
    key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else None
    provider = ProviderCheck(
        settings.provider_name,
        api_key=key,
        base_url=settings.anthropic_base_url,
        breakers=breakers,
        window_s=getattr(settings, "health_provider_window", 300.0),
        max_error_rate=getattr(settings, "health_provider_max_error_rate", 0.5),
        fallbacks=settings.model_fallbacks,
    )
    database = DatabaseCheck(db)
    redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
    redis = RedisCheck(redis_url)
    filesystem = FilesystemCheck(
        settings.data_dir,
        min_free_bytes=int(getattr(settings, "health_min_free_bytes", 1024**3)),
        min_free_ratio=float(getattr(settings, "health_min_free_ratio", 0.05)),
    )
    agents = AgentResponsivenessCheck(
        db,
        stale_after_s=3 * settings.worker_heartbeat_timeout,
        default_timeout_s=settings.run_timeout,
        max_loop_lag_ms=float(getattr(settings, "health_max_loop_lag_ms", 500.0)),
    )
    checks: list[HealthCheck] = [provider, database, redis, filesystem, agents]
    strategies: dict[str, RecoveryStrategy] = {
        provider.name: ProviderRecovery(provider, breakers),
        database.name: DatabaseRecovery(db, database),
        redis.name: RedisRecovery(redis, breakers),
        filesystem.name: RecheckOnly(filesystem, "no safe automatic action for the filesystem"),
        agents.name: AgentRecovery(agents, scaler),
    }
    return checks, strategies
