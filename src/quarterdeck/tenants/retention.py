"""Pure decisions of the run-data purge: which cutoff applies to whom, and when a task is due.

A tenant with its own retention is purged on its own cutoff; every other tenant shares the
default one, in a single pass that leaves the overridden tenants out (so an override longer than
the default really keeps their runs longer). Inputs and ``now`` in, decisions out: unit-tested
with the fake clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

DAY = 86_400.0


@dataclass(frozen=True)
class PurgeStep:
    """Delete runs that ended before ``before``: of ``tenant``, or (None) of every tenant not in
    ``exclude``."""

    before: datetime
    tenant: str | None
    exclude: frozenset[str] = frozenset()


def purge_plan(now: datetime, default_s: float, overrides: dict[str, float]) -> list[PurgeStep]:
    """One step per overridden tenant (by name), then the default step for everyone else."""
    if default_s <= 0 or any(s <= 0 for s in overrides.values()):
        raise ValueError("retention must be greater than zero")
    steps = [PurgeStep(now - timedelta(seconds=overrides[t]), t) for t in sorted(overrides)]
    steps.append(PurgeStep(now - timedelta(seconds=default_s), None, frozenset(overrides)))
    return steps


def due(last_run: datetime | None, now: datetime, interval_s: float) -> bool:
    """A scheduled task runs when it never ran, or its interval has passed since it last did
    (whichever replica ran it: the time is in Postgres, so restarts do not reset it)."""
    return last_run is None or (now - last_run).total_seconds() >= interval_s
