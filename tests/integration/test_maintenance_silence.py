"""Maintenance windows silence paging, against a real Postgres and the local receivers.

The windows are declared through the health package's own :class:`MaintenanceService` (what
``POST /v1/maintenance`` calls) and span the real time of the database, because an incident's
``resolved_at`` is the database's clock. "The window ends" is a :class:`FakeClock` moved past
its end and handed to the notifier and the service, so no test sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from quarterdeck import metrics
from quarterdeck.health.maintenance import MaintenanceRequest, MaintenanceService
from quarterdeck.incidents import IncidentService, Notifier
from quarterdeck.incidents import api as incidents_api
from quarterdeck.kit.clock import FakeClock
from quarterdeck.kit.wiring import services
from quarterdeck.store.pool import Database
from tests.integration.test_incidents import HTTP_CHANNELS, delivered_for, notification_settings
from tests.support.receivers import Receivers

pytestmark = pytest.mark.asyncio
CHANNELS = (*HTTP_CHANNELS, "email")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(wall=datetime.now(UTC))


@pytest.fixture
async def make_service(
    db: Database, receivers: Receivers, clock: FakeClock
) -> AsyncIterator[Callable[..., IncidentService]]:
    made: list[IncidentService] = []

    def make(**overrides: Any) -> IncidentService:
        ns = notification_settings(receivers, **overrides)
        notifier = Notifier(ns, db, clock=clock.wall)
        service = IncidentService(db, notifier, inline_notifications=True, clock=clock.wall)
        made.append(service)
        return service

    yield make
    for service in made:
        await service.aclose()


@pytest.fixture
async def service(make_service: Callable[..., IncidentService]) -> IncidentService:
    return make_service()


async def declare(db: Database, clock: FakeClock, starts: float, ends: float) -> str:
    """A window from ``starts`` to ``ends`` minutes after the clock's now, via the real use-case."""
    now = clock.wall()
    window = await MaintenanceService(db, clock=clock.wall).create(
        MaintenanceRequest(
            starts_at=now + timedelta(minutes=starts),
            ends_at=now + timedelta(minutes=ends),
            reason="database upgrade",
        ),
        created_by="key_ops",
    )
    return window.id


