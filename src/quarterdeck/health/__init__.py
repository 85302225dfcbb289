"""Health checks, auto-recovery and the leader election that keeps one monitor per deployment.

The guide's ``AutoRecoverySystem``, made safe: checks cost nothing (no paid API call), recovery
re-checks before claiming success, and every failure is a deduplicated incident that resolves
itself (``by="auto"``) when the check passes again or escalates when recovery fails.

The names below are imported on first use (:mod:`quarterdeck.kit.lazy`): every ``quarterdeck``
command goes through this package for ``health.maintenance_cli``, and the monitor brings asyncpg.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quarterdeck.kit.lazy import lazy_exports

if TYPE_CHECKING:
    from quarterdeck.health.checks import (
        AgentResponsivenessCheck,
        CheckResult,
        DatabaseCheck,
        FilesystemCheck,
        HealthCheck,
        RedisCheck,
    )
    from quarterdeck.health.defaults import default_checks
    from quarterdeck.health.leader import HEALTH_MONITOR_KEY, LeaderElector
    from quarterdeck.health.monitor import HealthMonitor
    from quarterdeck.health.provider import (
        PROVIDER_CALLS,
        ProviderCheck,
        observe_provider_call,
    )
    from quarterdeck.health.recovery import (
        LoggingScaleRequester,
        RecoveryResult,
        RecoveryStrategy,
        ScaleRequester,
    )

__all__ = [
    "HEALTH_MONITOR_KEY",
    "PROVIDER_CALLS",
    "AgentResponsivenessCheck",
    "CheckResult",
    "DatabaseCheck",
    "FilesystemCheck",
    "HealthCheck",
    "HealthMonitor",
    "LeaderElector",
    "LoggingScaleRequester",
    "ProviderCheck",
    "RecoveryResult",
    "RecoveryStrategy",
    "RedisCheck",
    "ScaleRequester",
    "default_checks",
    "observe_provider_call",
]
__getattr__ = lazy_exports(
    __name__,
    {
        "quarterdeck.health.checks": (
            "AgentResponsivenessCheck",
            "CheckResult",
            "DatabaseCheck",
            "FilesystemCheck",
            "HealthCheck",
            "RedisCheck",
        ),
        "quarterdeck.health.leader": ("HEALTH_MONITOR_KEY", "LeaderElector"),
        "quarterdeck.health.defaults": ("default_checks",),
        "quarterdeck.health.monitor": ("HealthMonitor",),
        "quarterdeck.health.provider": ("PROVIDER_CALLS", "ProviderCheck", "observe_provider_call"),
        "quarterdeck.health.recovery": (
            "LoggingScaleRequester",
            "RecoveryResult",
            "RecoveryStrategy",
            "ScaleRequester",
        ),
    },
)
