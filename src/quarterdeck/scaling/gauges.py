"""The scaler's metrics, on the one registry (:data:`quarterdeck.metrics.REGISTRY`).

``claude_agent_scaler_desired_replicas`` is what KEDA (or an HPA through the adapter) scales
the workers on in ``metric`` mode, queried as ``max(claude_agent_scaler_desired_replicas)``
over every scraped pod. Only the leader may export it: a follower exporting a stale count, or a
0, would win or skew that ``max``. So the two replica gauges are *absent* until the leader sets
them and absent again once it loses leadership (a plain ``Gauge`` always exports a value, 0 by
default, hence the small collector). With no leader at all the series disappears, and KEDA
falls back to its ``fallback`` replicas instead of reading 0 as "scale to the minimum".
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from quarterdeck.metrics import REGISTRY

__all__ = ["CURRENT", "DECISIONS", "DESIRED", "ERRORS", "LeaderGauge"]


class LeaderGauge(Collector):
    """A gauge without labels that exports nothing until set, and nothing after ``clear()``."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name, self.documentation = name, documentation
        self.value: float | None = None
        REGISTRY.register(self)

    def set(self, value: float) -> None:
        self.value = float(value)

    def clear(self) -> None:
        self.value = None

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self.name, self.documentation)

    def collect(self) -> Iterator[Metric]:
        if self.value is not None:
            yield GaugeMetricFamily(self.name, self.documentation, value=self.value)


DESIRED = LeaderGauge(
    "claude_agent_scaler_desired_replicas",
    "Worker replicas the scaler's policy wants (the number KEDA scales on in metric mode); "
    "exported by the scaler's leader only",
)
CURRENT = LeaderGauge(
    "claude_agent_scaler_current_replicas",
    "Worker replicas the scaler's leader saw at its last decision (the Deployment's in "
    "kubernetes mode, its own last desired count otherwise)",
)
DECISIONS = Counter(
    "claude_agent_scaler_decisions_total",
    "Decisions of the scaler's leader, by direction (up, down, hold)",
    ["direction"],
    registry=REGISTRY,
)
ERRORS = Counter(
    "claude_agent_scaler_errors_total",
    "Scaler ticks that failed to read, act or record (Kubernetes or Postgres errors, a refusal "
    "because another autoscaler owns the Deployment)",
    registry=REGISTRY,
)
