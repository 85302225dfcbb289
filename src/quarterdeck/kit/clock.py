"""Clocks that decision logic takes as an argument, so tests can drive time by hand.

:class:`FakeClock` is the one hand-driven clock for every test: code that wants a
:class:`Clock` gets the clock itself, code that takes a monotonic callable gets ``clock.now``,
and code that takes a wall-clock callable gets ``clock.wall``; ``advance`` moves both together,
so a test never keeps two notions of "now" in step by hand.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale; only differences are meaningful."""

    def wall(self) -> datetime:
        """The current UTC wall-clock time."""


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> datetime:
        return datetime.now(UTC)


class FakeClock:
    """A clock that only moves when told to.

    ``now()`` starts at ``start``; ``wall()`` is ``wall`` plus the seconds advanced since, so a
    monotonic deadline and a wall-clock expiry computed in one test stay consistent.
    """

    def __init__(self, start: float = 0.0, wall: datetime | None = None) -> None:
        self._start = self._now = start
        self._wall = wall or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> float:
        return self._now

    def wall(self) -> datetime:
        return self._wall + timedelta(seconds=self._now - self._start)

    def advance(self, seconds: float | timedelta) -> None:
        """Move forward by ``seconds`` (a number or a ``timedelta``); never backwards."""
        step = seconds.total_seconds() if isinstance(seconds, timedelta) else seconds
        if step < 0:
            raise ValueError("a clock cannot go backwards")
        self._now += step


def utcnow() -> datetime:
    return datetime.now(UTC)
