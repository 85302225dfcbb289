"""Incident, timeline, notification and Alertmanager shapes shared by the API, CLI and service."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator


class Severity(StrEnum):
    info = "info"
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def at_least(self, other: Severity) -> bool:
        return self.rank >= other.rank


_RANK = {s: i for i, s in enumerate(Severity)}


class IncidentStatus(StrEnum):
    open = "open"
    acknowledged = "acknowledged"
    resolved = "resolved"


class Source(StrEnum):
    health_check = "health_check"
    alertmanager = "alertmanager"
    manual = "manual"
    security = "security"


class ResolvedBy(StrEnum):
    auto = "auto"
    human = "human"
    alertmanager = "alertmanager"


class Kind(StrEnum):
    """What a notification says: a page, its all-clear, an FYI, or "a human is needed now"."""

    trigger = "trigger"
    resolve = "resolve"
    info = "info"
    escalation = "escalation"


class Incident(BaseModel):
    id: str
    service: str
    severity: Severity
    title: str
    description: str
    affected_components: list[str]
    suggested_actions: list[str]
    details: dict[str, Any]
    status: IncidentStatus
    source: Source
    dedup_key: str
    fingerprint: str | None
    occurrences: int
    opened_at: datetime
    last_seen_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: ResolvedBy | None
    resolution_note: str | None
    escalated_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> Incident:
        return cls.model_validate(dict(row))

    @property
    def duration_s(self) -> float | None:
        if self.resolved_at is None:
            return None
        return (self.resolved_at - self.opened_at).total_seconds()


class IncidentEvent(BaseModel):
    id: int
    incident_id: str
    ts: datetime
    type: str
    data: dict[str, Any]


NotificationStatus = Literal["pending", "sending", "sent", "failed", "held", "suppressed"]


class Notification(BaseModel):
    id: int
    incident_id: str
    channel: str
    kind: Kind
    status: NotificationStatus
    attempts: int
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
    held_by: str | None = Field(
        default=None, description="the maintenance window that held (or suppressed) it"
    )
    held_until: datetime | None = Field(
        default=None, description="that window's end when the notification was held"
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def note(self) -> str | None:
        """Why it was held, suppressed or late, in words (the API, CLI and dashboard show it)."""
        return silence_note(self.status, self.held_by)


# --- maintenance windows: what silences paging ------------------------------------------------
class WindowSpan(BaseModel):
    """A maintenance window as incidents see it: its id and its span, nothing else.

    The windows belong to ``health/`` (a floor above); incidents only read the table they live
    in, so the rule that windows silence paging needs no import upwards.
    """

    id: str
    starts_at: datetime
    ends_at: datetime


def covering_window(windows: Iterable[WindowSpan], at: datetime) -> WindowSpan | None:
    """The window covering ``at``, or None: ``[starts_at, ends_at)``, half-open like the
    report's, so back-to-back windows hand over without a gap or an overlap. When several cover
    ``at``, the one ending last: that is when the held pages are expected to go out."""
    covering = [w for w in windows if w.starts_at <= at < w.ends_at]
    return max(covering, key=lambda w: (w.ends_at, w.id)) if covering else None


def silenced(kind: Kind, channel_paged: bool) -> bool:
    """Whether a maintenance window holds (or, once resolved inside it, drops) a notification.

    Everything that would call a person is held: triggers, escalations, and FYIs. The one
    exception is an all-clear on a channel whose page already went out (the incident opened
    before the window): holding it would leave someone's pager ringing for the whole window,
    the opposite of what a silence is for.
    """
    return kind is not Kind.resolve or not channel_paged


def silence_note(status: str, held_by: str | None) -> str | None:
    if held_by is None:
        return None
    if status == "held":
        return f"held: maintenance window {held_by}"
    if status == "suppressed":
        return f"suppressed: opened and resolved inside maintenance window {held_by}"
    return f"held by maintenance window {held_by} until it ended"


class IncidentDetail(Incident):
    """One incident with its timeline and what was sent about it (``GET /v1/incidents/{id}``)."""

    timeline: list[IncidentEvent] = Field(default_factory=list)
    notifications: list[Notification] = Field(default_factory=list)


class IncidentPage(BaseModel):
    items: list[Incident]
    next_cursor: str | None


class IncidentFilter(BaseModel):
    status: list[IncidentStatus] | None = None
    severity: list[Severity] | None = None
    service: str | None = None
    cursor: str | None = None
    limit: int = 50


class AckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    actor: str = Field(default="api", min_length=1, max_length=200)


class ResolveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=10_000)
    by: Literal["human", "auto"] = "human"


# --- Alertmanager webhook (https://prometheus.io/docs/alerting/latest/configuration/#webhook_config)
class AlertmanagerAlert(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime | None = None  # Alertmanager spells its fields in camelCase
    endsAt: datetime | None = None
    generatorURL: str | None = None
    fingerprint: str = Field(min_length=1, max_length=200)


class AlertmanagerWebhook(BaseModel):
    """Payload version 4, the only one Alertmanager has ever sent."""

    model_config = ConfigDict(extra="ignore")

    version: Literal["4"]
    groupKey: str = ""
    truncatedAlerts: int = 0
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[AlertmanagerAlert] = Field(min_length=1, max_length=1000)

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value


class AlertmanagerResult(BaseModel):
    received: int
    opened: list[str]
    updated: list[str]
    resolved: list[str]
    ignored: int
