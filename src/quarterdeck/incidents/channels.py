"""Where notifications go: Slack, PagerDuty Events v2, a signed generic webhook, and email.

A channel only formats and sends one message; it does not retry, rate-limit or remember what it
sent (the :class:`~quarterdeck.incidents.notify.Notifier` does, against the
``notifications`` table). It reports failure as :class:`DeliveryError`, saying whether trying
again could help, so a typo'd webhook URL fails fast instead of burning the retry budget.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import smtplib
import time
from abc import ABC, abstractmethod
from email.message import EmailMessage
from typing import Any

import httpx

from quarterdeck.incidents.models import Incident, Kind, Severity

ALL_KINDS = frozenset(Kind)
SIGNATURE_HEADER = "X-Quarterdeck-Signature"
TIMESTAMP_HEADER = "X-Quarterdeck-Timestamp"
PAGERDUTY_SEVERITY = {
    Severity.critical: "critical",
    Severity.high: "error",
    Severity.medium: "warning",
    Severity.low: "info",
    Severity.info: "info",
}


class DeliveryError(Exception):
    def __init__(
        self, message: str, *, retryable: bool = True, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


def headline(incident: Incident, kind: Kind) -> str:
    """The one line a human reads first, on every channel."""
    sev = incident.severity.value.upper()
    what = f"{incident.service}: {incident.title}"
    if kind is Kind.trigger:
        return f"[{sev}] {what}"
    if kind is Kind.resolve:
        took = _human(incident.duration_s)
        by = incident.resolved_by.value if incident.resolved_by else "unknown"
        return f"[RESOLVED] {what} (after {took}, by {by})"
    if kind is Kind.info:
        return f"[RECOVERED] Auto-recovery completed for {what} (in {_human(incident.duration_s)})"
    return f"[ESCALATED {sev}] {what}: human intervention required"


def _human(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    return f"{s // 3600}h {s % 3600 // 60}m"


def body_lines(incident: Incident) -> list[str]:
    lines = [incident.description] if incident.description else []
    if incident.affected_components:
        lines.append("Affected: " + ", ".join(incident.affected_components))
    if incident.suggested_actions:
        lines.append("Suggested actions: " + "; ".join(incident.suggested_actions))
    lines.append(
        f"Incident {incident.id} ({incident.status.value}, source {incident.source.value})"
    )
    return lines


def check_response(response: httpx.Response, what: str) -> None:
    """Raise DeliveryError for a non-2xx answer: 408, 429 and 5xx are worth retrying."""
    if response.is_success:
        return
    retry_after: float | None = None
    header = response.headers.get("retry-after")
    if header and header.replace(".", "", 1).isdigit():
        retry_after = float(header)
    code = response.status_code
    retryable = code in (408, 429) or code >= 500
    raise DeliveryError(
        f"{what} answered {code}: {response.text[:300]}",
        retryable=retryable,
        retry_after=retry_after,
    )


async def post_json(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    what: str,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    try:
        response = await client.post(
            url, content=body, headers={"Content-Type": "application/json", **(headers or {})}
        )
    except httpx.HTTPError as exc:
        # A Slack webhook URL is a credential: keep it out of last_error and the timeline.
        reason = str(exc).replace(url, "<url>")
        raise DeliveryError(f"{what} unreachable: {type(exc).__name__}: {reason}") from exc
    check_response(response, what)
    return response


class Channel(ABC):
    """One destination. ``kinds`` it accepts; ``min_severity`` gates its triggers."""

    name: str = "channel"
    kinds: frozenset[Kind] = ALL_KINDS

    def __init__(self, min_severity: Severity = Severity.info) -> None:
        self.min_severity = min_severity

    @abstractmethod
    async def send(self, incident: Incident, kind: Kind, delivery_id: int) -> None: ...


class SlackChannel(Channel):
    """Slack incoming webhook: ``text`` for notifications and fallbacks, ``blocks`` for the UI."""

    name = "slack"

    def __init__(self, url: str, client: httpx.AsyncClient, min_severity: Severity) -> None:
        super().__init__(min_severity)
        self.url, self.client = url, client

    def payload(self, incident: Incident, kind: Kind) -> dict[str, Any]:
        title = headline(incident, kind)
        details = "\n".join(body_lines(incident))
        return {
            "text": title,
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
                {"type": "section", "text": {"type": "mrkdwn", "text": details[:3000]}},
                {
                    "type": "context",
                    "elements": [
                        {
                            "type": "mrkdwn",
                            "text": f"severity *{incident.severity.value}* · {kind.value} · "
                            f"`{incident.id}`",
                        }
                    ],
                },
            ],
        }

    async def send(self, incident: Incident, kind: Kind, delivery_id: int) -> None:
        body = json.dumps(self.payload(incident, kind)).encode()
        await post_json(self.client, self.url, body, "Slack")


class PagerDutyChannel(Channel):
    """PagerDuty Events API v2. ``dedup_key`` is the incident id, so a resolve closes the page.

    PagerDuty takes no FYIs: auto-recoveries of incidents that never paged stay in chat.
    """

    name = "pagerduty"
    kinds = frozenset({Kind.trigger, Kind.resolve, Kind.escalation})

    def __init__(
        self, routing_key: str, base_url: str, client: httpx.AsyncClient, min_severity: Severity
    ) -> None:
        super().__init__(min_severity)
        self.routing_key, self.client = routing_key, client
        self.url = base_url.rstrip("/") + "/v2/enqueue"

    def payload(self, incident: Incident, kind: Kind) -> dict[str, Any]:
        event: dict[str, Any] = {"routing_key": self.routing_key, "dedup_key": incident.id}
        if kind is Kind.resolve:
            return {**event, "event_action": "resolve"}
        severity = "critical" if kind is Kind.escalation else PAGERDUTY_SEVERITY[incident.severity]
        components = incident.affected_components
        return {
            **event,
            "event_action": "trigger",
            "client": "Quarterdeck",
            "payload": {
                "summary": headline(incident, kind)[:1024],
                "source": incident.service,
                "severity": severity,
                "timestamp": incident.opened_at.isoformat(),
                "component": components[0] if components else incident.service,
                "group": incident.service,
                "class": incident.source.value,
                "custom_details": {
                    "incident_id": incident.id,
                    "description": incident.description,
                    "affected_components": components,
                    "suggested_actions": incident.suggested_actions,
                    "occurrences": incident.occurrences,
                    "escalated": kind is Kind.escalation,
                    **{k: v for k, v in incident.details.items() if k in ("labels", "reason")},
                },
            },
        }

    async def send(self, incident: Incident, kind: Kind, delivery_id: int) -> None:
        body = json.dumps(self.payload(incident, kind)).encode()
        await post_json(self.client, self.url, body, "PagerDuty")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` over ``"<timestamp>.<body>"``: the timestamp is signed so it can't be
    swapped, which is what lets a receiver reject replays of an old delivery."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """What a receiver of the generic webhook should run (constant-time, with a replay window)."""
    if not timestamp or not signature or not timestamp.isdigit():
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookChannel(Channel):
    """A generic JSON webhook, HMAC-SHA256 signed when a secret is configured."""

    name = "webhook"

    def __init__(
        self, url: str, secret: str | None, client: httpx.AsyncClient, min_severity: Severity
    ) -> None:
        super().__init__(min_severity)
        self.url, self.secret, self.client = url, secret, client

    async def send(self, incident: Incident, kind: Kind, delivery_id: int) -> None:
        body = json.dumps(
            {
                "event": kind.value,
                "delivery_id": delivery_id,
                "text": headline(incident, kind),
                "incident": incident.model_dump(mode="json"),
            }
        ).encode()
        timestamp = str(int(time.time()))
        headers = {
            "X-Quarterdeck-Event": kind.value,
            "X-Quarterdeck-Delivery": str(delivery_id),
            TIMESTAMP_HEADER: timestamp,
        }
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, timestamp, body)
        await post_json(self.client, self.url, body, "webhook", headers)


class EmailChannel(Channel):
    """Email over SMTP with stdlib ``smtplib`` in a thread (no SMTP client in the venv)."""

    name = "email"

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        recipients: list[str],
        min_severity: Severity,
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(min_severity)
        self.host, self.port, self.sender, self.recipients = host, port, sender, recipients
        self.username, self.password, self.starttls = username, password, starttls
        self.timeout = timeout

    def message(self, incident: Incident, kind: Kind, delivery_id: int) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = f"[Quarterdeck] {headline(incident, kind)}"[:250]
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["X-Quarterdeck-Incident"] = incident.id
        msg["X-Quarterdeck-Event"] = kind.value
        domain = self.sender.rpartition("@")[2] or "quarterdeck"
        msg["Message-ID"] = f"<{incident.id}.{kind.value}.{delivery_id}@{domain}>"
        msg.set_content("\n\n".join([headline(incident, kind), *body_lines(incident)]) + "\n")
        return msg

    def _send_blocking(self, msg: EmailMessage) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls()
            if self.username and self.password:
                smtp.login(self.username, self.password)
            smtp.send_message(msg, self.sender, self.recipients)

    async def send(self, incident: Incident, kind: Kind, delivery_id: int) -> None:
        msg = self.message(incident, kind, delivery_id)
        try:
            await asyncio.to_thread(self._send_blocking, msg)
        except smtplib.SMTPResponseException as exc:
            # 4xx is "try later", 5xx is "this will never work".
            raise DeliveryError(
                f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", retryable=exc.smtp_code < 500
            ) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(f"SMTP refused recipients: {exc}", retryable=False) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP failed: {type(exc).__name__}: {exc}") from exc
