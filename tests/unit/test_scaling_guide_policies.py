"""The guide's two policies, reproduced with their mistakes, driven by a fake clock.

The HPA numbers follow the guide's manifest (CPU 70 %, memory 80 %, 10 requests/s per pod, 3..20,
scale-up window 300 s, scale-down 10 %/60 s after a 300 s window) and the HPA v2 algorithm; the
pressure numbers follow the guide's ``AdaptiveAgentScaler``.
"""

from __future__ import annotations

from typing import Any

from quarterdeck.scaling.guide_policies import GuideHpaPolicy, GuidePressurePolicy
from quarterdeck.scaling.policy import Decision, Observation, ScalerConfig, make_policy

IDLE: dict[str, Any] = {"cpu_ratio": 0.1, "memory_ratio": 0.2, "requests_per_s": 1.0}


def hpa_run(
    policy: GuideHpaPolicy, replicas: int, start: int, stop: int, load: dict[str, Any]
) -> tuple[list[Decision], int]:
    """One sync every 15 s from ``start`` to ``stop`` (exclusive), applying each decision."""
    out = []
    for at in range(start, stop, 15):
        d = policy.decide(Observation(at=float(at), replicas=replicas, ready=replicas, **load))
        out.append(d)
        replicas = d.desired
    return out, replicas


def moves(decisions: list[Decision]) -> list[tuple[float, int]]:
    return [(d.at, d.desired) for d in decisions if d.direction != "hold"]


# --- guide-hpa ---------------------------------------------------------------------------------


def test_hpa_burst_waits_300_s_before_any_scale_out() -> None:
    p = GuideHpaPolicy()
    _, replicas = hpa_run(p, 3, -600, 0, IDLE)  # a calm history
    assert replicas == 3
    burst = {
        "cpu_ratio": 1.4,
        "memory_ratio": 0.2,
        "requests_per_s": 1.0,
    }  # CPU at twice its target
    ds, _ = hpa_run(p, replicas, 0, 600, burst)
    # The up window takes the lowest recommendation of the last 300 s: the calm sample at -15 s
    # leaves it only at 285 s (strictly-after cutoff, 15 s syncs), so the burst waits ~5 minutes.
    assert moves(ds)[0] == (285.0, 6)
    assert all(d.direction == "hold" for d in ds if d.at < 285)
    held = ds[5]
    assert held.factors["raw_recommendation"] == 6 and "scale-up window" in held.reason


def test_hpa_20_to_3_takes_twelve_60_s_periods_after_the_window() -> None:
    p = GuideHpaPolicy()
    busy = {"cpu_ratio": 0.7, "memory_ratio": 0.8, "requests_per_s": 200.0}
    _, replicas = hpa_run(p, 20, -600, 0, busy)
    assert replicas == 20
    ds, replicas = hpa_run(p, replicas, 0, 1500, IDLE)  # load gone at 0 s
    steps = moves(ds)
    # First step when the last busy sample (-15 s) leaves the 300 s window; then 10 %/60 s,
    # truncating, with the period start = current + deleted within the last 60 s.
    assert [n for _, n in steps] == [18, 16, 14, 12, 10, 9, 8, 7, 6, 5, 4, 3]
    assert [t for t, _ in steps] == [285.0 + 60 * i for i in range(12)]
    # 12 periods: 3 pods at 945 s, 660 s (11 min) after the first step, 945 s ≈ 16 min after
    # the load went: the "about 12 minutes after the delay" counted in periods.
    assert steps[-1] == (945.0, 3) and replicas == 3
    assert "rate limited" in next(d for d in ds if d.at == 285).reason


def test_hpa_rate_limits_scale_up_to_max_of_100_percent_and_4_pods() -> None:
    p = GuideHpaPolicy()
    d = p.decide(Observation(at=0, replicas=3, cpu_ratio=0.7, requests_per_s=3.0))
    assert d.desired == 3  # within tolerance; also seeds the window with 3
    # Skip the 300 s window: the recommendation then is 20; the limit from 3 is max(3+4, 6) = 7.
    for at in range(15, 330, 15):
        d = p.decide(Observation(at=float(at), replicas=3, requests_per_s=1000.0))
    assert (d.at, d.desired, d.factors["rate_limit"]) == (315.0, 7, 7)


def test_hpa_tolerance_and_multi_metric_max() -> None:
    calm = GuideHpaPolicy().decide(Observation(at=0, replicas=10, cpu_ratio=0.75))
    assert calm.desired == 10 and calm.factors["cpu_proposal"] == 10  # ratio 1.07: in band
    d = GuideHpaPolicy().decide(
        Observation(at=0, replicas=10, cpu_ratio=0.35, memory_ratio=0.4, requests_per_s=150.0)
    )
    # cpu ceil(0.5*10)=5, memory ceil(0.5*10)=5, rps ceil(1.5*10)=15: the max wins, but the fresh
    # window was seeded with 10 and the up window holds it for 300 s.
    assert (d.factors["cpu_proposal"], d.factors["rps_proposal"]) == (5, 15)
    assert d.factors["raw_recommendation"] == 15 and d.desired == 10


