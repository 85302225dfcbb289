"""What an audit event is, what verification reports, and the shapes the API returns.

:class:`AuditEvent` is a slotted dataclass rather than a pydantic model because it is built on hot
paths (every tool call) and appended at tens of thousands per second; it validates only what would
make the event unstorable or unsearchable, and raises ``ValueError`` for that.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial
from typing import Any

from pydantic import BaseModel, Field

TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")
EVENT_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
SEVERITIES = ("info", "low", "medium", "high", "critical")
MAX_ID = 256


# Names already validated, so the hot path skips the regexes (bounded: cleared when large).
_TENANTS: set[str] = set()
_EVENT_TYPES: set[str] = set()


def _remember(seen: set[str], name: str) -> None:
    if len(seen) > 10_000:
        seen.clear()
    seen.add(name)


def check_tenant(tenant: str) -> str:
    if type(tenant) is str and tenant in _TENANTS:
        return tenant
    if not isinstance(tenant, str) or not TENANT_RE.fullmatch(tenant):
        raise ValueError(
            f"tenant {tenant!r} is not valid: 1-64 characters, letters, digits, _ . : -"
        )
    _remember(_TENANTS, tenant)
    return tenant


def _check_id(name: str, value: str | None, limit: int = MAX_ID) -> None:
    """Identifiers are stored in text columns: bounded, and no NUL (Postgres refuses it)."""
    if value is None:
        return
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise ValueError(f"{name} must be a string of at most {limit} characters without NUL")


@dataclass(slots=True, kw_only=True)
class Anomaly:
    """A policy decision or detector finding attached to the event it concerns."""

    rule_id: str
    severity: str
    decision: str = "flag"
    tags: list[str] = field(default_factory=list)
    description: str = ""

    def __post_init__(self) -> None:
        _check_id("anomaly.rule_id", self.rule_id, 128)
        _check_id("anomaly.decision", self.decision, 32)
        if self.severity not in SEVERITIES:
            raise ValueError(f"anomaly.severity must be one of {', '.join(SEVERITIES)}")
        if not isinstance(self.tags, list) or not all(isinstance(t, str) for t in self.tags):
            raise ValueError("anomaly.tags must be a list of strings")

    @classmethod
    def coerce(cls, value: Anomaly | Mapping[str, Any] | None) -> Anomaly | None:
        if value is None or isinstance(value, Anomaly):
            return value
        known = {"rule_id", "severity", "decision", "tags", "description"}
        unknown = set(value) - known
        if unknown:
            raise ValueError(f"anomaly has unknown fields: {', '.join(sorted(unknown))}")
        try:
            return cls(**dict(value))
        except TypeError as exc:  # a required field is missing
            raise ValueError(f"anomaly: {exc}") from None

    def public(self) -> dict[str, Any]:
        """The body part (severity lives in the searchable head)."""
        return {
            "decision": self.decision,
            "description": self.description,
            "rule_id": self.rule_id,
            "tags": list(self.tags),
        }


@dataclass(slots=True, kw_only=True)
class AuditEvent:
    """One audited action: the guide's AuditEvent fields plus actor, tenant, source IP, request id.

    ``sensitive`` (prompts, tool output, file contents) is encrypted at rest with the tenant's
    data key; everything else is stored in clear so it can be searched. Put personal data in
    ``sensitive`` or refer to people by pseudonymous ids: only ``sensitive`` is erased by
    crypto-shredding.
    """

    event_type: str
    tenant: str = "default"
    actor: str | None = None
    timestamp: datetime = field(default_factory=partial(datetime.now, UTC))
    agent_id: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    request_id: str | None = None
    source_ip: str | None = None
    operations: list[Any] = field(default_factory=list)
    data_accessed: list[Any] = field(default_factory=list)
    files_modified: list[Any] = field(default_factory=list)
    network_connections: list[Any] = field(default_factory=list)
    permissions: list[Any] = field(default_factory=list)
    duration_ms: int | None = None
    outcome: str = "success"
    anomaly: Anomaly | Mapping[str, Any] | None = None
    sensitive: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        # Every event passes here (tool calls, at tens of thousands per second): each check
        # takes its fast path for the usual value first and falls back to the full test.
        tenant = self.tenant
        if type(tenant) is not str or tenant not in _TENANTS:
            check_tenant(tenant)
        if type(self.event_type) is not str or self.event_type not in _EVENT_TYPES:
            if not isinstance(self.event_type, str) or len(self.event_type) > 64:
                raise ValueError("event_type must be a string of at most 64 characters")
            if not EVENT_TYPE_RE.fullmatch(self.event_type):
                raise ValueError(f"event_type {self.event_type!r} must look like 'run.created'")
            _remember(_EVENT_TYPES, self.event_type)
        for value in (
            self.actor,
            self.agent_id,
            self.user_id,
            self.session_id,
            self.request_id,
            self.source_ip,
        ):
            if value is not None and (
                type(value) is not str or len(value) > MAX_ID or "\x00" in value
            ):
                for name in (
                    "actor",
                    "agent_id",
                    "user_id",
                    "session_id",
                    "request_id",
                    "source_ip",
                ):
                    _check_id(name, getattr(self, name))  # raises, naming the field
        outcome = self.outcome
        if type(outcome) is not str or len(outcome) > 32 or "\x00" in outcome:
            _check_id("outcome", outcome, 32)
        ts = self.timestamp
        if (type(ts) is not datetime or ts.tzinfo is not UTC) and (
            not isinstance(ts, datetime) or (ts.tzinfo is not UTC and ts.utcoffset() is None)
        ):
            raise ValueError("timestamp must be a timezone-aware datetime")
        if self.duration_ms is not None:
            if isinstance(self.duration_ms, float):
                self.duration_ms = round(self.duration_ms)
            if not isinstance(self.duration_ms, int) or self.duration_ms < 0:
                raise ValueError("duration_ms must be a non-negative number")
        if self.anomaly is not None:
            self.anomaly = Anomaly.coerce(self.anomaly)
        sensitive = self.sensitive
        if (
            sensitive is not None
            and type(sensitive) is not dict
            and not isinstance(sensitive, Mapping)
        ):
            raise ValueError("sensitive must be a mapping")

    @property
    def anomaly_info(self) -> Anomaly | None:
        """The anomaly after ``__post_init__`` coerced a mapping into an :class:`Anomaly`."""
        return self.anomaly if isinstance(self.anomaly, Anomaly) else Anomaly.coerce(self.anomaly)


class ProblemKind(StrEnum):
    edited = "edited"
    deleted = "deleted"
    reordered = "reordered"
    truncated = "truncated"
    forged_checkpoint = "forged_checkpoint"
    checkpoint_mismatch = "checkpoint_mismatch"
    missing_checkpoint = "missing_checkpoint"
    forged_anchor = "forged_anchor"
    head_mismatch = "head_mismatch"
    too_many = "too_many"


class Problem(BaseModel):
    tenant: str
    kind: ProblemKind
    seq: int | None = Field(default=None, description="The event (or checkpoint) seq concerned.")
    detail: str

    def __str__(self) -> str:
        where = f" seq {self.seq}" if self.seq is not None else ""
        return f"[{self.tenant}]{where} {self.kind.value}: {self.detail}"


class VerifyReport(BaseModel):
    ok: bool
    tenants_checked: int = 0
    events_checked: int = 0
    checkpoints_checked: int = 0
    problems: list[Problem] = Field(default_factory=list)
    verified_at: datetime
    duration_s: float = 0.0


class StoredEvent(BaseModel):
    """An event as read back: public fields, chain position, and the decrypted sensitive part.

    ``sensitive`` is ``{"shredded": true}`` once the tenant's data key was destroyed, and
    ``{"undecryptable": true}`` when the key exists but the ciphertext does not open under it.
    """

    tenant: str
    seq: int
    hash: str
    timestamp: datetime
    event_type: str
    actor: str | None = None
    agent_id: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    request_id: str | None = None
    source_ip: str | None = None
    operations: list[Any] = Field(default_factory=list)
    data_accessed: list[Any] = Field(default_factory=list)
    files_modified: list[Any] = Field(default_factory=list)
    network_connections: list[Any] = Field(default_factory=list)
    permissions: list[Any] = Field(default_factory=list)
    duration_ms: int | None = None
    outcome: str | None = None
    anomaly: dict[str, Any] | None = None
    sensitive: dict[str, Any] | None = None


class EventPage(BaseModel):
    items: list[StoredEvent]
    next_cursor: str | None = None


@dataclass(slots=True, kw_only=True)
class EventFilter:
    tenant: str | None = None
    event_types: list[str] | None = None
    actor: str | None = None
    session_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    anomalies: bool = False
    severities: list[str] | None = None
    cursor: str | None = None
    limit: int = 100


class CheckpointOut(BaseModel):
    """A signed checkpoint as exported for off-site storage (one JSON Lines record)."""

    id: int
    tenant: str
    seq: int
    head_hash: str
    count: int
    created_at: datetime
    prev: str
    key_fingerprint: str
    public_key: str = Field(description="Raw Ed25519 public key, base64.")
    payload: str = Field(description="The exact canonical JSON that was signed.")
    signature: str = Field(description="Ed25519 signature over payload, base64.")


class CheckpointPage(BaseModel):
    items: list[CheckpointOut]
    next_cursor: int | None = None


class RetentionRequest(BaseModel):
    retention: str | float = Field(
        description="Seconds, or a duration such as 90d or 7y (a year is 365 days)."
    )


class RetentionOut(BaseModel):
    tenant: str
    retention_seconds: float


class ShredResult(BaseModel):
    tenant: str
    keys_shredded: int


class PurgeResult(BaseModel):
    tenant: str
    events_purged: int
    anchor_seq: int
