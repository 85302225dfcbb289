"""The scaler as every API replica reads it: its settings, its stored decisions, whether it lives.

Why from Postgres and not from the scaler itself: only the leader runs the loop, and any replica
may answer ``GET /v1/scaling/…``. The decisions table is the one shared truth, so a follower
shows what the leader did, and a scaler that stopped deciding (no leader, or a leader cut off
from Postgres) shows up as ``stale`` instead of as an old answer that looks current.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime

import asyncpg

from quarterdeck.exceptions import ValidationFailed
from quarterdeck.kit.clock import utcnow
from quarterdeck.scaling import repository as repo
from quarterdeck.scaling.models import (
    DecisionPage,
    DecisionRecord,
    Direction,
    ScalerMode,
    ScalerStatus,
)
from quarterdeck.scaling.policy import ScalerConfig
from quarterdeck.store.pool import Database

__all__ = ["MAX_PAGE", "ScalingService", "record_of"]

MAX_PAGE = 500
"""The largest page of decisions one call returns."""

STALE_INTERVALS = 3
"""A configured scaler with no decision for this many intervals is reported stale."""

_CURSOR = re.compile(r"[0-9]{1,18}")  # a bigserial id; 18 digits keep it inside bigint


def record_of(row: asyncpg.Record) -> DecisionRecord:
    """A stored row as the API shows it."""
    return DecisionRecord.model_validate(dict(row))


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", errors=[{"field": field, "message": message}])


class ScalingService:
    """Reads the scaler's configuration and decisions; never acts (the :class:`Scaler` does)."""

    def __init__(
        self,
        db: Database,
        *,
        mode: ScalerMode,
        policy: str,
        target: str | None,
        interval_s: float,
        config: ScalerConfig,
        is_leader: Callable[[], bool] = lambda: False,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.mode: ScalerMode = mode
        self.policy = policy
        self.target = target
        self.interval_s = interval_s
        self.config = config
        self.is_leader = is_leader
        self.clock = clock

    async def status(self) -> ScalerStatus:
        """The settings, the newest stored decision and its age, and whether it is stale."""
        async with self.db.acquire() as conn:
            row = await repo.latest_decision(conn)
        last = record_of(row) if row is not None else None
        age = None if last is None else max(0.0, (self.clock() - last.at).total_seconds())
        stale = self.mode != "off" and (age is None or age > STALE_INTERVALS * self.interval_s)
        return ScalerStatus(
            mode=self.mode,
            policy=self.policy,
            target=self.target,
            interval_s=self.interval_s,
            config=dict(asdict(self.config)),
            leader=self.is_leader(),
            last=last,
            last_age_s=age,
            stale=stale,
        )

    async def decisions(
        self, *, limit: int = 50, cursor: str | None = None, direction: Direction | None = None
    ) -> DecisionPage:
        """A page of decisions, newest first; ``cursor`` is the id of the last item seen.

        ``next_cursor`` is set when a full page came back (there may be more), so a client
        stops on the first short page.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise _invalid("limit", f"must be between 1 and {MAX_PAGE}")
        before: int | None = None
        if cursor is not None:
            if not _CURSOR.fullmatch(cursor):
                raise _invalid("cursor", "malformed: pass next_cursor from the previous page")
            before = int(cursor)
        if direction is not None and direction not in ("up", "down", "hold"):
            raise _invalid("direction", "must be up, down or hold")
        async with self.db.acquire() as conn:
            rows = await repo.list_decisions(
                conn, limit=limit, before_id=before, direction=direction
            )
        items = [record_of(r) for r in rows]
        next_cursor = str(items[-1].id) if len(items) == limit else None
        return DecisionPage(items=items, next_cursor=next_cursor)