async def rows(db: Database, incident_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    async with db.acquire() as conn:
        found = await conn.fetch("SELECT * FROM notifications WHERE incident_id = $1", incident_id)
    return {(r["channel"], r["kind"]): dict(r) for r in found}


def pages(receivers: Receivers, incident_id: str) -> int:
    sent = sum(len(delivered_for(receivers, e, incident_id)) for e in HTTP_CHANNELS)
    return sent + sum(incident_id in m.data.decode() for m in receivers.mails)


def silenced_count(outcome: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "claude_agent_notifications_silenced_total", {"outcome": outcome}
    )
    return value or 0.0


async def test_a_window_holds_the_page_until_it_ends_then_pages_once(
    make_service: Callable[..., IncidentService],
    receivers: Receivers,
    db: Database,
    clock: FakeClock,
) -> None:
    service = make_service()
    window = await declare(db, clock, -1, 10)
    held_before, released_before = silenced_count("held"), silenced_count("released")
    inc, created = await service.open_or_update("db", "critical", "primary down", "", "db-1")
    assert created, "the incident is opened and recorded as usual"
    await service.tick()  # a sweep inside the window sends nothing either
    assert receivers.received == [] and receivers.mails == []
    found = await rows(db, inc.id)
    assert set(found) == {(c, "trigger") for c in CHANNELS}
    assert all(r["status"] == "held" and r["held_by"] == window for r in found.values())
    assert silenced_count("held") - held_before == len(CHANNELS)

    app = FastAPI()
    app.include_router(incidents_api.router)
    services(app).add(IncidentService, service)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://qd") as api:
        detail = (await api.get(f"/v1/incidents/{inc.id}")).json()
    assert {n["note"] for n in detail["notifications"]} == {f"held: maintenance window {window}"}
    assert all(n["held_until"] for n in detail["notifications"])
    held_events = [e for e in detail["timeline"] if e["data"].get("status") == "held"]
    assert {e["data"]["channel"] for e in held_events} == set(CHANNELS)

    # The window ends: two replicas sweep at once, and each channel is paged exactly once.
    clock.advance(timedelta(minutes=11))
    other = make_service()
    assert service.notifier is not None and other.notifier is not None
    await asyncio.gather(service.notifier.deliver(), other.notifier.deliver())
    await service.tick()
    for endpoint in HTTP_CHANNELS:
        assert len(delivered_for(receivers, endpoint, inc.id)) == 1, endpoint
    assert len(receivers.mails) == 1
    found = await rows(db, inc.id)
    assert all(r["status"] == "sent" and r["held_by"] == window for r in found.values())
    assert silenced_count("released") - released_before == len(CHANNELS)
    detail_after = await service.get(inc.id)
    assert {n.note for n in detail_after.notifications} == {
        f"held by maintenance window {window} until it ended"
    }

    # Resolving afterwards sends the all-clear at once, to the channels that were paged.
    await service.resolve(inc.id, "human", "upgraded")
    assert len(delivered_for(receivers, "pagerduty", inc.id)) == 2


async def test_opened_and_resolved_inside_a_window_pages_nobody(
    service: IncidentService, receivers: Receivers, db: Database, clock: FakeClock
) -> None:
    window = await declare(db, clock, -5, 30)
    before = silenced_count("suppressed")
    inc, _ = await service.open_or_update("redis", "critical", "failover", "", "redis-1")
    await service.resolve(inc.id, "auto", "failed over by itself")
    found = await rows(db, inc.id)
    assert set(found) == {(c, k) for c in CHANNELS for k in ("trigger", "resolve")}
    assert all(r["status"] == "suppressed" and r["held_by"] == window for r in found.values())
    assert silenced_count("suppressed") - before == 2 * len(CHANNELS)

    clock.advance(timedelta(minutes=31))
    await service.tick()
    assert service.notifier is not None and await service.notifier.deliver() == []
    assert pages(receivers, inc.id) == 0 and receivers.received == []
    detail = await service.get(inc.id)
    note = f"suppressed: opened and resolved inside maintenance window {window}"
    assert {n.note for n in detail.notifications} == {note}
    assert sum(e.data.get("note") == note for e in detail.timeline) == 2 * len(CHANNELS)


async def test_resolved_before_any_sweep_held_it_is_still_suppressed(
    make_service: Callable[..., IncidentService],
    receivers: Receivers,
    db: Database,
    clock: FakeClock,
) -> None:
    """Background delivery had not run yet (rows still pending): the resolve drops them."""
    writer = IncidentService(db, Notifier(notification_settings(receivers), db))
    assert writer.notifier is not None
    writer.notifier.dispatch = lambda incident_id=None: None  # type: ignore[method-assign]
    window = await declare(db, clock, -1, 10)
    inc, _ = await writer.open_or_update("api", "high", "errors", "", "api-1")
    assert {r["status"] for r in (await rows(db, inc.id)).values()} == {"pending"}
    await writer.resolve(inc.id, "human")
    found = await rows(db, inc.id)
    assert {(r["status"], r["held_by"]) for r in found.values()} == {("suppressed", window)}
    clock.advance(timedelta(minutes=11))
    sweeper = make_service()
    assert sweeper.notifier is not None and await sweeper.notifier.deliver() == []
    assert receivers.received == [] and receivers.mails == []
    await writer.aclose()


async def test_a_page_sent_before_the_window_gets_its_all_clear_but_no_escalation(
    service: IncidentService, receivers: Receivers, db: Database, clock: FakeClock
) -> None:
    inc, _ = await service.open_or_update("queue", "critical", "backlog", "", "queue-1")
    assert pages(receivers, inc.id) == len(CHANNELS)
    window = await declare(db, clock, -1, 60)
    await service.escalate(inc.id, "auto-recovery failed")
    assert pages(receivers, inc.id) == len(CHANNELS), "the escalation is held"
    await service.resolve(inc.id, "human", "drained")
    found = await rows(db, inc.id)
    assert {k: r["status"] for k, r in found.items() if k[1] == "resolve"} == {
        (c, "resolve"): "sent" for c in CHANNELS
    }
    assert {(r["status"], r["held_by"]) for k, r in found.items() if k[1] == "escalation"} == {
        ("suppressed", window)
    }
    pd = [b["event_action"] for b in delivered_for(receivers, "pagerduty", inc.id)]
    assert pd == ["trigger", "resolve"]


async def test_without_a_covering_window_pages_go_at_once(
    service: IncidentService, receivers: Receivers, db: Database, clock: FakeClock
) -> None:
    await declare(db, clock, -120, -60)  # over an hour ago
    await declare(db, clock, 60, 120)  # in an hour
    inc, _ = await service.open_or_update("db", "critical", "slow", "", "db-2")
    assert pages(receivers, inc.id) == len(CHANNELS)
    found = await rows(db, inc.id)
    assert all(r["status"] == "sent" and r["held_by"] is None for r in found.values())
    assert all(n.note is None for n in (await service.get(inc.id)).notifications)


async def test_stale_escalation_counts_from_the_end_of_the_window(
    service: IncidentService, db: Database, clock: FakeClock
) -> None:
    opened = clock.wall() - timedelta(hours=5)
    await declare(db, clock, -5 * 60 - 1, -60)  # covered the incident's first four hours
    inc, _ = await service.open_or_update("agents", "low", "stuck", "", "stuck", opened_at=opened)
    escalated = await service.escalate_stale(older_than_s=2 * 3600)
    assert escalated == [], "open 5 h, but the window ended 1 h ago: not 2 h of paging yet"
    clock.advance(timedelta(hours=1, minutes=1))
    escalated = await service.escalate_stale(older_than_s=2 * 3600)
    assert [i.id for i in escalated] == [inc.id]
