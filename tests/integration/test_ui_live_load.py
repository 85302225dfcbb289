"""Live pages fan out from the process's one event hub: open pages do not each poll Postgres.

The issue's bar: "100 open run pages must not add more than a handful of queries per second".
A real server (uvicorn on a free port) holds 100 run pages' streams (``/ui/runs/{id}/live``)
and 10 of the runs-changed signal (``/ui/live/changes``) open at once, and the database's own
count of transactions (``pg_stat_database.xact_commit``) is read over 5-second windows: with no
streams, with 10 and with 110. The hub makes one query per 0.1 s for every watched run together
(and one per second for "anything changed"), so the increase is about 11/s whatever the number
of streams; a stream that queried on its own timer would add its rate per stream.

Postgres counts a backend's transactions when it flushes its statistics: when it goes idle at
least a second after its last flush, else after 10 s idle. The burst of opening 110 streams
would land in the next window late, so before each reading every pooled connection is used once
(``flush``): each then flushes what it had pending, and the windows count what happened in them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest

from quarterdeck.runs.models import RunCreate
from quarterdeck.runtime import Runtime
from quarterdeck.security.auth import Role
from tests.support.live_app import serving
from tests.support.ui import HTML, sign_in

ADMIN = "ui-live-load-bootstrap-admin-key-0123456789"
TENANT = "acme"
RUN_PAGES = 100
CHANGE_STREAMS = 10
WINDOW_S = 5.0
SETTLE_S = 1.25
POOL = 8
STATS = (
    "SELECT xact_commit + xact_rollback AS xacts, tup_returned, tup_fetched"
    " FROM pg_stat_database WHERE datname = current_database()"
)


@dataclass
class Rate:
    streams: int
    xacts_per_s: float
    tup_returned_per_s: float
    tup_fetched_per_s: float

    def __str__(self) -> str:
        return (
            f"{self.streams:>3} streams: {self.xacts_per_s:6.1f} xact/s,"
            f" {self.tup_returned_per_s:8.0f} tup_returned/s,"
            f" {self.tup_fetched_per_s:7.0f} tup_fetched/s"
        )


@dataclass
class Streams:
    """Open Server-Sent Event streams held by tasks, as browsers hold them."""

    client: httpx.AsyncClient
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    opened: list[httpx.Response] = field(default_factory=list)
    events: int = 0

    async def open(self, paths: list[str]) -> None:
        """Open one stream per path; return once every one has answered its headers."""
        answers: list[asyncio.Future[httpx.Response]] = []
        for path in paths:
            answered: asyncio.Future[httpx.Response] = asyncio.get_running_loop().create_future()
            answers.append(answered)
            self.tasks.append(asyncio.create_task(self._hold(path, answered)))
        for answered in answers:
            self.opened.append(await asyncio.wait_for(answered, 15))

    async def _hold(self, path: str, answered: asyncio.Future[httpx.Response]) -> None:
        try:
            async with self.client.stream("GET", path, headers=HTML) as response:
                answered.set_result(response)
                if response.status_code != 200:
                    return
                async for line in response.aiter_lines():
                    if line.startswith("event:"):
                        self.events += 1
        except Exception as exc:
            if not answered.done():
                answered.set_exception(exc)
            raise

    def ended(self) -> list[int]:
        return [i for i, task in enumerate(self.tasks) if task.done()]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(BaseException):
                await task


async def flush(rt: Runtime) -> None:
    """Use every pooled connection once, so each flushes the statistics it holds back."""

    async def touch(hold: asyncio.Event, ready: list[int]) -> None:
        async with rt.db.acquire() as conn:
            await conn.execute("SELECT 1")
            ready.append(1)
            await hold.wait()

    hold = asyncio.Event()
    ready: list[int] = []
    tasks = [asyncio.create_task(touch(hold, ready)) for _ in range(POOL)]
    try:
        deadline = time.monotonic() + 5
        while len(ready) < POOL and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        hold.set()
        await asyncio.gather(*tasks)


async def measure(rt: Runtime, conn: asyncpg.Connection, streams: int) -> Rate:
    """The database's transaction and tuple rates over one window, as Postgres counts them."""
    # A backend flushes when idle at least a second after its last flush: wait that long after
    # the last burst (opening streams, their first reads), then have every one flush.
    await asyncio.sleep(SETTLE_S)
    await flush(rt)
    before, started = await conn.fetchrow(STATS), time.monotonic()
    await asyncio.sleep(WINDOW_S)
    await flush(rt)
    after, elapsed = await conn.fetchrow(STATS), time.monotonic() - started
    assert before is not None and after is not None
    return Rate(
        streams,
        (after["xacts"] - before["xacts"]) / elapsed,
        (after["tup_returned"] - before["tup_returned"]) / elapsed,
        (after["tup_fetched"] - before["tup_fetched"]) / elapsed,
    )


