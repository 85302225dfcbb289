"""Notification routing, retries, rate limits and exactly-once bookkeeping.

The ``notifications`` table is both the outbox and the idempotency record: the incident service
writes a row per (incident, channel, kind) in the same transaction as the change that calls for
it, and :meth:`Notifier.deliver` claims rows, sends them with retries and marks them sent or
failed. Because the row is unique, repeating an event (an Alertmanager redelivery, a retried API
call, two replicas sweeping together) never pages anyone twice; because it is written before
sending, a crash between commit and send is picked up by the next sweep instead of lost.

Maintenance windows (every one platform-wide) silence paging without losing anything: before
claiming, :meth:`Notifier.deliver` holds what a window covering ``now`` silences (status
``held``, naming the window) and, once no window covers ``now``, puts held rows back to pending,
so they page then, once, through the same unique row. The incident itself is opened and
recorded as usual; what is resolved inside a window is suppressed by the incident service.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import structlog
from pydantic import BaseModel, Field, SecretStr

from quarterdeck import metrics
from quarterdeck.config import Settings
from quarterdeck.incidents import outbox_repository as outbox
from quarterdeck.incidents import repository as repo
from quarterdeck.incidents.channels import (
    Channel,
    DeliveryError,
    EmailChannel,
    PagerDutyChannel,
    SlackChannel,
    WebhookChannel,
)
from quarterdeck.incidents.models import (
    Incident,
    Kind,
    Notification,
    Severity,
    covering_window,
    silenced,
)
from quarterdeck.kit.backoff import scheduled_delay
from quarterdeck.kit.clock import utcnow
from quarterdeck.store.pool import Database

log = structlog.get_logger(__name__)

DEFAULT_RATE_LIMITS = {"slack": 1.0, "pagerduty": 2.0, "webhook": 10.0, "email": 1.0}
"""Messages per second. Slack documents 1/s per incoming webhook; PagerDuty 120/min per key."""


class NotificationSettings(BaseModel):
    """Where and how incidents are announced. A channel is on when its destination is set."""

    slack_webhook_url: SecretStr | None = None
    pagerduty_routing_key: SecretStr | None = None
    pagerduty_url: str = "https://events.pagerduty.com"
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_from: str = "quarterdeck@localhost"
    smtp_to: list[str] = Field(default_factory=list)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False

    min_severity: Severity = Severity.medium
    pagerduty_min_severity: Severity = Severity.high
    escalate_after_s: float = Field(default=4 * 3600.0, gt=0)
    notify_recoveries: bool = True

    max_attempts: int = Field(default=3, ge=1, le=20)
    retry_backoff_s: list[float] = Field(default_factory=lambda: [1.0, 5.0])
    max_rounds: int = Field(default=5, ge=1, description="Sweeps before a failure is final.")
    rate_limits: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_RATE_LIMITS))
    rate_limit_max_wait_s: float = Field(default=30.0, ge=0)
    request_timeout_s: float = Field(default=10.0, gt=0)
    claim_lease_s: float = Field(default=300.0, gt=0)

    @classmethod
    def from_settings(cls, settings: Settings) -> NotificationSettings:
        """Read ``notify_<field>`` attributes of the app Settings (absent ones keep defaults)."""
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            value = getattr(settings, f"notify_{name}", None)
            if value is not None:
                values[name] = value
        # A partial override ({"slack": 0.5}) keeps the other channels' limits.
        values["rate_limits"] = {**DEFAULT_RATE_LIMITS, **values.get("rate_limits", {})}
        return cls.model_validate(values)


class RateLimited(Exception):
    """No token would be free within the caller's maximum wait."""


class RateLimiter:
    """A channel's send rate, shared by every replica through Postgres.

    Waits rather than drops (a page must not be lost), up to ``max_wait``; the schedule lives in
    ``notification_slots``, so the rate holds for the fleet, not per process.
    """

    def __init__(self, db: Database, channel: str, rate_per_s: float) -> None:
        self.db, self.channel, self.rate = db, channel, rate_per_s

    async def acquire(self, max_wait: float = float("inf")) -> None:
        if self.rate <= 0:
            return
        async with self.db.acquire() as conn:
            wait = await outbox.reserve_slot(conn, self.channel, 1.0 / self.rate, max_wait)
        if wait is None:
            raise RateLimited(f"{self.channel} is rate limited for more than {max_wait:.0f}s")
        if wait > 0:
            await asyncio.sleep(wait)


