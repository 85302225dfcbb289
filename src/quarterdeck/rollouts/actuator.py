"""What the controller needs from the cluster for one rollout, as a Protocol.

Why its own module: the controller (``controller.py``) calls it and the Kubernetes side
(``kube.py``) implements it; neither should import the other, and tests can hand the controller
any object with these methods.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from quarterdeck.rollouts.spec import RolloutSpec

__all__ = ["ActuatorFactory", "TrafficActuator"]


class TrafficActuator(Protocol):
    """The cluster side of one rollout; ``mode`` is ``nginx`` or ``replicas`` once resolved
    from ``spec.traffic``."""

    @property
    def mode(self) -> str: ...

    async def prepare(self, spec: RolloutSpec) -> None: ...

    async def set_weight(self, spec: RolloutSpec, weight: int) -> str: ...

    async def rollback(self, spec: RolloutSpec) -> None: ...

    async def promote_fully(self, spec: RolloutSpec) -> None: ...

    async def cleanup(self, spec: RolloutSpec) -> None: ...


ActuatorFactory = Callable[["RolloutSpec"], Awaitable[TrafficActuator]]
"""Builds the actuator for one rollout's spec (resolving ``auto`` may read the cluster)."""
