"""The health monitor's probe history: one small row per tick, for the monthly report.

Why keep it: incidents say when something was bad enough to open one, but not when the
platform was *observed* healthy, so an availability figure from incidents alone cannot tell
"up" from "nobody was looking". One row per tick of the leader (one leader, so one row per
interval across replicas) covers ``[at, at + interval_s)``; time no row covers is unknown, and
the report shows it as coverage below 100 % instead of counting it as uptime.

Why a failed write is only logged: the monitor must keep checking and repairing while Postgres
is down (the database may be the outage itself); the tick that could not be stored becomes a
gap, which the report counts as unknown, the honest reading. Why the purge runs at most hourly
and in batches: a day is 8,640 rows, so an hourly purge deletes a few hundred; after retention
is shortened, bounded batches per tick keep one tick from holding locks on millions of rows,
and the purge stays due until it has caught up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import structlog

from quarterdeck.health.checks import CheckResult, HealthCheck
from quarterdeck.incidents.models import Severity
from quarterdeck.kit.clock import utcnow
from quarterdeck.store.pool import Database

__all__ = ["Probe", "ProbeHistory", "insert_probe", "probe_of", "purge_before"]

log = structlog.get_logger(__name__)

PURGE_EVERY_S = 3600.0
PURGE_BATCH = 5_000
PURGE_BATCHES_PER_CALL = 20
WRITE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Probe:
    """One tick as stored: ``healthy`` is false when a critical check failed."""

    at: datetime
    interval_s: float
    healthy: bool
    failing: tuple[str, ...] = ()
    critical_failing: tuple[str, ...] = ()


def probe_of(
    at: datetime,
    interval_s: float,
    checks: Iterable[HealthCheck],
    results: Mapping[str, CheckResult],
) -> Probe:
    """The row for one tick: a check without a result this tick counts as failing (it was
    asked and did not answer), and its severity decides whether the platform was down."""
    failing: list[str] = []
    critical: list[str] = []
    for check in checks:
        result = results.get(check.name)
        if result is None or not result.healthy:
            failing.append(check.name)
            if check.severity is Severity.critical:
                critical.append(check.name)
    return Probe(at, interval_s, not critical, tuple(sorted(failing)), tuple(sorted(critical)))


async def insert_probe(conn: asyncpg.Connection, probe: Probe) -> None:
    await conn.execute(
        "INSERT INTO health_probes (at, interval_s, healthy, failing, critical_failing) "
        "VALUES ($1, $2, $3, $4, $5)",
        probe.at,
        probe.interval_s,
        probe.healthy,
        list(probe.failing) or None,  # NULL, not an empty array: the usual row stays small
        list(probe.critical_failing) or None,
    )


async def purge_before(conn: asyncpg.Connection, cutoff: datetime, batch: int) -> int:
    """Delete up to ``batch`` of the oldest rows before ``cutoff``; how many went."""
    status: str = await conn.execute(
        "DELETE FROM health_probes WHERE ctid IN ("
        " SELECT ctid FROM health_probes WHERE at < $1 ORDER BY at LIMIT $2)",
        cutoff,
        batch,
    )
    return int(status.rsplit(" ", 1)[-1])


class ProbeHistory:
    """Records each tick and purges rows older than the retention (the leader's monitor)."""

    def __init__(
        self,
        db: Database,
        *,
        retention_days: float = 400.0,
        clock: Callable[[], datetime] = utcnow,
        purge_every_s: float = PURGE_EVERY_S,
        batch: int = PURGE_BATCH,
        batches_per_call: int = PURGE_BATCHES_PER_CALL,
    ) -> None:
        self.db = db
        self.retention = timedelta(days=retention_days)
        self.clock = clock
        self.purge_every_s = purge_every_s
        self.batch = batch
        self.batches_per_call = batches_per_call
        self._next_purge = 0.0  # monotonic: the first tick purges

    async def record(
        self,
        at: datetime,
        interval_s: float,
        checks: Iterable[HealthCheck],
        results: Mapping[str, CheckResult],
    ) -> bool:
        """Store the tick (and purge when due); False when the database did not take it."""
        probe = probe_of(at, interval_s, checks, results)
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_S), self.db.acquire() as conn:
                await insert_probe(conn, probe)
        except Exception as exc:  # the database may be the outage: the gap reads as unknown
            log.warning("health.probe_unrecorded", error=str(exc))
            return False
        if time.monotonic() >= self._next_purge:
            await self.purge()
        return True

    async def purge(self) -> int:
        """Delete rows older than the retention, at most ``batches_per_call`` batches; stays
        due (next tick) while more remain, else waits ``purge_every_s``."""
        cutoff = self.clock() - self.retention
        deleted, full = 0, False
        try:
            async with self.db.acquire() as conn:
                for _ in range(self.batches_per_call):
                    n = await purge_before(conn, cutoff, self.batch)
                    deleted += n
                    full = n >= self.batch
                    if not full:
                        break
        except Exception as exc:
            log.warning("health.probe_purge_failed", error=str(exc))
            self._next_purge = time.monotonic() + 60.0
            return deleted
        self._next_purge = 0.0 if full else time.monotonic() + self.purge_every_s
        if deleted:
            log.info("health.probes_purged", deleted=deleted, before=cutoff.isoformat())
        return deleted
