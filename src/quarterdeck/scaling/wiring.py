"""Builds the scaler's pieces for one process from its settings (called by ``runtime.py``).

Apart from the composition root because ``runtime.py`` is already long, and because the
choices here are the scaler's own: which elector decides who scales, which target
``kubernetes`` mode writes, and which config the settings make.

Why the scaler has its own election (advisory lock ``locks.SCALER``, or Lease
``quarterdeck-scaler``) instead of borrowing the health monitor's: processes differ in whether
they run the health monitor (``processes.child_env`` turns it off in every child process, the
chaos runner in its workers), and a scaler that used the health monitor's lock where there is
one and a lock of its own elsewhere could lead twice at once — two writers of one replica count,
the very fight the scaler exists to end. One lock for every scaler, whatever else a process
runs, costs one idle connection per process that has the scaler on.
"""

from __future__ import annotations

from quarterdeck.config import Settings
from quarterdeck.exceptions import ConfigError
from quarterdeck.health.electors import build_elector, namespace_of
from quarterdeck.health.leader import Elector
from quarterdeck.resilience.breaker import Breakers, breaker_name
from quarterdeck.runs.store_protocol import RunStore
from quarterdeck.scaling.kube import ScaleTarget, kubernetes_scale_target
from quarterdeck.scaling.observe import Observer
from quarterdeck.scaling.policy import ScalerConfig
from quarterdeck.scaling.scaler import Scaler
from quarterdeck.scaling.service import ScalingService
from quarterdeck.store import locks
from quarterdeck.store.pool import Database

__all__ = ["SCALER_KEY", "SCALER_LEASE", "build_scaling", "scaler_config"]

SCALER_KEY = locks.SCALER
"""Advisory lock key of the scaler's own elector (every key is in :mod:`quarterdeck.store.locks`)."""
SCALER_LEASE = "quarterdeck-scaler"
"""Name of the scaler's own Lease when ``health_leader_backend`` is ``kubernetes``."""


def scaler_config(settings: Settings) -> ScalerConfig:
    """The policy's knobs from the settings (validated there, and again by the config)."""
    s = settings
    config = ScalerConfig(
        min_replicas=s.scaler_min_replicas,
        max_replicas=s.scaler_max_replicas,
        concurrency_per_worker=s.worker_concurrency,
        target_utilization=s.scaler_target_utilization,
        tolerance=s.scaler_tolerance,
        max_backlog_age_s=s.scaler_max_backlog_age,
        scale_up_stabilization_s=s.scaler_scale_up_stabilization,
        scale_down_stabilization_s=s.scaler_scale_down_stabilization,
        cooldown_s=s.scaler_cooldown,
        max_scale_up_step=s.scaler_max_step,
        cpu_guard=s.scaler_cpu_guard,
        memory_guard=s.scaler_memory_guard,
    )
    config.validate()
    return config


def target_name(settings: Settings) -> str | None:
    """``namespace/deployment`` the scaler decides for; None when it is off."""
    if settings.scaler_mode == "off":
        return None
    if settings.scaler_mode == "kubernetes" or settings.kubernetes_namespace:
        return f"{namespace_of(settings)}/{settings.scaler_deployment}"
    return settings.scaler_deployment


def _kubernetes_target(settings: Settings) -> ScaleTarget:
    """The worker Deployment's scale; no reachable API configuration is a configuration error
    (found at start-up), unlike an HPA owning the Deployment (found and recorded by a tick)."""
    s = settings
    try:
        return kubernetes_scale_target(s.kubernetes_api_url, namespace_of(s), s.scaler_deployment)
    except Exception as exc:
        raise ConfigError(
            [
                (
                    "QUARTERDECK_KUBERNETES_API_URL",
                    "QUARTERDECK_SCALER_MODE=kubernetes needs the Kubernetes API: set this, or "
                    f"run in a pod, or provide a kubeconfig ({type(exc).__name__}: {exc})",
                )
            ]
        ) from exc


def _own_elector(settings: Settings, db: Database) -> Elector:
    """An election of the scaler's own, on the deployment's backend (see health/electors.py)."""
    return build_elector(settings, db.url, key=SCALER_KEY, lease=SCALER_LEASE, role="scaler")


def build_scaling(
    settings: Settings,
    db: Database,
    run_store: RunStore,
    breakers: Breakers | None,
    elector: Elector | None = None,
    *,
    target: ScaleTarget | None = None,
) -> tuple[ScalingService, Scaler | None]:
    """The read side every API process serves, and the loop (None when the mode is off).

    ``elector``: None (the runtime) builds the scaler's own, which the scaler runs and stops
    with itself; one given is run by the caller (tests). ``target`` replaces the Kubernetes
    Deployment of ``kubernetes`` mode (tests). The caller runs :meth:`Scaler.run` as a task and
    cancels it (or calls :meth:`Scaler.stop`). Nothing here talks to Kubernetes or Postgres yet,
    so a conflict with an HPA is found by the first tick and recorded, never raised at start-up.
    """
    s = settings
    config = scaler_config(s)
    name = target_name(s)
    scaler: Scaler | None = None
    if s.scaler_mode != "off":
        assert name is not None
        if s.scaler_mode == "kubernetes":
            if target is None:
                target = _kubernetes_target(s)
            name = target.name
        observer = Observer(
            run_store,
            breakers,
            provider_breakers=[breaker_name(s.provider_name, s.model)],
            heartbeat_stale_s=s.worker_heartbeat_timeout,
        )
        scaler = Scaler(
            db,
            observer,
            elector if elector is not None else _own_elector(s, db),
            mode=s.scaler_mode,
            policy=s.scaler_policy,
            config=config,
            interval_s=s.scaler_interval,
            target_name=name,
            target=target if s.scaler_mode == "kubernetes" else None,
            own_elector=elector is None,
            retention_s=s.scaler_decision_retention,
        )
    leading = scaler
    service = ScalingService(
        db,
        mode=s.scaler_mode,
        policy=s.scaler_policy,
        target=name,
        interval_s=s.scaler_interval,
        config=config,
        is_leader=(lambda: leading.is_leader) if leading is not None else (lambda: False),
    )
    return service, scaler
