"""The run-data purge's decisions: cutoffs per tenant, and when a scheduled task is due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from quarterdeck.kit.clock import FakeClock
from quarterdeck.tenants.retention import DAY, PurgeStep, due, purge_plan

WALL = datetime(2026, 12, 1, tzinfo=UTC)


def test_each_override_gets_its_own_cutoff_and_the_default_step_leaves_them_out() -> None:
    clock = FakeClock(wall=WALL)
    plan = purge_plan(clock.wall(), 90 * DAY, {"long": 400 * DAY, "short": 10 * DAY})
    assert plan == [
        PurgeStep(WALL - timedelta(days=400), "long"),
        PurgeStep(WALL - timedelta(days=10), "short"),
        PurgeStep(WALL - timedelta(days=90), None, frozenset({"long", "short"})),
    ]


def test_without_overrides_one_step_covers_every_tenant() -> None:
    assert purge_plan(WALL, DAY, {}) == [PurgeStep(WALL - timedelta(days=1), None)]


@pytest.mark.parametrize("default, overrides", [(0, {}), (DAY, {"t": 0}), (-1, {"t": DAY})])
def test_a_retention_of_zero_or_less_is_refused(default: float, overrides: dict) -> None:
    with pytest.raises(ValueError, match="greater than zero"):
        purge_plan(WALL, default, overrides)


def test_a_task_is_due_when_it_never_ran_or_its_interval_passed() -> None:
    clock = FakeClock(wall=WALL)
    last = clock.wall()
    assert due(None, clock.wall(), 3600)
    assert not due(last, clock.wall(), 3600)
    clock.advance(3599)
    assert not due(last, clock.wall(), 3600)
    clock.advance(1)
    assert due(last, clock.wall(), 3600)
