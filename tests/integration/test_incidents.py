"""Incidents, notifications and the Alertmanager receiver, against a real Postgres and real sockets.

Notifications go over HTTP and SMTP to the local receivers in :mod:`tests.support.receivers`;
nothing is patched. The service runs with inline delivery so a call returns after its
notifications were sent (or given up on), which keeps the exactly-once assertions deterministic.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from typer.testing import CliRunner

from quarterdeck import metrics
from quarterdeck.exceptions import InvalidState, NotFound
from quarterdeck.health.maintenance import MaintenanceRequest, MaintenanceService
from quarterdeck.incidents import (
    IncidentService,
    NotificationSettings,
    Notifier,
    build_incident_service,
)
from quarterdeck.incidents import api as incidents_api
from quarterdeck.incidents.channels import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify_signature,
)
from quarterdeck.incidents.cli import app as incidents_cli
from quarterdeck.incidents.notify import DEFAULT_RATE_LIMITS
from quarterdeck.kit.wiring import services
from quarterdeck.store.pool import Database
from tests.conftest import free_port
from tests.support.receivers import Receivers

pytestmark = pytest.mark.asyncio
SECRET = "s3cret-for-tests"
HTTP_CHANNELS = ("slack", "pagerduty", "webhook")


def notification_settings(receivers: Receivers, **overrides: Any) -> NotificationSettings:
    values: dict[str, Any] = {
        "slack_webhook_url": receivers.url("slack"),
        "pagerduty_routing_key": "R0UT1NGKEY0000000000000000000000",
        "pagerduty_url": receivers.pagerduty_base,
        "webhook_url": receivers.url("webhook"),
        "webhook_secret": SECRET,
        "smtp_host": "127.0.0.1",
        "smtp_port": receivers.smtp_port,
        "smtp_from": "quarterdeck@example.test",
        "smtp_to": ["oncall@example.test"],
        "retry_backoff_s": [0.01, 0.02],
        "rate_limits": {},
        "request_timeout_s": 5.0,
    }
    values.update(overrides)
    return NotificationSettings.model_validate(values)


@pytest.fixture
async def make_service(
    db: Database, receivers: Receivers
) -> AsyncIterator[Callable[..., IncidentService]]:
    made: list[IncidentService] = []

    def make(**overrides: Any) -> IncidentService:
        ns = notification_settings(receivers, **overrides)
        service = IncidentService(
            db, Notifier(ns, db), escalate_after_s=ns.escalate_after_s, inline_notifications=True
        )
        made.append(service)
        return service

    yield make
    for service in made:
        await service.aclose()


@pytest.fixture
async def service(make_service: Callable[..., IncidentService]) -> IncidentService:
    return make_service()


async def notifications(db: Database, incident_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    async with db.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM notifications WHERE incident_id = $1", incident_id)
    return {(r["channel"], r["kind"]): dict(r) for r in rows}


def delivered_for(receivers: Receivers, endpoint: str, incident_id: str) -> list[Any]:
    out = []
    for r in receivers.delivered(endpoint):
        body = r.json
        if incident_id in json.dumps(body):
            out.append(body)
    return out


# --- open, dedup, ack, resolve ---------------------------------------------------------------
async def test_open_is_deduplicated_by_key_and_records_the_timeline(service: IncidentService):
    first, created = await service.open_or_update(
        "anthropic_api", "high", "API failing", "5xx from the API", "api-down"
    )
    again, created_again = await service.open_or_update(
        "anthropic_api", "critical", "API failing", "still 5xx", "api-down"
    )
    assert created and not created_again
    assert again.id == first.id and again.id.startswith("inc_")
    assert again.occurrences == 2 and again.severity == "critical"
    detail = await service.get(first.id)
    timeline = [e for e in detail.timeline if e.type != "notification"]
    assert [e.type for e in timeline] == ["opened", "recurred"]
    assert {e.data["channel"] for e in detail.timeline if e.type == "notification"} == {
        "slack",
        "pagerduty",
        "webhook",
        "email",
    }
    recurred = timeline[1].data
    assert recurred["changes"]["severity"] == {"from": "high", "to": "critical"}
    assert recurred["changes"]["description"]["to"] == "still 5xx"
    page = await service.list(status=["open"])
    assert [i.id for i in page.items] == [first.id]

    await service.resolve(first.id, "human", "fixed")
    reopened, created = await service.open_or_update(
        "anthropic_api", "high", "API failing", "", "api-down"
    )
    assert created and reopened.id != first.id, "a resolved incident's key opens a new incident"


async def test_concurrent_opens_with_one_key_make_one_incident(service: IncidentService):
    results = await asyncio.gather(
        *(
            service.open_or_update("db", "medium", "pool exhausted", "", "db-pool")
            for _ in range(10)
        )
    )
    assert len({inc.id for inc, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    detail = await service.get(results[0][0].id)
    assert detail.occurrences == 10


async def test_acknowledge_and_resolve_are_idempotent(service: IncidentService):
    inc, _ = await service.open_or_update("redis", "low", "slow", "", "redis-slow")
    acked = await service.acknowledge(inc.id, "alice")
    assert acked.status == "acknowledged" and acked.acknowledged_by == "alice"
    assert (await service.acknowledge(inc.id, "bob")).acknowledged_by == "alice"
    done = await service.resolve(inc.id, "human", "restarted")
    assert done.status == "resolved" and done.resolved_by == "human"
    assert done.resolution_note == "restarted" and done.duration_s is not None
    again = await service.resolve(inc.id, "auto")
    assert again.resolved_by == "human" and again.resolved_at == done.resolved_at
    with pytest.raises(InvalidState):
        await service.acknowledge(inc.id, "carol")
    types = [e.type for e in (await service.get(inc.id)).timeline if e.type != "notification"]
    assert types == ["opened", "acknowledged", "resolved"]
    with pytest.raises(NotFound):
        await service.get("inc_01ARZ3NDEKTSV4RRFFQ69G5FAV")


async def test_mttr_and_auto_recovery_share(service: IncidentService):
    assert await service.mttr() is None and await service.auto_recovery_share() is None
    now = datetime.now(UTC)
    for n, (took, by) in enumerate([(60, "auto"), (120, "auto"), (300, "human")]):
        start = now - timedelta(hours=1)
        inc, _ = await service.open_or_update("svc", "info", f"t{n}", "", f"k{n}", opened_at=start)
        await service.resolve(inc.id, by, at=start + timedelta(seconds=took))
    old_start = now - timedelta(days=45)
    old, _ = await service.open_or_update("svc", "info", "old", "", "old", opened_at=old_start)
    await service.resolve(old.id, "human", at=old_start + timedelta(days=1))
    await service.open_or_update("svc", "info", "still open", "", "open")

    assert await service.mttr(30) == pytest.approx(160.0)
    assert await service.auto_recovery_share(30) == pytest.approx(2 / 3)
    # The 45-day-old one (a day to recover, by a human) counts in a 60-day window.
    assert await service.mttr(60) == pytest.approx((60 + 120 + 300 + 86400) / 4)
    assert await service.auto_recovery_share(60) == pytest.approx(2 / 4)


async def test_refresh_metrics_sets_the_gauges(service: IncidentService):
    long_ago = datetime.now(UTC) - timedelta(seconds=600)
    await service.open_or_update("a", "high", "one", "", "m1", opened_at=long_ago)
    await service.open_or_update("a", "high", "two", "", "m2")
    crit, _ = await service.open_or_update("a", "critical", "three", "", "m3")
    await service.acknowledge(crit.id, "me")
    done, _ = await service.open_or_update("a", "medium", "four", "", "m4", opened_at=long_ago)
    await service.resolve(done.id, "auto", at=long_ago + timedelta(seconds=90))
    await service.refresh_metrics()

    def value(name: str, labels: dict[str, str] | None = None) -> float | None:
        return metrics.REGISTRY.get_sample_value(name, labels or {})

    assert value("claude_agent_incidents_open", {"severity": "high"}) == 2
    assert value("claude_agent_incidents_open", {"severity": "critical"}) == 1
    assert value("claude_agent_incidents_open", {"severity": "medium"}) == 0
    assert value("claude_agent_incidents_open", {"severity": "info"}) == 0
    oldest = value("claude_agent_incident_oldest_open_age_seconds")
    assert oldest is not None and 600 <= oldest < 660
    assert value("claude_agent_mttr_seconds") == pytest.approx(90.0)


# --- escalation -----------------------------------------------------------------------------
async def test_stale_incidents_escalate_once_and_acknowledged_ones_do_not(
    service: IncidentService, receivers: Receivers, db: Database
):
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    stale, _ = await service.open_or_update(
        "agents", "low", "stuck", "", "stale", opened_at=two_hours_ago
    )
    owned, _ = await service.open_or_update(
        "agents", "low", "owned", "", "owned", opened_at=two_hours_ago
    )
    await service.acknowledge(owned.id, "bob")
    await service.open_or_update("agents", "low", "fresh", "", "fresh")
    assert not receivers.received, "low severity is below every trigger threshold"

    escalated = await service.escalate_stale(older_than_s=3600)
    assert [i.id for i in escalated] == [stale.id]
    assert await service.escalate_stale(older_than_s=3600) == []
    assert await service.escalate(stale.id, "recovery failed") is None

    for endpoint in HTTP_CHANNELS:
        assert len(delivered_for(receivers, endpoint, stale.id)) == 1, endpoint
    assert len(receivers.mails) == 1 and "ESCALATED" in receivers.mails[0].message["Subject"]
    pd = delivered_for(receivers, "pagerduty", stale.id)[0]
    assert pd["event_action"] == "trigger" and pd["payload"]["severity"] == "critical"
    rows = await notifications(db, stale.id)
    assert {k for k in rows} == {(c, "escalation") for c in (*HTTP_CHANNELS, "email")}
    assert all(r["status"] == "sent" for r in rows.values())
    detail = await service.get(stale.id)
    assert detail.escalated_at is not None
    assert [e.type for e in detail.timeline].count("escalated") == 1

    # Resolving after an escalation sends the all-clear to everyone who was escalated to.
    await service.resolve(stale.id, "human")
    assert delivered_for(receivers, "pagerduty", stale.id)[-1]["event_action"] == "resolve"


async def test_failed_recovery_escalates_immediately(
    service: IncidentService, receivers: Receivers
):
    inc, _ = await service.open_or_update("redis", "medium", "down", "", "redis-down")
    got = await service.escalate(inc.id, "auto-recovery failed: failover refused")
    assert got is not None and got.escalated_at is not None
    kinds = [b["event"] for b in delivered_for(receivers, "webhook", inc.id)]
    assert kinds == ["trigger", "escalation"]
    with pytest.raises(NotFound):
        await service.escalate("inc_01ARZ3NDEKTSV4RRFFQ69G5FAV", "x")


# --- notifications --------------------------------------------------------------------------
async def test_each_channel_gets_each_kind_exactly_once_despite_retries_and_repeats(
    service: IncidentService, receivers: Receivers, db: Database
):
    receivers.fail("slack", 2)
    receivers.fail("pagerduty", 1, status=429, retry_after=0.05)
    receivers.fail("smtp", 1)
    inc, _ = await service.open_or_update("db", "critical", "primary down", "", "db-primary")
    await service.open_or_update("db", "critical", "primary down", "", "db-primary")
    assert service.notifier is not None
    assert await service.notifier.deliver() == []  # nothing left to send
    await service.resolve(inc.id, "human", "failed over")
    await service.resolve(inc.id, "human", "failed over")
    await service.notifier.deliver()

    for endpoint in HTTP_CHANNELS:
        got = delivered_for(receivers, endpoint, inc.id)
        assert len(got) == 2, (endpoint, got)
    assert len(receivers.requests("slack")) == 4  # two injected 500s, then trigger and resolve
    assert len(receivers.mails) == 2
    rows = await notifications(db, inc.id)
    assert set(rows) == {(c, k) for c in (*HTTP_CHANNELS, "email") for k in ("trigger", "resolve")}
    assert all(r["status"] == "sent" for r in rows.values())
    assert rows[("slack", "trigger")]["attempts"] == 3
    assert rows[("pagerduty", "trigger")]["attempts"] == 2
    assert rows[("email", "trigger")]["attempts"] == 2
    assert rows[("slack", "resolve")]["attempts"] == 1


async def test_exhausted_retries_fail_and_the_sweep_delivers_later(
    service: IncidentService, receivers: Receivers, db: Database
):
    receivers.fail("webhook", 3)
    inc, _ = await service.open_or_update("api", "high", "errors", "", "api-errors")
    rows = await notifications(db, inc.id)
    assert rows[("webhook", "trigger")]["status"] == "failed"
    assert rows[("webhook", "trigger")]["attempts"] == 3
    assert "500" in rows[("webhook", "trigger")]["last_error"]
    assert delivered_for(receivers, "webhook", inc.id) == []

    await service.tick()  # the periodic sweep
    rows = await notifications(db, inc.id)
    assert rows[("webhook", "trigger")]["status"] == "sent"
    assert rows[("webhook", "trigger")]["attempts"] == 4
    await service.tick()
    assert len(delivered_for(receivers, "webhook", inc.id)) == 1
    assert len(delivered_for(receivers, "slack", inc.id)) == 1


async def test_a_permanent_error_is_not_retried(
    service: IncidentService, receivers: Receivers, db: Database
):
    receivers.fail("webhook", 1, status=400)
    inc, _ = await service.open_or_update("api", "high", "bad", "", "bad-hook")
    row = (await notifications(db, inc.id))[("webhook", "trigger")]
    assert row["status"] == "failed" and row["attempts"] == 1
    assert len(receivers.requests("webhook")) == 1


async def test_two_notifiers_sweeping_together_send_once(
    make_service: Callable[..., IncidentService], receivers: Receivers, db: Database
):
    writer = IncidentService(db, Notifier(notification_settings(receivers), db))
    writer.notifier.dispatch = lambda incident_id=None: None  # type: ignore[union-attr,method-assign]
    incidents = [
        (await writer.open_or_update("x", "critical", f"t{n}", "", f"race{n}"))[0] for n in range(5)
    ]
    assert receivers.received == []
    a, b = make_service(), make_service()
    assert a.notifier is not None and b.notifier is not None
    await asyncio.gather(a.notifier.deliver(), b.notifier.deliver())
    for inc in incidents:
        for endpoint in HTTP_CHANNELS:
            assert len(delivered_for(receivers, endpoint, inc.id)) == 1
    assert len(receivers.mails) == 5
    await writer.aclose()


async def test_pagerduty_events_v2_payload_dedup_key_and_resolve(
    service: IncidentService, receivers: Receivers
):
    inc, _ = await service.open_or_update(
        "anthropic_api",
        "high",
        "Anthropic API error rate 30%",
        "429s and 529s",
        "api-errors",
        affected_components=["provider:anthropic", "runs"],
        suggested_actions=["check status page", "enable fallback model"],
    )
    await service.resolve(inc.id, "auto")
    trigger, resolve = (r.json for r in receivers.delivered("pagerduty"))
    assert all(r.status == 202 for r in receivers.requests("pagerduty"))
    assert trigger["routing_key"] == "R0UT1NGKEY0000000000000000000000"
    assert trigger["event_action"] == "trigger" and trigger["dedup_key"] == inc.id
    payload = trigger["payload"]
    assert payload["severity"] == "error"  # high maps to PagerDuty's "error"
    assert payload["source"] == "anthropic_api" and payload["component"] == "provider:anthropic"
    assert "Anthropic API error rate 30%" in payload["summary"]
    assert payload["custom_details"]["incident_id"] == inc.id
    assert payload["custom_details"]["suggested_actions"][1] == "enable fallback model"
    assert resolve == {
        "routing_key": "R0UT1NGKEY0000000000000000000000",
        "dedup_key": inc.id,
        "event_action": "resolve",
    }
    # It was paged, so it gets the all-clear rather than an FYI, even though it healed itself.
    assert [b["event"] for b in delivered_for(receivers, "webhook", inc.id)] == [
        "trigger",
        "resolve",
    ]


async def test_severity_gates_and_auto_recovery_info(
    service: IncidentService, receivers: Receivers
):
    medium, _ = await service.open_or_update("redis", "medium", "latency", "", "redis-lat")
    assert delivered_for(receivers, "slack", medium.id)
    assert not delivered_for(receivers, "pagerduty", medium.id), "PagerDuty pages from high up"
    await service.resolve(medium.id, "human")
    assert not delivered_for(receivers, "pagerduty", medium.id)

    low, _ = await service.open_or_update("fs", "low", "disk 85%", "", "disk")
    assert receivers.requests("slack")[-1].json["text"] != low.title
    await service.resolve(low.id, "auto", "cleaned tmp")
    slack = delivered_for(receivers, "slack", low.id)
    assert len(slack) == 1 and "Auto-recovery completed" in slack[0]["text"]
    assert slack[0]["blocks"][0]["type"] == "header"
    assert [b["event"] for b in delivered_for(receivers, "webhook", low.id)] == ["info"]
    assert not delivered_for(receivers, "pagerduty", low.id)
    assert "RECOVERED" in receivers.mails[-1].message["Subject"]


async def test_webhook_hmac_signature_verifies_and_rejects_tampering_and_replay(
    service: IncidentService, receivers: Receivers
):
    inc, _ = await service.open_or_update("api", "critical", "down", "", "sig")
    (hit,) = receivers.delivered("webhook")
    ts, sig = hit.headers[TIMESTAMP_HEADER.lower()], hit.headers[SIGNATURE_HEADER.lower()]
    assert sig.startswith("sha256=") and hit.headers["x-quarterdeck-event"] == "trigger"
    assert verify_signature(SECRET, hit.body, ts, sig)
    assert not verify_signature("wrong", hit.body, ts, sig)
    assert not verify_signature(SECRET, hit.body + b" ", ts, sig)
    assert not verify_signature(SECRET, hit.body, str(int(ts) + 1), sig), "timestamp is signed"
    assert not verify_signature(SECRET, hit.body, ts, sig, now=int(ts) + 3600), "replay"
    assert hit.json["incident"]["id"] == inc.id


async def test_slack_rate_limit_is_honoured(
    make_service: Callable[..., IncidentService], receivers: Receivers
):
    # The receiver answers 429 to anything sooner than 0.1 s after the last post; the limiter
    # spaces posts 0.25 s apart at the sender, which leaves room for jitter on the way there.
    # Without the limiter all four would arrive within a few milliseconds.
    receivers.slack_min_interval = 0.1
    svc = make_service(rate_limits={"slack": 4.0})
    await asyncio.gather(
        *(svc.open_or_update("s", "critical", f"t{n}", "", f"rl{n}") for n in range(4))
    )
    hits = receivers.requests("slack")
    assert len(hits) == 4 and all(h.status == 200 for h in hits)
    gaps = [b.at - a.at for a, b in itertools.pairwise(hits)]
    assert min(gaps) >= 0.1, gaps


async def test_email_over_smtp(service: IncidentService, receivers: Receivers):
    inc, _ = await service.open_or_update(
        "db", "high", "replica lag", "lag 30s", "lag", suggested_actions=["check replica"]
    )
    (mail,) = receivers.mails
    msg = mail.message
    assert mail.mail_from == "quarterdeck@example.test" and mail.rcpt_to == ["oncall@example.test"]
    assert msg["Subject"] == "[Quarterdeck] [HIGH] db: replica lag"
    assert msg["X-Quarterdeck-Incident"] == inc.id
    body = msg.get_content()
    assert "lag 30s" in body and "check replica" in body and inc.id in body


async def test_build_incident_service_reads_notify_settings_and_delivers_in_background(
    db: Database, receivers: Receivers
):
    settings = SimpleNamespace(
        notify_slack_webhook_url=receivers.url("slack"),
        notify_min_severity="critical",
        notify_escalate_after_s=60.0,
        notify_rate_limits={"slack": 50.0},
    )
    svc = build_incident_service(settings, db)
    assert svc.escalate_after_s == 60.0 and not svc.inline_notifications
    assert svc.notifier is not None and list(svc.notifier.channels) == ["slack"]
    assert svc.notifier.settings.rate_limits == {**DEFAULT_RATE_LIMITS, "slack": 50.0}
    high, _ = await svc.open_or_update("svc", "high", "below the gate", "", "bg1")
    crit, _ = await svc.open_or_update("svc", "critical", "pages", "", "bg2")
    await svc.notifier.drain()
    assert len(delivered_for(receivers, "slack", crit.id)) == 1
    assert delivered_for(receivers, "slack", high.id) == []
    await svc.aclose()


async def test_unreachable_channel_fails_without_leaking_the_url(
    make_service: Callable[..., IncidentService], db: Database
):
    secret_url = f"http://127.0.0.1:{free_port()}/services/T000/B000/XXXXSECRET"
    svc = make_service(
        slack_webhook_url=secret_url, pagerduty_routing_key=None, webhook_url=None, smtp_host=None
    )
    inc, _ = await svc.open_or_update("svc", "critical", "x", "", "unreachable")
    row = (await notifications(db, inc.id))[("slack", "trigger")]
    assert row["status"] == "failed" and row["attempts"] == 3
    assert "unreachable" in row["last_error"] and "XXXXSECRET" not in row["last_error"]


# --- HTTP API and the Alertmanager receiver -----------------------------------------------
@pytest.fixture
async def api(service: IncidentService) -> AsyncIterator[httpx.AsyncClient]:
    from quarterdeck.app import install_error_handlers

    app = FastAPI()
    install_error_handlers(app)
    app.include_router(incidents_api.router)
    services(app).add(IncidentService, service)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://qd"
    ) as client:
        yield client


def am_alert(fingerprint: str, status: str = "firing", **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "HighErrorRate", "severity": "critical", **labels},
        "annotations": {
            "summary": f"Error rate above 5% ({fingerprint})",
            "description": "5xx ratio is 7%",
            "runbook_url": "https://runbooks/high-error-rate",
        },
        "startsAt": "2026-01-01T10:00:00Z",
        "endsAt": "2026-01-01T10:05:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint,
    }


def am_payload(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    return {
        "receiver": "quarterdeck-webhook",
        "status": status,
        "alerts": list(alerts),
        "groupLabels": {"alertname": "HighErrorRate"},
        "commonLabels": {"alertname": "HighErrorRate", "service": "claude-agents"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": '{}:{alertname="HighErrorRate"}',
        "truncatedAlerts": 0,
    }


async def test_alertmanager_firing_repeat_and_resolved(
    api: httpx.AsyncClient, service: IncidentService, receivers: Receivers
):
    body = am_payload(am_alert("fp1"), am_alert("fp2", severity="warning", agent_type="coder"))
    r = await api.post("/v1/alerts/alertmanager", json=body)
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["received"] == 2 and len(first["opened"]) == 2 and first["updated"] == []
    page = (await api.get("/v1/incidents")).json()
    by_fp = {i["fingerprint"]: i for i in page["items"]}
    crit, warn = by_fp["fp1"], by_fp["fp2"]
    assert crit["severity"] == "critical" and warn["severity"] == "medium"
    assert crit["title"] == "Error rate above 5% (fp1)" and crit["source"] == "alertmanager"
    assert crit["service"] == "claude-agents"
    assert crit["opened_at"].startswith("2026-01-01T10:00:00")
    assert crit["suggested_actions"] == ["https://runbooks/high-error-rate"]
    assert "agent_type=coder" in warn["affected_components"]

    again = (await api.post("/v1/alerts/alertmanager", json=body)).json()
    assert again["opened"] == [] and sorted(again["updated"]) == sorted(first["opened"])
    assert len((await api.get("/v1/incidents")).json()["items"]) == 2
    assert len(delivered_for(receivers, "pagerduty", crit["id"])) == 1

    resolved = am_payload(am_alert("fp1", "resolved"), status="resolved")
    done = (await api.post("/v1/alerts/alertmanager", json=resolved)).json()
    assert done["resolved"] == [crit["id"]]
    got = (await api.get(f"/v1/incidents/{crit['id']}")).json()
    assert got["status"] == "resolved" and got["resolved_by"] == "alertmanager"
    assert got["resolved_at"].startswith("2026-01-01T10:05:00")  # endsAt, so MTTR is honest
    repeat = (await api.post("/v1/alerts/alertmanager", json=resolved)).json()
    assert repeat["resolved"] == [] and repeat["ignored"] == 1
    pd = delivered_for(receivers, "pagerduty", crit["id"])
    assert [e["event_action"] for e in pd] == ["trigger", "resolve"]
    assert await service.mttr(365 * 100) == pytest.approx(300.0)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b.pop("version"), "version"),
        (lambda b: b.update(version="3"), "version"),
        (lambda b: b.update(alerts=[]), "alerts"),
        (lambda b: b["alerts"][0].pop("fingerprint"), "alerts.0.fingerprint"),
        (lambda b: b["alerts"][0].update(status="pending"), "alerts.0.status"),
        (lambda b: b["alerts"][0].update(labels={"severity": 5}), "alerts.0.labels.severity"),
    ],
)
async def test_alertmanager_bad_payload_is_422_naming_the_field(
    api: httpx.AsyncClient, mutate: Callable[[dict[str, Any]], Any], field: str
):
    body = am_payload(am_alert("fp"))
    mutate(body)
    r = await api.post("/v1/alerts/alertmanager", json=body)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert any(e["field"] == field for e in problem["errors"]), problem
    assert field in problem["detail"]


async def test_alertmanager_invalid_json_is_422(api: httpx.AsyncClient):
    r = await api.post(
        "/v1/alerts/alertmanager", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body"


async def test_incident_endpoints(api: httpx.AsyncClient, service: IncidentService):
    ids = []
    for n, sev in enumerate(["low", "high", "high"]):
        inc, _ = await service.open_or_update("svc", sev, f"t{n}", "", f"api{n}")
        ids.append(inc.id)
    page = (await api.get("/v1/incidents", params={"limit": 2})).json()
    assert [i["id"] for i in page["items"]] == [ids[2], ids[1]]
    rest = (await api.get("/v1/incidents", params={"cursor": page["next_cursor"]})).json()
    assert [i["id"] for i in rest["items"]] == [ids[0]] and rest["next_cursor"] is None
    high = (await api.get("/v1/incidents", params={"severity": "high"})).json()["items"]
    assert {i["id"] for i in high} == {ids[1], ids[2]}

    r = await api.post(f"/v1/incidents/{ids[1]}/ack", json={"actor": "dana"})
    assert r.status_code == 200 and r.json()["acknowledged_by"] == "dana"
    assert (await api.post(f"/v1/incidents/{ids[2]}/ack")).json()["acknowledged_by"] == "api"
    r = await api.post(f"/v1/incidents/{ids[1]}/resolve", json={"note": "rolled back"})
    assert r.json()["status"] == "resolved" and r.json()["resolved_by"] == "human"
    acked = (await api.get("/v1/incidents", params={"status": "acknowledged"})).json()["items"]
    assert [i["id"] for i in acked] == [ids[2]]
    conflict = await api.post(f"/v1/incidents/{ids[1]}/ack")
    assert conflict.status_code == 409

    detail = (await api.get(f"/v1/incidents/{ids[1]}")).json()
    types = [e["type"] for e in detail["timeline"]]
    assert types[0] == "opened" and "acknowledged" in types and "resolved" in types
    assert {(n["channel"], n["kind"]) for n in detail["notifications"]} >= {("slack", "trigger")}

    for method, path in [
        ("GET", "/v1/incidents/inc_01ARZ3NDEKTSV4RRFFQ69G5FAV"),
        ("GET", "/v1/incidents/nope"),
        ("POST", "/v1/incidents/inc_01ARZ3NDEKTSV4RRFFQ69G5FAV/ack"),
        ("POST", "/v1/incidents/nope/resolve"),
    ]:
        r = await api.request(method, path)
        assert r.status_code == 404, path
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["status"] == 404 and "not found" in r.json()["detail"]
    bad = await api.get("/v1/incidents", params={"cursor": "zzz"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "cursor"
    bad = await api.get("/v1/incidents", params={"status": "closed"})
    assert bad.status_code == 422
    bad = await api.post(f"/v1/incidents/{ids[0]}/resolve", json={"by": "alertmanager"})
    assert bad.status_code == 422


async def test_cli_against_a_live_server(service: IncidentService, db: Database):
    app = FastAPI()
    from quarterdeck.app import install_error_handlers

    install_error_handlers(app)
    app.include_router(incidents_api.router)
    services(app).add(IncidentService, service)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    inc, _ = await service.open_or_update("svc", "high", "cli incident", "", "cli")
    url = f"http://127.0.0.1:{port}"
    runner = CliRunner()

    def cli(*args: str) -> Any:
        result = runner.invoke(incidents_cli, [*args, "--url", url])
        assert result.exit_code == 0, result.output
        return result.output

    try:
        listing = json.loads(await asyncio.to_thread(cli, "list", "--json"))
        assert [i["id"] for i in listing["items"]] == [inc.id]
        bare = json.loads(await asyncio.to_thread(cli, "--json"))  # bare: lists open ones
        assert [i["id"] for i in bare["items"]] == [inc.id]
        assert inc.id in await asyncio.to_thread(cli, "list")
        shown = json.loads(await asyncio.to_thread(cli, "show", inc.id, "--json"))
        assert shown["timeline"][0]["type"] == "opened"
        assert "timeline" in await asyncio.to_thread(cli, "show", inc.id)
        # A page a maintenance window holds says so, and which window, under its line.
        window = await MaintenanceService(db).create(
            MaintenanceRequest(
                starts_at=datetime.now(UTC) - timedelta(minutes=1),
                ends_at=datetime.now(UTC) + timedelta(minutes=30),
                reason="cli test",
            ),
            created_by="key_ops",
        )
        quiet, _ = await service.open_or_update("svc", "high", "held incident", "", "cli-held")
        held = [
            line.strip() for line in (await asyncio.to_thread(cli, "show", quiet.id)).split("\n")
        ]
        at = held.index("notified slack (trigger): held after 0")
        assert held[at + 1] == f"held: maintenance window {window.id}"
        acked = json.loads(await asyncio.to_thread(cli, "ack", inc.id, "--json"))
        assert acked["status"] == "acknowledged" and acked["acknowledged_by"].startswith("cli")
        out = await asyncio.to_thread(cli, "resolve", inc.id, "--note", "done")
        assert "resolved" in out
        missing = await asyncio.to_thread(
            runner.invoke, incidents_cli, ["show", "inc_01ARZ3NDEKTSV4RRFFQ69G5FAV", "--url", url]
        )
        assert missing.exit_code == 1 and "404" in missing.output
    finally:
        server.should_exit = True
        await task


async def test_channel_rate_limits_are_shared_by_every_replica(db: Any) -> None:
    from quarterdeck.incidents.notify import RateLimited, RateLimiter
    from quarterdeck.store.pool import Database

    other = Database(db.url, min_size=1, max_size=2)  # a second replica's pool
    await other.open()
    try:
        first, second = RateLimiter(db, "slack", 0.1), RateLimiter(other, "slack", 0.1)
        await first.acquire(max_wait=1)  # slot now: no wait
        with pytest.raises(RateLimited):  # the other replica sees the same schedule: ~10 s away
            await second.acquire(max_wait=5)
        async with db.acquire() as conn:
            from quarterdeck.incidents import outbox_repository as incidents_outbox

            wait = await incidents_outbox.reserve_slot(conn, "slack", 10.0, 60)
        assert wait is not None and 5 < wait <= 10
        assert await RateLimiter(db, "webhook", 0.1).acquire(max_wait=0) is None, "own schedule"
    finally:
        await other.close()