def build_channels(s: NotificationSettings, client: httpx.AsyncClient) -> list[Channel]:
    channels: list[Channel] = []
    if s.slack_webhook_url is not None:
        channels.append(
            SlackChannel(s.slack_webhook_url.get_secret_value(), client, s.min_severity)
        )
    if s.pagerduty_routing_key is not None:
        key = s.pagerduty_routing_key.get_secret_value()
        channels.append(PagerDutyChannel(key, s.pagerduty_url, client, s.pagerduty_min_severity))
    if s.webhook_url:
        secret = s.webhook_secret.get_secret_value() if s.webhook_secret else None
        channels.append(WebhookChannel(s.webhook_url, secret, client, s.min_severity))
    if s.smtp_host and s.smtp_to:
        channels.append(
            EmailChannel(
                s.smtp_host,
                s.smtp_port,
                s.smtp_from,
                list(s.smtp_to),
                s.min_severity,
                username=s.smtp_username,
                password=s.smtp_password.get_secret_value() if s.smtp_password else None,
                starttls=s.smtp_starttls,
                timeout=s.request_timeout_s,
            )
        )
    return channels


class Notifier:
    """Decides who hears about an incident event, and delivers what the outbox holds."""

    def __init__(
        self,
        settings: NotificationSettings,
        db: Database,
        *,
        channels: list[Channel] | None = None,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.db = db
        self.clock = clock
        self._owns_client = client is None
        self.client = client or httpx.AsyncClient(timeout=settings.request_timeout_s)
        chosen = channels if channels is not None else build_channels(settings, self.client)
        self.channels: dict[str, Channel] = {c.name: c for c in chosen}
        self.limiters = {
            name: RateLimiter(db, name, settings.rate_limits.get(name, 0.0))
            for name in self.channels
        }
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- routing: which (channel, kind) rows an event writes ---------------------------------
    def on_open(self, incident: Incident) -> list[tuple[str, str]]:
        return [
            (c.name, Kind.trigger.value)
            for c in self.channels.values()
            if Kind.trigger in c.kinds and incident.severity.at_least(c.min_severity)
        ]

    def on_escalation(self) -> list[tuple[str, str]]:
        """Every channel: escalation means a human is needed whatever the severity gate says."""
        return [
            (c.name, Kind.escalation.value)
            for c in self.channels.values()
            if Kind.escalation in c.kinds
        ]

    def on_resolve(self, incident: Incident, paged: set[str]) -> list[tuple[str, str]]:
        """An all-clear where someone was paged; an FYI elsewhere when it healed by itself."""
        out: list[tuple[str, str]] = []
        auto = incident.resolved_by is not None and incident.resolved_by.value == "auto"
        for c in self.channels.values():
            if c.name in paged and Kind.resolve in c.kinds:
                out.append((c.name, Kind.resolve.value))
            elif auto and self.settings.notify_recoveries and Kind.info in c.kinds:
                out.append((c.name, Kind.info.value))
        return out

    # -- delivery ------------------------------------------------------------------------------
    def dispatch(self, incident_id: str | None = None) -> None:
        """Deliver in the background; the outbox row makes this safe to lose on a crash."""
        if not self.channels:
            return
        task = asyncio.create_task(self._deliver_quietly(incident_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver_quietly(self, incident_id: str | None) -> None:
        try:
            await self.deliver(incident_id)
        except Exception as exc:  # the sweep will try again
            log.warning("notification_delivery_failed", incident=incident_id, error=str(exc))

    async def drain(self) -> None:
        """Wait for background deliveries (tests, and shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self, timeout: float = 10.0) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drain(), timeout)
        for task in list(self._tasks):
            task.cancel()
        if self._owns_client:
            await self.client.aclose()

    @property
    def attempt_cap(self) -> int:
        """Attempts after which a failed row is final (every sweep's retries together)."""
        return self.settings.max_attempts * self.settings.max_rounds

    async def deliver(
        self, incident_id: str | None = None, *, now: datetime | None = None
    ) -> list[Notification]:
        """Claim undelivered rows (for one incident, or all) and send them once each.

        Channels are sent to concurrently; within one channel rows go in id order, so a trigger
        always leaves before the resolve that follows it. Maintenance windows are applied first
        (``now``, default the clock): held rows are not claimable.
        """
        await self.apply_windows(incident_id, now or self.clock())
        s = self.settings
        async with self.db.acquire() as conn:
            claimed = await outbox.claim_notifications(
                conn,
                incident_id,
                lease_s=s.claim_lease_s,
                max_attempts=self.attempt_cap,
                limit=500,
            )
        if not claimed:
            return []
        by_channel: dict[str, list[Notification]] = {}
        for n in claimed:
            by_channel.setdefault(n.channel, []).append(n)
        results = await asyncio.gather(
            *(self._deliver_channel(name, rows) for name, rows in by_channel.items())
        )
        return [n for batch in results for n in batch]

    async def apply_windows(self, incident_id: str | None, now: datetime) -> list[Notification]:
        """Hold what a window covering ``now`` silences, or release what is held when none does.

        One transaction; the sweep skips rows another sender has locked (claimed rows are going
        out already), and both moves are single-row-state changes, so a release racing a claim
        still sends each row once. Returns the rows held or released.
        """
        async with self.db.transaction() as conn:
            window = covering_window(await outbox.windows_covering(conn, now), now)
            if window is None:
                changed = await outbox.release_held(conn, incident_id)
                outcome = "released"
            else:
                candidates = await outbox.silence_candidates(
                    conn,
                    incident_id,
                    statuses=["pending"],
                    failed_below=self.attempt_cap,
                    skip_locked=True,
                )
                ids = [n.id for n, paged in candidates if silenced(n.kind, paged)]
                changed = await outbox.silence(conn, ids, "held", window) if ids else []
                outcome = "held"
            for n in changed:
                await record_silence(conn, n, outcome)
        if changed:
            metrics.NOTIFICATIONS_SILENCED.labels(outcome).inc(len(changed))
            log.info("notifications_" + outcome, count=len(changed), window=changed[0].held_by)
        return changed

    async def _deliver_channel(self, name: str, rows: list[Notification]) -> list[Notification]:
        done: list[Notification] = []
        incidents: dict[str, Incident | None] = {}
        for n in rows:
            if n.incident_id not in incidents:
                async with self.db.acquire() as conn:
                    incidents[n.incident_id] = await repo.get_incident(conn, n.incident_id)
            incident = incidents[n.incident_id]
            channel = self.channels.get(name)
            if channel is None or incident is None:
                # Configuration changed since the row was written: give up on it for good.
                cap = self.settings.max_attempts * self.settings.max_rounds
                done.append(await self._finish(n, False, cap, f"channel {name} not configured"))
                continue
            ok, attempts, error = await self._send_with_retries(channel, incident, n)
            done.append(await self._finish(n, ok, attempts, error))
        return done

    async def _send_with_retries(
        self, channel: Channel, incident: Incident, n: Notification
    ) -> tuple[bool, int, str | None]:
        s = self.settings
        attempts, error = 0, None
        for attempt in range(1, s.max_attempts + 1):
            try:
                await self.limiters[channel.name].acquire(s.rate_limit_max_wait_s)
            except RateLimited as exc:
                return False, attempts, str(exc)
            attempts += 1
            try:
                await channel.send(incident, n.kind, n.id)
                return True, attempts, None
            except DeliveryError as exc:
                error, retryable, retry_after = str(exc), exc.retryable, exc.retry_after
            except Exception as exc:  # a bug in formatting must not wedge the outbox
                error, retryable, retry_after = f"{type(exc).__name__}: {exc}", True, None
            log.info(
                "notification_attempt_failed",
                channel=channel.name,
                kind=n.kind.value,
                incident=incident.id,
                attempt=attempt,
                error=error,
            )
            if not retryable:
                break
            if attempt < s.max_attempts:
                delay = scheduled_delay(attempt, s.retry_backoff_s, jitter=0.1)
                await asyncio.sleep(max(delay, min(retry_after or 0.0, 60.0)))
        return False, attempts, error

    async def _finish(
        self, n: Notification, ok: bool, attempts: int, error: str | None
    ) -> Notification:
        async with self.db.transaction() as conn:
            row = await outbox.finish_notification(
                conn, n.id, ok=ok, attempts=attempts, error=error
            )
            await repo.append_event(
                conn,
                n.incident_id,
                "notification",
                {
                    "channel": n.channel,
                    "kind": n.kind.value,
                    "status": row.status,
                    "attempts": row.attempts,
                    "error": error,
                },
            )
        if not ok:
            log.warning("notification_failed", channel=n.channel, kind=n.kind.value, error=error)
        return row


async def record_silence(conn: asyncpg.Connection, n: Notification, outcome: str) -> None:
    """The timeline entry for a row a window held, released or suppressed (why nobody was paged,
    or why a page went out late)."""
    note = n.note if outcome != "released" else f"released: maintenance window {n.held_by} ended"
    await repo.append_event(
        conn,
        n.incident_id,
        "notification",
        {
            "channel": n.channel,
            "kind": n.kind.value,
            "status": n.status,
            "window": n.held_by,
            "note": note,
        },
    )
