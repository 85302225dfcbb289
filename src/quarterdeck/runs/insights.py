"""Dashboard aggregates over runs: what the overview shows at a glance, within a tenant's reach.

Read-only and separate from the run store on purpose: the store owns run *state* (and has an
in-memory twin the logic is tested against); these are reports that change nothing, so they
read Postgres directly (:mod:`.insights_repository`) and are tested against real rows. Times are
UTC: "today" is the UTC day of ``now`` and "this month" its UTC calendar month, as budgets and
gateway usage count them, so the figures on one page agree with each other.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from quarterdeck.runs import insights_repository as repo
from quarterdeck.runs.store_protocol import QueueStats
from quarterdeck.store.pool import Database

HOURS = 24
DAYS = 30
MAX_TENANTS = 20


def day_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def month_start(now: datetime) -> datetime:
    return day_start(now).replace(day=1)


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


@dataclass(frozen=True, slots=True)
class PeriodTotals:
    """Runs that finished in one period (today or this month)."""

    finished: int = 0
    succeeded: int = 0
    errored: int = 0
    """failed + timed_out: what the error rate counts."""
    p50_s: float | None = None
    p95_s: float | None = None
    p99_s: float | None = None
    spend_usd: Decimal = Decimal(0)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0

    @property
    def success_rate(self) -> float | None:
        return _ratio(self.succeeded, self.finished)

    @property
    def error_rate(self) -> float | None:
        return _ratio(self.errored, self.finished)

    @property
    def tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_write_tokens
            + self.cache_read_tokens
        )

    @property
    def cache_hit_rate(self) -> float | None:
        """Share of prompt tokens read from the cache."""
        prompt = self.input_tokens + self.cache_read_tokens + self.cache_write_tokens
        return _ratio(self.cache_read_tokens, prompt)

    @classmethod
    def of(cls, row: dict[str, Any]) -> PeriodTotals:
        latency = row["latency"] or [None, None, None]
        return cls(
            finished=int(row["finished"]),
            succeeded=int(row["succeeded"]),
            errored=int(row["errored"]),
            p50_s=latency[0],
            p95_s=latency[1],
            p99_s=latency[2],
            spend_usd=Decimal(row["spend"]),
            input_tokens=int(row["input_tokens"]),
            output_tokens=int(row["output_tokens"]),
            cache_write_tokens=int(row["cache_write_tokens"]),
            cache_read_tokens=int(row["cache_read_tokens"]),
        )


@dataclass(frozen=True, slots=True)
class Bucket:
    """One hour or one day of finished runs, for the small charts."""

    start: datetime
    finished: int = 0
    errored: int = 0
    p95_s: float | None = None
    spend_usd: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class RunOverview:
    """Everything the overview page shows about runs, for one reach at one moment."""

    as_of: datetime
    tenant: str | None
    states: dict[str, int]
    """queued and running now; every end state counted for today (UTC)."""
    today: PeriodTotals
    month: PeriodTotals
    hourly: list[Bucket]
    """The last 24 hours, oldest first, the current (partial) hour last."""
    daily: list[Bucket]
    """The last 30 days, oldest first, today last."""
    queue: QueueStats
    workers: list[str]
    tenants: list[str] = field(default_factory=list)
    """Tenants active this month (all-tenant reach only; at most ``MAX_TENANTS``)."""

    @property
    def queued(self) -> int:
        return sum(self.queue.queued.values())

    def points(self, series: str, name: str) -> list[float]:
        """One chart's values, e.g. ``points("hourly", "finished")``; an empty p95 is 0."""
        buckets: list[Bucket] = getattr(self, series)
        return [float(getattr(b, name) or 0) for b in buckets]


class RunInsights:
    """The overview's run figures, read in one connection."""

    def __init__(
        self,
        db: Database,
        *,
        stale_after_s: float = 10.0,
        max_age_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._stale_after = timedelta(seconds=stale_after_s)
        self.max_age_s = max_age_s
        self._clock = clock
        self._recent: dict[str | None, tuple[float, asyncio.Future[RunOverview]]] = {}
        """Per reach: when its last read started, and that read."""

    async def latest(self, tenant: str | None) -> RunOverview:
        """:meth:`overview` now, shared: every page of one reach (``tenant``) that asks within
        ``max_age_s`` of a read gets that read, and callers that ask while it runs wait for
        it. The overview's aggregates cost tens of milliseconds at 100,000 runs; a hundred open
        overview pages, each refreshed on every change, would otherwise each pay them (the
        complaint about Temporal's UI at 15M workflows)."""
        now = self._clock()
        cached = self._recent.get(tenant)
        if cached is not None and now - cached[0] < self.max_age_s:
            read = cached[1]
            if not read.done() or (not read.cancelled() and read.exception() is None):
                return await asyncio.shield(read)
        # Its own task: a page that goes away (a cancelled request) does not cancel the read
        # that the other pages wait for.
        read = asyncio.ensure_future(self.overview(tenant, datetime.now(UTC)))
        self._recent[tenant] = (now, read)
        try:
            return await asyncio.shield(read)
        except Exception:
            if self._recent.get(tenant, (0.0, None))[1] is read:
                del self._recent[tenant]  # the next page tries again
            raise

    async def overview(self, tenant: str | None, now: datetime) -> RunOverview:
        """Figures for ``tenant`` (None: every tenant) as of ``now``."""
        now = now.astimezone(UTC)
        today, month = day_start(now), month_start(now)
        first_hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS - 1)
        first_day = today - timedelta(days=DAYS - 1)
        async with self._db.acquire() as conn:
            states = await repo.state_counts(conn, tenant, today, now)
            totals = await repo.period_totals(conn, tenant, month, today, now)
            hour, day = timedelta(hours=1), timedelta(days=1)
            hourly = await repo.series(conn, tenant, hour, first_hour, now, with_p95=True)
            daily = await repo.series(conn, tenant, day, first_day, now, with_p95=False)
            per_type, oldest = await repo.queued(conn, tenant, now)
            workers = await repo.live_workers(conn, tenant, now - self._stale_after)
            if tenant is None:
                tenants = await repo.active_tenants(conn, month, now, MAX_TENANTS)
            else:
                tenants = [tenant]
        running = {k: v for k, v in states.items() if k in ("queued", "running")}
        return RunOverview(
            as_of=now,
            tenant=tenant,
            states=states,
            today=PeriodTotals.of(totals["today"]),
            month=PeriodTotals.of(totals["month"]),
            hourly=_fill(hourly, first_hour, hour, HOURS),
            daily=_fill(daily, first_day, day, DAYS),
            queue=QueueStats(per_type, oldest, running),
            workers=workers,
            tenants=tenants,
        )

    async def active_tenants(self, now: datetime, limit: int = MAX_TENANTS) -> list[str]:
        """Tenants with runs this month or in flight, biggest spend first: whose budgets an
        all-tenant overview shows (budgets have no listing of their own to ask)."""
        now = now.astimezone(UTC)
        async with self._db.acquire() as conn:
            return await repo.active_tenants(conn, month_start(now), now, limit)


def _fill(rows: Iterable[Any], start: datetime, step: timedelta, n: int) -> list[Bucket]:
    """Every bucket of the window, the empty ones as zeros, so the charts' x axes are time."""
    found = {
        r["bucket"].astimezone(UTC): Bucket(
            start=r["bucket"].astimezone(UTC),
            finished=int(r["finished"]),
            errored=int(r["errored"]),
            p95_s=r["p95"],
            spend_usd=Decimal(r["spend"]),
        )
        for r in rows
    }
    return [found.get(start + i * step, Bucket(start=start + i * step)) for i in range(n)]
