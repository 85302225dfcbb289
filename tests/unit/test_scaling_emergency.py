"""The health monitor's emergency scale-up as pure decisions (scaling/policy.EmergencyFloor) and
the floor Quarterdeck's policy honours, driven by plain numbers as time (a fake ``now``)."""

from __future__ import annotations

import dataclasses

import pytest

from quarterdeck.scaling.handover import request_ttl
from quarterdeck.scaling.policy import EmergencyFloor, Observation, ScalerConfig
from quarterdeck.scaling.quarterdeck_policy import QuarterdeckPolicy, backlog_step

# 10 runs in flight per worker; a 120 s scale-down window, a 30 s cooldown, +3 at most per step.
CFG = ScalerConfig(
    min_replicas=2,
    max_replicas=8,
    concurrency_per_worker=20,
    target_utilization=0.5,
    scale_down_stabilization_s=120.0,
    cooldown_s=30.0,
    max_scale_up_step=3,
)


def load(at: float, replicas: int, in_flight: int, floor: int | None = None) -> Observation:
    return Observation(
        at=at, replicas=replicas, ready=replicas, queued=0, running=in_flight, floor=floor
    )


def test_a_request_takes_one_step_of_the_policys_size_bounded_by_step_and_max() -> None:
    floor = EmergencyFloor(CFG)
    one = floor.request(0.0, 3, 1)
    assert (one.accepted, one.current, one.desired, one.until) == (True, 3, 4, 120.0)
    assert "3→4" in one.reason and one.factors["step"] == 1
    # A large step is cut to max_scale_up_step, never a jump to max ...
    assert floor.request(0.0, 3, 50).desired == 6
    # ... and the result is cut to max_replicas; at max there is nothing to add.
    assert floor.request(0.0, 7, 3).desired == 8
    full = floor.request(0.0, 8, 1)
    assert not full.accepted and full.desired == 8 and "maximum of 8" in full.reason
    # A non-positive step still adds one worker; an empty pool starts at least at min.
    assert floor.request(0.0, 3, 0).desired == 4
    assert floor.request(0.0, 0, 1).desired == 2


def test_the_step_is_the_old_backlog_rules() -> None:
    assert backlog_step(None, CFG) == 1 and backlog_step(0.0, CFG) == 1
    # 1 run/s for one more backlog age (60 s) at 10 runs per worker: 6 workers.
    assert backlog_step(1.0, CFG) == 6
    assert backlog_step(0.01, CFG) == 1
    # The policy's own old-backlog floor uses the same step.
    policy = QuarterdeckPolicy(CFG)
    old = dataclasses.replace(load(0.0, 3, 30), queued=5, oldest_queued_s=90.0, arrivals_per_s=1.0)
    decision = policy.decide(old)
    assert decision.factors["backlog_floor"] == 3 + 6
    assert decision.desired == 3 + CFG.max_scale_up_step


def test_requests_within_the_cooldown_do_not_stack() -> None:
    floor = EmergencyFloor(CFG)
    first = floor.request(100.0, 3, 1)
    floor.commit(first)
    again = floor.request(110.0, 4, 1)
    assert not again.accepted and again.desired == again.current == 4
    assert "10 s ago" in again.reason and "do not stack" in again.reason
    assert not floor.request(129.9, 4, 1).accepted
    later = floor.request(130.0, 4, 1)  # the cooldown is over: the next step is allowed
    assert later.accepted and later.desired == 5


def test_a_grant_not_applied_leaves_no_cooldown_or_floor() -> None:
    floor = EmergencyFloor(CFG)
    grant = floor.request(0.0, 3, 1)  # e.g. the write failed: never committed
    assert floor.floor(1.0) is None
    assert floor.request(1.0, 3, 1).accepted
    refused = floor.request(1.0, 8, 1)
    with pytest.raises(ValueError, match="accepted"):
        floor.commit(refused)
    floor.commit(grant)
    assert floor.floor(1.0) == 4


def test_a_failing_provider_with_a_backlog_adds_nothing() -> None:
    refused = EmergencyFloor(CFG).request(0.0, 3, 1, provider_failing=True)
    assert not refused.accepted and refused.desired == 3 and "provider" in refused.reason


def test_the_floor_holds_for_the_scale_down_window_or_at_least_the_cooldown() -> None:
    floor = EmergencyFloor(CFG)
    floor.commit(floor.request(10.0, 3, 2))
    assert floor.hold_s == 120.0
    assert [floor.floor(t) for t in (10.0, 129.9, 130.0)] == [5, 5, None]
    short = EmergencyFloor(dataclasses.replace(CFG, scale_down_stabilization_s=0.0))
    short.commit(short.request(0.0, 3, 1))
    assert short.hold_s == 30.0 and short.floor(29.0) == 4 and short.floor(30.0) is None


def test_the_policy_holds_the_raised_floor_then_its_own_windows_take_over() -> None:
    """A pool of 3 serving a steady 25 runs (3 workers' need) gets an emergency +1 at t=300."""
    held, free = QuarterdeckPolicy(CFG), QuarterdeckPolicy(CFG)
    for t in range(0, 301, 15):
        assert held.decide(load(t, 3, 25)).desired == 3
        assert free.decide(load(t, 3, 25)).desired == 3
    floor = EmergencyFloor(CFG)
    floor.commit(floor.request(300.0, 3, 1))
    # Without the floor, the next tick undoes it: the window's highest need is 3.
    undone = free.decide(load(315, 4, 25))
    assert (undone.current, undone.desired) == (4, 3)
    # With it, every tick of the window holds 4, and says why.
    for t in range(315, 420, 15):
        d = held.decide(load(t, 4, 25, floor=floor.floor(t)))
        assert d.desired == 4, t
        assert d.factors["emergency_floor"] == 4 and d.factors["emergency_floor_held"]
        assert "emergency scale-up is held" in d.reason
    # The hold ends at 300 + 120 s; the policy's windows never saw 4, so it scales back at once.
    assert floor.floor(420) is None
    back = held.decide(load(420, 4, 25, floor=floor.floor(420)))
    assert (back.current, back.desired) == (4, 3)
    assert back.factors["emergency_floor"] is None


def test_the_floor_never_stops_a_larger_scale_up_and_is_cut_to_max() -> None:
    policy = QuarterdeckPolicy(CFG)
    busy = policy.decide(load(0, 4, 60, floor=4))  # 60 runs need 6 workers: the floor is moot
    assert busy.desired == 6 and not busy.factors["emergency_floor_held"]
    capped = QuarterdeckPolicy(CFG).decide(load(0, 8, 10, floor=20))
    assert capped.desired == 8 and capped.factors["emergency_floor"] == 8


def test_a_handed_over_request_waits_two_ticks_and_never_less_than_a_minute() -> None:
    """A follower's request waits for the leader's next tick plus a leadership change."""
    assert request_ttl(15.0) == 60.0
    assert request_ttl(45.0) == 90.0
