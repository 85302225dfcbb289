"""Build a singleton role's leader election from settings: one place for every role.

Why: the health monitor, the scaler and the rollout controller each elect a leader of their
own (so a process that runs one role without another never holds a lock it does not use), on
the backend the deployment chose (``QUARTERDECK_HEALTH_LEADER_BACKEND``): a Postgres advisory
lock keyed per role, or a Kubernetes ``Lease`` named per role, with the same timings.
"""

from __future__ import annotations

from quarterdeck.config import Settings
from quarterdeck.health.leader import Elector, LeaderElector

__all__ = ["build_elector", "namespace_of"]


def namespace_of(settings: Settings) -> str:
    """``QUARTERDECK_KUBERNETES_NAMESPACE``, else the pod's own (from its mounted token)."""
    if settings.kubernetes_namespace:
        return settings.kubernetes_namespace
    from quarterdeck.health.lease import pod_namespace

    return pod_namespace()


def build_elector(settings: Settings, db_url: str, *, key: int, lease: str, role: str) -> Elector:
    """The role's elector: advisory lock ``key`` on ``db_url``, or the Lease ``lease``."""
    s = settings
    if s.health_leader_backend == "kubernetes":
        from quarterdeck.health.lease import LeaseElector, kubernetes_api

        return LeaseElector(
            kubernetes_api(s.kubernetes_api_url),
            namespace_of(s),
            lease,
            duration_s=s.health_lease_duration,
            retry_s=s.health_leader_retry,
            role=role,
        )
    return LeaderElector(db_url, key=key, retry_s=s.health_leader_retry, role=role)
