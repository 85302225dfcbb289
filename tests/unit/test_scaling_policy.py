"""The shared scaling interface and Quarterdeck's policy, driven by a fake clock (plain numbers).

The hand-worked numbers below use ``HAND``: 50 runs per worker at 70 % target utilization, i.e.
35 runs in flight per worker, min 3 (the defaults before issue 19's tuning; the tests of the
defaults themselves come last).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from quarterdeck.scaling.policy import (
    Decision,
    Observation,
    ScalerConfig,
    StabilizationWindow,
    clamp,
    make_policy,
    within_tolerance,
)
from quarterdeck.scaling.quarterdeck_policy import QuarterdeckPolicy

PER_WORKER = 35  # 50 * 0.7
HAND = ScalerConfig(min_replicas=3, target_utilization=0.7)


def hand(**changes: Any) -> ScalerConfig:
    return dataclasses.replace(HAND, **changes)


def obs(at: float, replicas: int, in_flight: int | None, **kw: object) -> Observation:
    """Half queued, half running (queued rounded up); ready = replicas unless given."""
    if in_flight is None:
        return Observation(at=at, replicas=replicas, ready=replicas, **kw)  # type: ignore[arg-type]
    queued = (in_flight + 1) // 2
    fields: dict[str, object] = {"ready": replicas, "queued": queued, "running": in_flight - queued}
    fields.update(kw)
    return Observation(at=at, replicas=replicas, **fields)  # type: ignore[arg-type]


def run(
    policy: QuarterdeckPolicy, replicas: int, loads: list[tuple[float, int]], **kw: object
) -> list[Decision]:
    """Feed (time, in-flight) pairs, applying each decision to the next observation."""
    out = []
    for at, load in loads:
        d = policy.decide(obs(at, replicas, load, **kw))
        out.append(d)
        replicas = d.desired
    return out


def changes(decisions: list[Decision]) -> list[tuple[float, int, int]]:
    return [(d.at, d.current, d.desired) for d in decisions if d.direction != "hold"]


# --- interface and helpers ---------------------------------------------------------------------


def test_decision_direction() -> None:
    def mk(current: int, desired: int) -> Decision:
        return Decision(0.0, "p", current, desired, "r", {})

    assert mk(3, 5).direction == "up"
    assert mk(5, 3).direction == "down"
    assert mk(4, 4).direction == "hold"


def test_default_config_is_valid() -> None:
    ScalerConfig().validate()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("min_replicas", -1),
        ("max_replicas", 0),
        ("max_replicas", 1),  # below min_replicas 2
        ("concurrency_per_worker", 0),
        ("target_utilization", 0.0),
        ("target_utilization", 1.5),
        ("tolerance", -0.1),
        ("tolerance", 1.0),
        ("max_backlog_age_s", 0.0),
        ("scale_up_stabilization_s", -1.0),
        ("scale_down_stabilization_s", -1.0),
        ("cooldown_s", -1.0),
        ("max_scale_up_step", 0),
        ("cpu_guard", 0.0),
        ("memory_guard", -1.0),
        ("cooldown_s", float("nan")),
    ],
)
def test_config_validate_names_the_bad_field(field: str, value: float) -> None:
    change: dict[str, Any] = {field: value}
    bad = dataclasses.replace(ScalerConfig(), **change)
    with pytest.raises(ValueError, match=field):
        bad.validate()


def test_make_policy_builds_each_and_validates() -> None:
    for name in ("quarterdeck", "guide-hpa", "guide-pressure"):
        assert make_policy(name, ScalerConfig()).name == name
    with pytest.raises(ValueError, match="max_replicas"):
        make_policy("quarterdeck", ScalerConfig(min_replicas=5, max_replicas=4))
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("knative", ScalerConfig())  # type: ignore[arg-type]


def test_clamp_and_tolerance() -> None:
    assert clamp(1, 3, 20) == 3
    assert clamp(25, 3, 20) == 20
    assert clamp(7, 3, 20) == 7
    assert within_tolerance(10, 45 / 50, 0.1)  # 0.0999… ≤ 0.1
    assert not within_tolerance(10, 110 / 100, 0.1)  # the HPA float quirk: 0.1000…09 > 0.1
    assert not within_tolerance(0, 1.0, 0.1)  # an empty pool is never "within tolerance"


def test_stabilization_window_keeps_strictly_newer_than_cutoff() -> None:
    w = StabilizationWindow(300.0)
    w.add(0.0, 10)
    w.add(100.0, 4)
    assert (w.highest(), w.lowest()) == (10, 4)
    w.add(300.0, 5)  # the sample at 0 is at the cutoff: gone (HPA: timestamp.After(cutoff))
    assert (w.highest(), w.lowest(), len(w)) == (5, 4, 2)
    zero = StabilizationWindow(0.0)
    zero.add(1.0, 9)
    zero.add(1.0, 2)
    assert (zero.highest(), zero.lowest()) == (2, 2)
    with pytest.raises(ValueError, match="backwards"):
        w.add(299.0, 1)
    with pytest.raises(ValueError, match="empty"):
        StabilizationWindow(1.0).highest()


# --- Quarterdeck's policy ----------------------------------------------------------------------


def test_burst_scales_up_at_once_in_steps_then_to_max() -> None:
    p = QuarterdeckPolicy(HAND)
    ds = run(p, 3, [(0, 50), (15, 1000), (30, 1000), (45, 1000), (60, 1000)])
    assert ds[0].direction == "hold"
    # ceil(1000 / 35) = 29 → max 20; the first step is capped at +10, the next waits the 30 s
    # cooldown, then fills the rest.
    assert changes(ds) == [(15, 3, 13), (45, 13, 20)]
    assert ds[2].factors["cooldown_active"] is True
    assert "cooldown" not in ds[1].reason and "step limited" in ds[1].reason
    assert ds[1].factors["raw_recommendation"] == 29
    assert ds[1].factors["step_limited"] is True


def test_scale_down_waits_for_the_whole_down_window() -> None:
    p = QuarterdeckPolicy(HAND)
    loads = [(float(t), 700 if t < 300 else 70) for t in range(0, 1200, 15)]
    ds = run(p, 20, loads)
    downs = [c for c in changes(ds) if c[2] < c[1]]
    # Last high sample at 285; it leaves the window strictly after 285 + 300.
    assert downs == [(585.0, 20, 3)]
    held = next(d for d in ds if d.at == 570)
    assert held.factors["window_down_max"] == 20 and "still 20" in held.reason


def test_flapping_load_never_changes_direction_within_the_down_window() -> None:
    p = QuarterdeckPolicy(HAND)
    # Load flips between high and low every minute for an hour.
    loads = [(float(t), 600 if (t // 60) % 2 == 0 else 60) for t in range(0, 3600, 15)]
    moves = changes(run(p, 3, loads))
    assert moves, "the first high minute must scale up"
    directions = ["up" if new > old else "down" for _, old, new in moves]
    assert set(directions) == {"up"}  # the down window's max never lets it fall back


@pytest.mark.parametrize("missing", ["queued", "running"])
def test_missing_metric_holds_at_current_never_min(missing: str) -> None:
    p = QuarterdeckPolicy(HAND)
    run(p, 12, [(0, 400)])  # 12 workers in use
    kw = {"queued": 0, "running": 0}
    kw[missing] = None  # type: ignore[assignment]
    for at in (400.0, 800.0, 2000.0):  # long after every window: still no drop to min
        d = p.decide(Observation(at=at, replicas=12, ready=12, **kw))  # type: ignore[arg-type]
        assert d.desired == 12 and d.direction == "hold"
        assert missing in d.reason and d.factors["missing_metrics"] == missing


def test_provider_failing_with_backlog_holds() -> None:
    p = QuarterdeckPolicy(HAND)
    d = p.decide(obs(0, 5, 1000, provider_failing=True, oldest_queued_s=600.0))
    assert d.desired == 5 and d.factors["provider_hold"] is True
    assert "provider" in d.reason
    # Same load, provider healthy: it scales out.
    assert QuarterdeckPolicy(HAND).decide(obs(0, 5, 1000)).desired == 15


def test_provider_failing_without_backlog_still_scales_down() -> None:
    p = QuarterdeckPolicy(hand(scale_down_stabilization_s=0.0))
    d = p.decide(Observation(at=0, replicas=10, queued=0, running=35, provider_failing=True))
    assert d.desired == 3 and d.factors["provider_hold"] is False


def test_cpu_guard_blocks_scale_down_and_says_so() -> None:
    p = QuarterdeckPolicy(hand(scale_down_stabilization_s=0.0))
    d = p.decide(obs(0, 10, 40, cpu_ratio=0.95))
    assert d.desired == 10 and d.factors["cpu_guard_active"] is True and "CPU" in d.reason
    d = p.decide(obs(15, 10, 40, memory_ratio=0.97))
    assert d.desired == 10 and "memory" in d.reason
    d = p.decide(obs(30, 10, 40, cpu_ratio=0.5, memory_ratio=0.5))
    assert d.desired == 3
    # A guard never blocks a scale-up.
    assert QuarterdeckPolicy(HAND).decide(obs(0, 3, 700, cpu_ratio=0.99)).desired == 13


def test_tolerance_band() -> None:
    cfg = hand(scale_down_stabilization_s=0.0)
    inside = QuarterdeckPolicy(cfg).decide(obs(0, 10, 367))  # ratio 1.049: hold
    assert inside.desired == 10 and inside.factors["within_tolerance"] is True
    below = QuarterdeckPolicy(cfg).decide(obs(0, 10, 320))  # ratio 0.914: hold
    assert below.desired == 10
    above = QuarterdeckPolicy(cfg).decide(obs(0, 10, 420))  # ratio 1.2: ceil(12.0) = 12
    assert above.desired == 12 and above.factors["within_tolerance"] is False


def test_cooldown_between_changes() -> None:
    p = QuarterdeckPolicy(HAND)
    ds = run(p, 3, [(0, 200), (15, 400), (29, 400), (30, 400)])
    assert [d.desired for d in ds] == [6, 6, 6, 12]
    assert ds[1].factors["cooldown_active"] is True and "ago" in ds[1].reason


def test_min_and_max_bounds() -> None:
    p = QuarterdeckPolicy(hand(scale_down_stabilization_s=0.0))
    assert p.decide(obs(0, 3, 0)).desired == 3  # no work: never below min
    assert p.decide(obs(100, 5, 0)).desired == 3
    big = QuarterdeckPolicy(hand(max_scale_up_step=100)).decide(obs(0, 3, 10_000))
    assert big.desired == 20


def test_old_backlog_adds_capacity_in_proportion_to_arrivals() -> None:
    cfg = HAND
    # 10 workers, 300 in flight: within what they hold, but the oldest run waited 2 minutes.
    plain = QuarterdeckPolicy(cfg).decide(obs(0, 10, 300, oldest_queued_s=120.0))
    assert plain.desired == 11 and plain.factors["backlog_floor"] == 11
    # 2 runs/s arrive: another 60 s brings 120 runs = ceil(120 / 35) = 4 more workers.
    busy = QuarterdeckPolicy(cfg).decide(obs(0, 10, 300, oldest_queued_s=120.0, arrivals_per_s=2))
    assert busy.desired == 14
    # Pods still starting will serve it: no pile-on.
    starting = QuarterdeckPolicy(cfg).decide(
        obs(0, 10, 300, ready=7, oldest_queued_s=120.0, arrivals_per_s=2)
    )
    assert starting.desired == 10 and starting.factors["pods_starting"] is True
    fresh = QuarterdeckPolicy(cfg).decide(obs(0, 10, 300, oldest_queued_s=30.0))
    assert fresh.desired == 10


def test_factors_carry_every_input_and_intermediate() -> None:
    d = QuarterdeckPolicy(HAND).decide(obs(0, 4, 200, cpu_ratio=0.3))
    for key in (
        "replicas",
        "ready",
        "queued",
        "running",
        "oldest_queued_s",
        "arrivals_per_s",
        "cpu_ratio",
        "memory_ratio",
        "provider_failing",
        "in_flight",
        "capacity_at_target",
        "raw_recommendation",
        "recommendation",
        "window_up_min",
        "window_down_max",
        "cpu_guard_active",
        "memory_guard_active",
        "cooldown_active",
        "desired",
    ):
        assert key in d.factors, key
    assert d.factors["in_flight"] == 200 and d.factors["capacity_at_target"] == 140
    assert d.reason.endswith(".") and d.policy == "quarterdeck"
