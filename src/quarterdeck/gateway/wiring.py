"""The gateway of one API process, started with its collaborators, and what stops it.

The relay needs a recorder already writing (its batches start before the first call), an
inspector sharing the process's policy gate, audit trail and anomaly sink, and the budget holds
and breakers every other caller in the process uses. They stop in a fixed order after the HTTP
server has stopped: no new calls, then the last anomaly tasks, then every recorded call written
and its hold settled. Built here so the composition root only asks for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from quarterdeck.budgets.holds import BudgetHolds
from quarterdeck.config import Settings
from quarterdeck.gateway.api import build_gateway
from quarterdeck.gateway.inspect import Inspector
from quarterdeck.gateway.prices import GatewayPrices
from quarterdeck.gateway.recorder import CallRecorder
from quarterdeck.gateway.service import Gateway
from quarterdeck.incidents.anomalies import AnomalySink
from quarterdeck.providers.pricing import Pricing
from quarterdeck.resilience.breaker import Breakers
from quarterdeck.security.policy import PolicyGate
from quarterdeck.security.trail import AuditTrail
from quarterdeck.store.pool import Database

Closer = Callable[[], Awaitable[None]]


async def start_gateway(
    s: Settings,
    db: Database,
    *,
    pricing: Pricing,
    holds: BudgetHolds,
    gate: PolicyGate,
    trail: AuditTrail,
    anomalies: AnomalySink,
    breakers: Breakers | None,
) -> tuple[Gateway, list[Closer]]:
    """The started gateway and its closers, to be awaited in order at shutdown."""
    recorder = CallRecorder(db)
    await recorder.start()
    inspector = Inspector(mode=s.gateway_secrets, gate=gate, trail=trail, anomalies=anomalies)
    gateway = build_gateway(
        s,
        prices=GatewayPrices(pricing),
        recorder=recorder,
        holds=holds,
        inspector=inspector,
        breakers=breakers,
        known_models=pricing.models,
    )
    return gateway, [gateway.aclose, inspector.drain, recorder.aclose]