def test_hpa_missing_metrics_as_the_hpa() -> None:
    nothing = GuideHpaPolicy().decide(Observation(at=0, replicas=8))
    assert nothing.desired == 8 and "every metric is missing" in nothing.reason
    # CPU missing, the rest say "down": skipped.
    p = GuideHpaPolicy()
    ds, replicas = hpa_run(p, 8, 0, 900, {"memory_ratio": 0.1, "requests_per_s": 1.0})
    assert replicas == 8 and "missing" in ds[-1].reason
    # CPU missing, the rest say "up": the HPA still scales up (after its 300 s window).
    p = GuideHpaPolicy()
    ds, replicas = hpa_run(p, 4, 0, 600, {"memory_ratio": 1.6})
    assert replicas > 4 and ds[-1].factors["invalid_metrics"] == 2


def test_hpa_acts_once_per_15_s_sync() -> None:
    p = GuideHpaPolicy()
    assert p.decide(Observation(at=0, replicas=5, **IDLE)).factors["synced"] is True
    between = p.decide(Observation(at=10, replicas=5, **IDLE))
    assert between.factors["synced"] is False and between.direction == "hold"
    assert p.decide(Observation(at=15, replicas=5, **IDLE)).factors["synced"] is True


def test_hpa_keeps_the_guide_bounds_whatever_the_config() -> None:
    p = make_policy("guide-hpa", ScalerConfig(min_replicas=1, max_replicas=50))
    assert p.decide(Observation(at=0, replicas=30, **IDLE)).desired == 20
    assert make_policy("guide-hpa", ScalerConfig()).decide(Observation(0, 1, **IDLE)).desired == 3


# --- guide-pressure ----------------------------------------------------------------------------

QUIET: dict[str, Any] = {"cpu_ratio": 0.1, "queued": 0, "p95_latency_s": 1.0, "error_rate": 0.0}


def test_pressure_memory_unit_bug_blocks_every_scale_down() -> None:
    # Idle pods, 2 GB each: bytes > 0.8 is always true, the score is never 0, so never down.
    p = GuidePressurePolicy()
    replicas = 20
    for at in range(0, 3600, 30):
        d = p.decide(Observation(at=float(at), replicas=replicas, memory_bytes=2e9, **QUIET))
        assert d.factors["memoryPressure"] == 1 and d.factors["pressure_score"] == 1
        replicas = d.desired
    assert replicas == 20
    # The same pods with the memory series missing read as 0: the score is 0 and it shrinks.
    d = GuidePressurePolicy().decide(Observation(at=0, replicas=20, **QUIET))
    assert d.factors["pressure_score"] == 0 and d.desired == 16


def test_pressure_20_to_3_sequence_and_floor_rounding() -> None:
    p = GuidePressurePolicy()
    replicas, seen = 20, []
    for at in range(0, 300, 30):
        replicas = p.decide(Observation(at=float(at), replicas=replicas, **QUIET)).desired
        seen.append(replicas)
    assert seen[:8] == [16, 12, 9, 7, 5, 4, 3, 3]  # floor(n * 0.8), never below 3


def test_pressure_scales_out_on_errors_even_when_the_provider_fails() -> None:
    d = GuidePressurePolicy().decide(
        Observation(
            at=0,
            replicas=5,
            memory_bytes=1e9,
            error_rate=0.4,
            p95_latency_s=30.0,
            provider_failing=True,
        )
    )
    assert d.factors["pressure_score"] == 3 and d.desired == 8  # ceil(5 * 1.5)
    assert "score: 3" in d.reason
    assert (
        GuidePressurePolicy()
        .decide(Observation(at=0, replicas=15, memory_bytes=1e9, queued=80, error_rate=0.2))
        .desired
        == 20
    )  # ceil(22.5) capped at 20


def test_pressure_acts_only_every_30_s_with_no_tolerance_or_cooldown() -> None:
    p = GuidePressurePolicy()
    hot: dict[str, Any] = {"memory_bytes": 1e9, "queued": 80, "requests_per_s": 500.0}
    assert p.decide(Observation(at=0, replicas=4, **hot)).desired == 6
    between = p.decide(Observation(at=20, replicas=6, **hot))
    assert between.desired == 6 and between.factors["evaluated"] is False
    assert p.decide(Observation(at=30, replicas=6, **hot)).desired == 9
    # Load gone but memory reported: score 1, no change; with everything missing: down at once.
    assert p.decide(Observation(at=60, replicas=9, memory_bytes=1e9)).desired == 9
    assert p.decide(Observation(at=90, replicas=9)).desired == 7
