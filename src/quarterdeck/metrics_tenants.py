"""Tenant names on the way out of the process: the ``tenant`` label's pseudonyms.

Separate from :mod:`quarterdeck.metrics` because it is a different concern: ``metrics`` defines
the series and bounds their label values where they are set; this module decides what a scrape
shows of them, rewriting every ``tenant`` label at exposition (``server.py`` wraps the registry
in :class:`TenantPseudonyms` unless ``QUARTERDECK_METRICS_TENANT_LABELS``). It knows nothing of
the metrics themselves, so it stays correct for every metric with a ``tenant`` label, present or
future. ``metrics`` re-exports its names, so ``from quarterdeck.metrics import ...`` still works.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

TENANT_LABEL = "tenant"
NOT_TENANTS = frozenset({"all"})
"""``tenant`` label values that name no tenant (the audit chain's all-tenants state)."""


def tenant_pseudonym(tenant: str) -> str:
    """``t-`` and the first 8 hex digits of the name's SHA-256.

    Stable across processes and restarts, so dashboards and alerts still split (and join) by
    tenant, without the name itself. A pseudonym, not anonymity: whoever can guess a tenant's
    name can compute its label (``quarterdeck``'s own logs and API map them back for operators).
    """
    if tenant in NOT_TENANTS:
        return tenant
    return "t-" + hashlib.sha256(tenant.encode()).hexdigest()[:8]


class TenantPseudonyms(Collector):
    """A read-only view of ``registry`` whose ``tenant`` labels are pseudonyms
    (:func:`tenant_pseudonym`).

    Rewritten at exposition rather than where the metrics are set, so no call site can forget
    it and every metric with a ``tenant`` label, present or future, is covered.
    """

    def __init__(self, registry: CollectorRegistry, names: frozenset[str] | None = None) -> None:
        self.registry = registry
        self.names = names

    def collect(self) -> Iterator[Metric]:
        source: Collector = self.registry
        if self.names is not None:
            source = self.registry.restricted_registry(self.names)
        for metric in source.collect():
            if any(TENANT_LABEL in sample.labels for sample in metric.samples):
                metric = copy.copy(metric)  # the families are fresh per collect; be safe anyway
                metric.samples = [
                    sample._replace(
                        labels={
                            **sample.labels,
                            TENANT_LABEL: tenant_pseudonym(sample.labels[TENANT_LABEL]),
                        }
                    )
                    if TENANT_LABEL in sample.labels
                    else sample
                    for sample in metric.samples
                ]
            yield metric

    def restricted_registry(self, names: Iterable[str]) -> TenantPseudonyms:
        """What prometheus_client's exposition asks for on ``?name[]=...``."""
        return TenantPseudonyms(self.registry, frozenset(names))