@pytest.fixture
async def rt(make_settings: Any) -> AsyncIterator[Runtime]:
    settings = make_settings(
        auth_enabled=True,
        admin_api_key=ADMIN,
        rate_limit_key_per_minute=0,
        rate_limit_tenant_per_minute=0,
        db_pool_min=POOL,
        db_pool_max=POOL,
        # Quiet background loops: an incident opened for the loop lag of opening 110 streams at
        # once (all in this one event loop) would land its writes in a window.
        health_monitor_enabled=False,
        maintenance_enabled=False,
    )
    runtime = Runtime(settings, with_workers=False)
    await runtime.start()
    yield runtime
    await runtime.stop()


async def test_a_hundred_live_run_pages_add_a_handful_of_queries_per_second(rt: Runtime) -> None:
    run_ids, _ = await rt.runs.submit_batch(
        [RunCreate(prompt=f"live page {i}") for i in range(RUN_PAGES)], tenant=TENANT
    )
    key = (await rt.auth.create("live-load", Role.submitter, TENANT)).api_key
    limits = httpx.Limits(max_connections=RUN_PAGES + CHANGE_STREAMS + 10)
    conn = await asyncpg.connect(rt.db.url)
    try:
        async with (
            serving(rt) as url,
            httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as browser,
        ):
            assert (await sign_in(browser, key)).status_code == 303
            streams = Streams(browser)
            try:
                idle = await measure(rt, conn, 0)
                half = CHANGE_STREAMS // 2
                await streams.open(
                    [f"/ui/runs/{run_id}/live" for run_id in run_ids[:half]]
                    + ["/ui/live/changes"] * half
                )
                few = await measure(rt, conn, len(streams.tasks))
                await streams.open(
                    [f"/ui/runs/{run_id}/live" for run_id in run_ids[half:]]
                    + ["/ui/live/changes"] * (CHANGE_STREAMS - half)
                )
                many = await measure(rt, conn, len(streams.tasks))
                ended = streams.ended()
            finally:
                await streams.close()
    finally:
        await conn.close()
    print(f"\nlive load ({WINDOW_S:.0f} s windows):\n  {idle}\n  {few}\n  {many}")
    print(
        f"  added by {few.streams} streams: {few.xacts_per_s - idle.xacts_per_s:.1f} xact/s;"
        f" by {many.streams}: {many.xacts_per_s - idle.xacts_per_s:.1f} xact/s"
    )
    bad = [
        f"{r.url.path}: {r.status_code} {r.headers.get('content-type')}"
        for r in streams.opened
        if r.status_code != 200 or not r.headers["content-type"].startswith("text/event-stream")
    ]
    assert bad == [], bad
    assert len(streams.opened) == RUN_PAGES + CHANGE_STREAMS
    assert ended == [], f"streams ended early (they must stay open while runs are queued): {ended}"
    added = many.xacts_per_s - idle.xacts_per_s
    assert added < 15, f"{many.streams} live pages add {added:.1f} transactions/s"
    scaling = many.xacts_per_s - few.xacts_per_s
    assert abs(scaling) < 5, f"the query rate grows with the number of streams: {scaling:+.1f}/s"
