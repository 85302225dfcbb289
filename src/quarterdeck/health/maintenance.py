"""Maintenance windows: scheduled downtime an operator declares, platform-wide.

Why they exist: the monthly report's uptime is ``1 - unscheduled / (period - scheduled)``, and
only a window recorded here makes downtime scheduled; without windows every outage counts
against uptime. Why the rules are strict (timezone-aware instants, end after start, at most
seven days): a window excuses downtime, so a naive time read in the wrong zone or a window
spanning the month would quietly rewrite the report's availability; a longer maintenance is
declared as several windows, each one a deliberate act. Every create and delete is audited by
the router, and a window keeps ``created_at``, so one declared after it began is visible.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from quarterdeck.exceptions import NotFound, ValidationFailed
from quarterdeck.health import maintenance_repository as repo
from quarterdeck.kit.clock import utcnow
from quarterdeck.kit.ids import new_id
from quarterdeck.store.pool import Database

__all__ = [
    "MAX_WINDOW",
    "MaintenanceRequest",
    "MaintenanceService",
    "MaintenanceWindow",
    "check_instant",
    "check_window",
]

MAX_WINDOW = timedelta(days=7)
MAX_DISTANCE = timedelta(days=731)
"""How far from now (either way) a window may lie: two years."""
MAX_LISTED = 1000


class MaintenanceRequest(BaseModel):
    """``POST /v1/maintenance``: when, and why (shown in the report)."""

    model_config = ConfigDict(extra="forbid")

    starts_at: datetime = Field(description="ISO 8601 with a UTC offset")
    ends_at: datetime = Field(description="ISO 8601 with a UTC offset; after starts_at")
    reason: str = Field(min_length=1, max_length=500)


class MaintenanceWindow(BaseModel):
    id: str
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str | None = Field(description="the key that declared it")
    created_at: datetime


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", errors=[{"field": field, "message": message}])


def check_instant(field: str, value: datetime | None) -> datetime | None:
    """``value`` when it names an instant (has a UTC offset); 422 naming ``field`` when naive."""
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise _invalid(field, "must carry a UTC offset (e.g. 2026-10-03T22:00:00Z)")
    return value


def check_window(
    starts_at: datetime,
    ends_at: datetime,
    reason: str | None = None,
    *,
    now: datetime | None = None,
) -> None:
    """422 naming the field when the window is not one a report should excuse downtime for.

    With ``now``, both ends must lie within :data:`MAX_DISTANCE` of it: a window further away
    cannot touch any report (probe history is kept 400 days by default) and is a typo (a year
    0001 or 9999) rather than a plan."""
    check_instant("starts_at", starts_at)
    check_instant("ends_at", ends_at)
    if now is not None:
        for field, value in (("starts_at", starts_at), ("ends_at", ends_at)):
            if abs(value - now) > MAX_DISTANCE:
                raise _invalid(field, "must be within two years of now")
    if ends_at <= starts_at:
        raise _invalid("ends_at", "must be after starts_at")
    if ends_at - starts_at > MAX_WINDOW:
        raise _invalid("ends_at", "a window lasts at most 7 days (declare several)")
    if reason is not None and not reason.strip():
        raise _invalid("reason", "must not be blank")


def _window(row: asyncpg.Record) -> MaintenanceWindow:
    return MaintenanceWindow(**dict(row))


class MaintenanceService:
    """Declares, lists and deletes maintenance windows (every API replica serves it)."""

    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.clock = clock

    async def create(
        self, request: MaintenanceRequest, created_by: str | None
    ) -> MaintenanceWindow:
        check_window(request.starts_at, request.ends_at, request.reason, now=self.clock())
        async with self.db.acquire() as conn:
            row = await repo.insert_window(
                conn,
                new_id("mw"),
                request.starts_at,
                request.ends_at,
                request.reason.strip(),
                created_by,
                self.clock(),
            )
        return _window(row)

    async def list_windows(
        self, start: datetime | None = None, end: datetime | None = None
    ) -> list[MaintenanceWindow]:
        """Windows overlapping ``[start, end)``, earliest first (at most 1,000)."""
        check_instant("from", start)
        check_instant("to", end)
        if start is not None and end is not None and end <= start:
            raise _invalid("to", "must be after from")
        async with self.db.acquire() as conn:
            rows = await repo.list_windows(conn, start, end, MAX_LISTED)
        return [_window(r) for r in rows]

    async def delete(self, window_id: str) -> MaintenanceWindow:
        async with self.db.acquire() as conn:
            row = await repo.delete_window(conn, window_id)
        if row is None:
            raise NotFound(f"no maintenance window {window_id}")
        return _window(row)

    @staticmethod
    def audit_details(window: MaintenanceWindow) -> dict[str, Any]:
        """What the audit log keeps of a window (the router records it)."""
        return {
            "window_id": window.id,
            "starts_at": window.starts_at.isoformat(),
            "ends_at": window.ends_at.isoformat(),
            "reason": window.reason,
        }
