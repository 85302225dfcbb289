"""Reads of recorded gateway calls, for ``GET /v1/gateway/calls`` and ``/v1/gateway/usage``.

A small service rather than SQL in the router: the routes stay thin and the composition root
registers one object (:class:`GatewayCalls`) that holds the database, like every other domain.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from quarterdeck.exceptions import ValidationFailed
from quarterdeck.gateway import repository
from quarterdeck.gateway.models import CallFilter, CallPage, UsageGroup, UsageReport, UsageRow
from quarterdeck.store.pool import Database


def month_of(now: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar month holding ``now``: [first day 00:00, first day of the next)."""
    now = now.astimezone(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if start.month == 12:
        return start, start.replace(year=start.year + 1, month=1)
    return start, start.replace(month=start.month + 1)


def as_utc(value: datetime) -> datetime:
    """A timestamp without a zone is read as UTC (what the API documents)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class GatewayCalls:
    """Pages of calls and usage totals, always within the caller's tenant reach."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def list(self, f: CallFilter, tenant: str | None) -> CallPage:
        """``tenant`` is the caller's reach (None: every tenant); ``f.tenant`` narrows it."""
        f = f.model_copy(
            update={
                "since": as_utc(f.since) if f.since else None,
                "until": as_utc(f.until) if f.until else None,
            }
        )
        async with self._db.acquire() as conn:
            return await repository.list_calls(conn, f, tenant)

    async def usage(
        self,
        *,
        since: datetime | None,
        until: datetime | None,
        group_by: Sequence[UsageGroup],
        tenant: str | None,
        now: datetime,
    ) -> UsageReport:
        """Totals in ``[since, until)``, by default the current UTC month of ``now``."""
        month_start, month_end = month_of(now)
        start = as_utc(since) if since is not None else month_start
        end = as_utc(until) if until is not None else month_end
        if start >= end:
            raise ValidationFailed(
                "since must be before until",
                errors=[{"field": "since", "message": "must be before until"}],
            )
        groups = list(dict.fromkeys(group_by))  # repeated names group once
        async with self._db.acquire() as conn:
            rows = await repository.usage(conn, start, end, groups, tenant)
        return UsageReport(since=start, until=end, group_by=groups, rows=rows)

    async def run_usage(self, run_id: str) -> UsageRow:
        """What the gateway metered for one run (a claude-code run's every model call)."""
        async with self._db.acquire() as conn:
            return await repository.run_usage(conn, run_id)
