"""The event types Quarterdeck records, named ``<area>.<action>``.

Callers may record other well-formed types; these are the ones the integration emits and the
only ones that get their own value in the ``event_type`` metric label (others count as
``other``), which keeps the metric's cardinality fixed.
"""

from __future__ import annotations

RUN_CREATED = "run.created"
RUN_STARTED = "run.started"
RUN_COMPLETED = "run.completed"  # outcome says success, failure, cancelled, ...
RUN_CANCELLED = "run.cancelled"
TOOL_INTENT = "tool.intent"  # a tool call about to run: written durably before it runs
TOOL_CALL = "tool.call"  # its outcome (or its refusal), written within ~100 ms after
MODEL_CALL = "model.call"
PERMISSION_USED = "permission.used"
POLICY_DECISION = "policy.decision"
AUTH_DENIED = "auth.denied"
KEY_CREATED = "key.created"
KEY_REVOKED = "key.revoked"
KEY_ROTATED = "key.rotated"
ROLE_CHANGED = "role.changed"
CONFIG_CHANGED = "config.changed"
INCIDENT_OPENED = "incident.opened"
INCIDENT_ACKNOWLEDGED = "incident.acknowledged"
INCIDENT_RESOLVED = "incident.resolved"
INCIDENT_ESCALATED = "incident.escalated"
AUDIT_RETENTION_CHANGED = "audit.retention_changed"
AUDIT_TENANT_SHREDDED = "audit.tenant_shredded"
AUDIT_PURGED = "audit.purged"
AUDIT_EXPORTED = "audit.exported"
TENANT_ERASURE_REQUESTED = "tenant.erasure_requested"  # written before any of it is deleted
TENANT_ERASED = "tenant.erased"  # counts of what went, never content
RUNS_PURGED = "runs.purged"  # the run-data retention purge, per tenant, counts only
GATEWAY_TOOL_USE = "gateway.tool_use"  # a tool call the upstream asked a gateway client to make
GATEWAY_TOOL_RESULT = "gateway.tool_result"  # its result, as the client sent it back
GATEWAY_SECRETS = "gateway.secrets"  # secrets found in an outgoing prompt (never the secret)
EGRESS_CONNECTION = "egress.connection"  # one connection through a run's egress proxy

KNOWN_EVENT_TYPES = frozenset(
    {
        RUN_CREATED,
        RUN_STARTED,
        RUN_COMPLETED,
        RUN_CANCELLED,
        TOOL_INTENT,
        TOOL_CALL,
        MODEL_CALL,
        PERMISSION_USED,
        POLICY_DECISION,
        AUTH_DENIED,
        KEY_CREATED,
        KEY_REVOKED,
        KEY_ROTATED,
        ROLE_CHANGED,
        CONFIG_CHANGED,
        INCIDENT_OPENED,
        INCIDENT_ACKNOWLEDGED,
        INCIDENT_RESOLVED,
        INCIDENT_ESCALATED,
        AUDIT_RETENTION_CHANGED,
        AUDIT_TENANT_SHREDDED,
        AUDIT_PURGED,
        AUDIT_EXPORTED,
        TENANT_ERASURE_REQUESTED,
        TENANT_ERASED,
        RUNS_PURGED,
        GATEWAY_TOOL_USE,
        GATEWAY_TOOL_RESULT,
        GATEWAY_SECRETS,
        EGRESS_CONNECTION,
    }
)
