"""Builds the rollouts' pieces for one process from its settings (called by ``runtime.py``).

Every API process gets the :class:`RolloutService` (reads, start, promote, abort: they only
write rows). The controller loop exists only with ``rollouts_enabled``, and acts only while it
leads. Why an election of its own (advisory lock ``locks.ROLLOUTS``, or the ``quarterdeck-rollouts``
Lease) rather than the health monitor's or the scaler's: as with the scaler, processes differ in
which loops they run, and a controller borrowing a lock that some processes do not hold could
lead twice at once — two writers of one canary weight, two incidents for one rollback.
"""

from __future__ import annotations

from quarterdeck.agents.templates import AgentCatalog
from quarterdeck.config import Settings
from quarterdeck.health.electors import build_elector, namespace_of
from quarterdeck.health.leader import Elector
from quarterdeck.incidents.service import IncidentService
from quarterdeck.rollouts.actuator import ActuatorFactory, TrafficActuator
from quarterdeck.rollouts.controller import RolloutController
from quarterdeck.rollouts.prometheus import Prometheus
from quarterdeck.rollouts.routing import CanaryRouter
from quarterdeck.rollouts.service import RolloutService
from quarterdeck.rollouts.spec import RolloutSpec
from quarterdeck.store import locks
from quarterdeck.store.pool import Database

__all__ = ["ROLLOUTS_KEY", "ROLLOUTS_LEASE", "build_rollouts"]

ROLLOUTS_KEY = locks.ROLLOUTS
"""Advisory lock key of the rollout controller's elector (every key: :mod:`quarterdeck.store.locks`)."""
ROLLOUTS_LEASE = "quarterdeck-rollouts"
"""Name of its Lease when ``health_leader_backend`` is ``kubernetes``."""


def _own_elector(settings: Settings, db: Database) -> Elector:
    """An election of the rollouts's own, on the deployment's backend (see health/electors.py)."""
    return build_elector(settings, db.url, key=ROLLOUTS_KEY, lease=ROLLOUTS_LEASE, role="rollouts")


def kubernetes_actuators(settings: Settings) -> ActuatorFactory:
    """The Kubernetes actuator for each rollout, in ``kubernetes_namespace`` (or the pod's)."""

    async def build(spec: RolloutSpec) -> TrafficActuator:
        from quarterdeck.rollouts.kube import kubernetes_traffic

        return await kubernetes_traffic(settings.kubernetes_api_url, namespace_of(settings), spec)

    return build


def build_rollouts(
    settings: Settings,
    db: Database,
    incidents: IncidentService,
    elector: Elector | None = None,
    *,
    actuators: ActuatorFactory | None = None,
    catalog: AgentCatalog | None = None,
    router: CanaryRouter | None = None,
) -> tuple[RolloutService, RolloutController | None]:
    """The service every API process serves, and the controller (None unless enabled).

    ``elector``: None (the runtime) builds the controller's own, run and stopped with it; one
    given is run by the caller (tests). ``actuators`` replaces the Kubernetes side (tests).
    ``catalog`` enables agent-configuration canaries; ``router`` is this process's routes. The
    caller runs :meth:`RolloutController.run` as a task and cancels it (or calls ``stop``).
    Nothing here talks to Kubernetes or Prometheus yet.
    """
    s = settings
    service = RolloutService(
        db, catalog=catalog, router=router, controller_enabled=s.rollouts_enabled
    )
    if not s.rollouts_enabled:
        return service, None
    controller = RolloutController(
        db,
        elector if elector is not None else _own_elector(s, db),
        actuators if actuators is not None else kubernetes_actuators(s),
        incidents,
        prometheus=Prometheus(s.prometheus_url) if s.prometheus_url else None,
        interval_s=s.rollouts_interval,
        own_elector=elector is None,
    )
    return service, controller
