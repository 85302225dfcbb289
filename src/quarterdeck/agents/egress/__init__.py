"""Network for agent commands only through Quarterdeck: the per-run egress proxy.

:mod:`.policy` decides (pure), :mod:`.http` reads and writes the proxy's bit of HTTP,
:mod:`.proxy` serves one run's UNIX socket, :mod:`.session` opens a proxy around each command of
a run whose agent type has ``network: egress`` and sends its records to the audit trail.
"""

from __future__ import annotations

from quarterdeck.agents.egress.policy import (
    EgressPolicy,
    Verdict,
    address_refusal,
)
from quarterdeck.agents.egress.proxy import EgressProxy, EgressRecord, system_resolver
from quarterdeck.agents.egress.session import RunEgress

__all__ = [
    "EgressPolicy",
    "EgressProxy",
    "EgressRecord",
    "RunEgress",
    "Verdict",
    "address_refusal",
    "system_resolver",
]
