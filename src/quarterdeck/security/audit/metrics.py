"""Prometheus metrics of the audit log.

The chain-validity gauge and the last-verification timestamp were declared up front in
:mod:`quarterdeck.metrics` (re-registering a name would fail), so they are reused from
there. ``claude_agent_audit_chain_valid`` carries a ``tenant`` label there; it is only ever set
with the single value ``all`` so its cardinality stays one whatever the number of tenants (which
tenant is broken is in the verification report, not in a label). Event types are bounded to the
known set; anything else counts as ``other``.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge

from quarterdeck.metrics import (
    AUDIT_CHAIN_VALID,
    AUDIT_LAST_VERIFY,
    REGISTRY,
    bounded,
)
from quarterdeck.security.audit.event_types import KNOWN_EVENT_TYPES

ALL = "all"

EVENTS = Counter(
    "claude_agent_audit_events_total",
    "Audit events durably appended by this process, by event type",
    ["event_type"],
    registry=REGISTRY,
)
DROPPED = Counter(
    "claude_agent_audit_events_dropped_total",
    "Audit events that could not be stored (rejected by the database, or still buffered when "
    "shutdown gave up); each is also logged",
    ["reason"],
    registry=REGISTRY,
)
BUFFERED = Gauge(
    "claude_agent_audit_buffered_events",
    "Audit events accepted but not yet written",
    registry=REGISTRY,
)
PROBLEMS = Gauge(
    "claude_agent_audit_chain_problems",
    "Problems (tampering evidence) found by the last audit-chain verification",
    registry=REGISTRY,
)
LAST_CHECKPOINT = Gauge(
    "claude_agent_audit_last_checkpoint_timestamp_seconds",
    "Unix time this process last wrote signed audit checkpoints",
    registry=REGISTRY,
)


def count_event(event_type: str, n: int = 1) -> None:
    EVENTS.labels(event_type=bounded(event_type, KNOWN_EVENT_TYPES)).inc(n)


def set_chain_state(valid: bool, problems: int) -> None:
    AUDIT_CHAIN_VALID.labels(tenant=ALL).set(1 if valid else 0)
    PROBLEMS.set(problems)
    AUDIT_LAST_VERIFY.set(time.time())
