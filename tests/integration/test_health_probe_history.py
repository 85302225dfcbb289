"""The health monitor's probe history on the embedded Postgres: a tick with real checks writes
one row (healthy, or naming the failing checks), old rows are purged in bounded batches, and a
write the database refuses is skipped without failing the tick."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from quarterdeck.chaos.process import free_port
from quarterdeck.health.checks import DatabaseCheck, FilesystemCheck
from quarterdeck.health.history import ProbeHistory
from quarterdeck.health.monitor import HealthMonitor
from quarterdeck.incidents import IncidentService, NotificationSettings, Notifier
from quarterdeck.kit.clock import FakeClock
from quarterdeck.store.pool import Database

NOW = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
async def incidents(db: Database) -> AsyncIterator[IncidentService]:
    notifier = Notifier(NotificationSettings(), db)  # no channel configured: nothing is sent
    service = IncidentService(db, notifier, inline_notifications=True)
    yield service
    await service.aclose()


@pytest.fixture
async def stopped_db() -> AsyncIterator[Database]:
    """A pool for a server that is not there (min_size=0 opens without connecting)."""
    database = Database(
        f"postgresql://quarterdeck:x@127.0.0.1:{free_port()}/quarterdeck", min_size=0, max_size=1
    )
    await database.open()
    yield database
    await database.close()


async def probes(db: Database) -> list[dict[str, Any]]:
    async with db.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM health_probes ORDER BY at")
    return [dict(r) for r in rows]


async def old_rows(db: Database, ages_days: list[float]) -> None:
    async with db.acquire() as conn:
        await conn.executemany(
            "INSERT INTO health_probes (at, interval_s, healthy) VALUES ($1, 10, true)",
            [(NOW - timedelta(days=d),) for d in ages_days],
        )


async def test_a_tick_with_real_checks_writes_one_row_and_purges_old_ones(
    db: Database,
    stopped_db: Database,
    incidents: IncidentService,
    make_settings: Any,
    data_dir: Path,
) -> None:
    await old_rows(db, [401, 450, 399])
    clock = FakeClock(wall=NOW)
    settings = make_settings(health_probe_retention_days=400)
    healthy = HealthMonitor(
        settings,
        db,
        incidents,
        checks=[DatabaseCheck(db), FilesystemCheck(data_dir, min_free_bytes=0, min_free_ratio=0)],
        interval_s=7.5,
        clock=clock.wall,
    )
    await healthy.tick()
    rows = await probes(db)
    # the 450- and 401-day-old rows went; the 399-day-old one and the new tick stay
    assert [r["at"] for r in rows] == [NOW - timedelta(days=399), NOW]
    tick = rows[-1]
    assert (tick["interval_s"], tick["healthy"], tick["failing"], tick["critical_failing"]) == (
        7.5,
        True,
        None,
        None,
    )

    clock.advance(10)
    down = HealthMonitor(
        settings,
        db,
        incidents,
        checks=[
            DatabaseCheck(stopped_db, timeout_s=2),
            FilesystemCheck(data_dir, min_free_bytes=0, min_free_ratio=0),
        ],
        strategies={},
        clock=clock.wall,
    )
    await down.tick()
    tick = (await probes(db))[-1]
    assert tick["at"] == NOW + timedelta(seconds=10)
    assert (tick["healthy"], tick["failing"], tick["critical_failing"]) == (
        False,
        ["database"],
        ["database"],
    )


async def test_the_purge_goes_in_bounded_batches_and_stays_due_until_done(db: Database) -> None:
    await old_rows(db, [500, 501, 502, 503, 504, 10])
    history = ProbeHistory(
        db, retention_days=400, clock=lambda: NOW, batch=2, batches_per_call=2, purge_every_s=3600
    )
    assert await history.purge() == 4  # two full batches: the cap, so still due
    assert len(await probes(db)) == 2
    assert await history.record(NOW, 10.0, [], {})  # due: purges the last old row
    assert [r["at"] for r in await probes(db)] == [NOW - timedelta(days=10), NOW]
    await old_rows(db, [600])
    assert await history.record(NOW + timedelta(seconds=10), 10.0, [], {})
    assert len(await probes(db)) == 4, "caught up: the next purge waits an hour"


async def test_a_write_the_database_refuses_is_skipped(stopped_db: Database) -> None:
    history = ProbeHistory(stopped_db, clock=lambda: NOW)
    assert await history.record(NOW, 10.0, [], {}) is False
