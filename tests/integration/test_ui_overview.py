"""The overview page and the run aggregates behind it, on real rows in the embedded Postgres.

Rows are written straight into ``runs`` (a test fixture, not the app's path) so the figures are
known exactly: counts by state, latency percentiles, error rate, spend, cache hit rate, the
queue and live workers, each within the viewer's tenant.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from quarterdeck.kit.clock import FakeClock, utcnow
from quarterdeck.runs.insights import RunInsights, day_start, month_start
from quarterdeck.runtime import Runtime
from quarterdeck.security.auth import Role
from tests.support.ui import HTML, browser_of, started

ADMIN = "ui-overview-bootstrap-admin-key-0123456789"
_seq = iter(range(1, 1_000_000))


@pytest.fixture
async def rt(make_settings: Any) -> AsyncIterator[Runtime]:
    quiet = {"health_monitor_enabled": False, "maintenance_enabled": False}
    async with started(make_settings(auth_enabled=True, admin_api_key=ADMIN, **quiet)) as runtime:
        yield runtime


browser_for = browser_of


async def add_run(
    rt: Runtime,
    tenant: str,
    status: str,
    *,
    created: datetime,
    latency_s: float | None = None,
    finished: datetime | None = None,
    cost: str = "0",
    agent_type: str = "default",
    worker: str | None = None,
    heartbeat: datetime | None = None,
    tokens: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> str:
    run_id = f"run_ov{next(_seq):08d}"
    started = finished - timedelta(seconds=latency_s) if finished and latency_s else None
    if status == "running":
        started = created
    inp, out, cache_write, cache_read = tokens
    async with rt.db.acquire() as conn:
        await conn.execute(
            "INSERT INTO runs (id, tenant, agent_type, operation, prompt, model, status,"
            " created_at, started_at, finished_at, heartbeat_at, worker_id, cost_usd,"
            " input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens)"
            " VALUES ($1, $2, $3, 'op', 'p', 'm', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,"
            " $14)",
            run_id,
            tenant,
            agent_type,
            status,
            created,
            started,
            finished,
            heartbeat,
            worker,
            Decimal(cost),
            inp,
            out,
            cache_write,
            cache_read,
        )
    return run_id


def stat(html: str, name: str) -> str:
    match = re.search(rf'data-stat="{re.escape(name)}">([^<]*)<', html)
    assert match, f"no stat {name!r} in the page"
    return match.group(1).strip()


async def seed(rt: Runtime, now: datetime) -> bool:
    """acme: 2 queued, 2 running (one stale heartbeat), 6 finished today with latencies 10..60 s;
    globex: one queued, one dear success. Returns whether an earlier-this-month run was added."""
    done = max(now - timedelta(seconds=30), day_start(now))
    tokens = (100, 50, 100, 300)  # input, output, cache write, cache read: 60% cache hits
    await add_run(rt, "acme", "queued", created=now - timedelta(seconds=120))
    await add_run(rt, "acme", "queued", created=now - timedelta(seconds=5), agent_type="rev")
    await add_run(rt, "acme", "running", created=now, worker="w-live", heartbeat=now)
    stale = now - timedelta(hours=1)
    await add_run(rt, "acme", "running", created=stale, worker="w-stale", heartbeat=stale)
    for status, latency, cost in (
        ("succeeded", 10, "0.10"),
        ("succeeded", 20, "0.20"),
        ("succeeded", 30, "0.30"),
        ("failed", 40, "0.40"),
        ("timed_out", 50, "0.50"),
        ("cancelled", 60, "0"),
    ):
        await add_run(
            rt,
            "acme",
            status,
            created=done - timedelta(minutes=5),
            latency_s=latency,
            finished=done,
            cost=cost,
            tokens=tokens,
        )
    old = now - timedelta(days=40)
    await add_run(rt, "acme", "succeeded", created=old, latency_s=1, finished=old, cost="5")
    await add_run(rt, "globex", "queued", created=now)
    await add_run(rt, "globex", "succeeded", created=done, latency_s=1, finished=done, cost="9")
    earlier = day_start(now) - timedelta(hours=1)
    if earlier < month_start(now):
        return False
    await add_run(rt, "acme", "failed", created=earlier, latency_s=5, finished=earlier, cost="1")
    return True


async def test_run_insights_match_the_rows(rt: Runtime) -> None:
    now = utcnow()
    earlier = await seed(rt, now)
    acme = await RunInsights(rt.db).overview("acme", now + timedelta(seconds=1))
    assert acme.states["queued"] == 2 and acme.states["running"] == 2
    assert acme.states["succeeded"] == 3 and acme.states["timed_out"] == 1
    assert acme.queue.queued == {"default": 1, "rev": 1}
    assert 120 <= acme.queue.oldest_s < 130
    assert acme.workers == ["w-live"]
    today = acme.today
    assert (today.finished, today.succeeded, today.errored) == (6, 3, 2)
    assert today.error_rate == pytest.approx(2 / 6)
    assert (today.p50_s, today.p95_s, today.p99_s) == pytest.approx((35.0, 57.5, 59.5))
    assert today.spend_usd == Decimal("1.5")
    assert today.cache_hit_rate == pytest.approx(0.6)
    assert today.tokens == 6 * 550
    month = acme.month
    assert month.finished == 6 + earlier and month.spend_usd == Decimal("2.5" if earlier else "1.5")
    assert month.errored == 2 + earlier
    assert len(acme.hourly) == 24 and len(acme.daily) == 30
    assert sum(acme.points("hourly", "finished")) == 6 + (earlier and now.hour <= 22)
    assert sum(acme.points("daily", "finished")) == 6 + earlier  # the 40-day-old run is out
    assert acme.daily[-1].start == day_start(now) and acme.daily[-1].finished == 6
    assert acme.tenants == ["acme"]
    everyone = await RunInsights(rt.db).overview(None, now + timedelta(seconds=1))
    assert everyone.states["queued"] == 3 and everyone.today.finished == 7
    assert everyone.today.spend_usd == Decimal("10.5")
    assert everyone.tenants == ["globex", "acme"]  # biggest spend first


async def test_overview_shows_each_viewer_its_own_reach(rt: Runtime) -> None:
    now = utcnow()
    await seed(rt, now)
    await rt.budgets.set("acme", 10, 100)
    incident, _ = await rt.incidents.open_or_update("api", "high", "Latency is up")
    submitter = (await rt.auth.create("sub", Role.submitter, "acme")).api_key
    auditor = (await rt.auth.create("aud", Role.auditor, "*")).api_key

    async with browser_for(rt, ADMIN) as admin:
        page = await admin.get("/ui", headers=HTML)
        assert page.status_code == 200, page.text
        html = page.text
        assert "<h1>Overview</h1>" in html
        assert stat(html, "queued") == "3" and stat(html, "finished-today") == "7"
        assert stat(html, "spend-today") == "$10.5000"
        assert stat(html, "open-incidents") == "1"
        assert f'href="/ui/incidents/{incident.id}"' in html
        assert 'sse-connect="/ui/live/changes"' in html and 'hx-trigger="sse:runs"' in html
        assert 'data-tenant="acme"' in html and 'data-tenant="globex"' not in html  # no budget
        assert stat(html, "gateway-calls") == "0"

    async with browser_for(rt, submitter) as sub:
        html = (await sub.get("/ui", headers=HTML)).text
        assert stat(html, "queued") == "2" and stat(html, "running") == "2"
        assert stat(html, "workers") == "1" and stat(html, "finished-today") == "6"
        assert stat(html, "error-rate") == "33.3%" and stat(html, "cache-hit-month") == "60.0%"
        assert (stat(html, "p50"), stat(html, "p95"), stat(html, "p99")) == (
            "35.0 s",
            "57.5 s",
            "59.5 s",
        )
        assert stat(html, "spend-today") == "$1.5000"
        assert "globex" not in html and "open-incidents" not in html  # not its to see
        assert 'data-tenant="acme"' in html
        fragment = await sub.get("/ui/fragments/overview", headers=HTML)
        assert fragment.status_code == 200 and "<html" not in fragment.text
        assert stat(fragment.text, "queued") == "2"

    async with browser_for(rt, auditor) as aud:
        page = await aud.get("/ui", headers=HTML)
        assert page.status_code == 200
        assert 'id="overview-runs"' not in page.text and "sse-connect" not in page.text
        assert "open-incidents" not in page.text
        assert 'data-tenant="acme"' in page.text  # budgets:read, every tenant
        assert stat(page.text, "gateway-calls") == "0"
        assert (await aud.get("/ui/fragments/overview", headers=HTML)).status_code == 200


async def test_open_overview_pages_share_one_read_per_reach(rt: Runtime) -> None:
    clock = FakeClock()
    insights = RunInsights(rt.db, max_age_s=5.0, clock=clock.now)
    reads: list[str | None] = []
    real = insights.overview

    async def counted(tenant: str | None, now: datetime) -> Any:
        reads.append(tenant)
        return await real(tenant, now)

    insights.overview = counted  # type: ignore[method-assign]
    pages = await asyncio.gather(*(insights.latest("acme") for _ in range(100)))
    assert reads == ["acme"] and all(p is pages[0] for p in pages)
    await insights.latest(None)  # another reach: its own read
    assert reads == ["acme", None]
    clock.advance(4.0)
    assert await insights.latest("acme") is pages[0]
    clock.advance(1.5)  # older than max_age_s: read again
    assert await insights.latest("acme") is not pages[0] and reads == ["acme", None, "acme"]
