"""The scaling simulator on tiny traces whose queueing can be worked out by hand, and the report."""

from __future__ import annotations

import json
import math
import random
import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest

from quarterdeck.scaling.policy import Decision, Observation, ScalerConfig
from quarterdeck.scaling.report import Comparison, compare, render_svg
from quarterdeck.scaling.simulate import percentile, simulate
from quarterdeck.scaling.trace import Run, Trace

SVG = "{http://www.w3.org/2000/svg}"


class Scripted:
    """A policy that wants ``wanted(t)`` replicas, and remembers what it saw."""

    def __init__(self, wanted: Callable[[float], int], name: str = "scripted") -> None:
        self.name = name
        self.wanted = wanted
        self.seen: list[Observation] = []

    def decide(self, obs: Observation) -> Decision:
        self.seen.append(obs)
        desired = self.wanted(obs.at)
        return Decision(obs.at, self.name, obs.replicas, desired, "scripted", {})


def fixed(n: int) -> Scripted:
    return Scripted(lambda _t: n, name=f"fixed-{n}")


def config(concurrency: int, min_replicas: int = 1) -> ScalerConfig:
    return ScalerConfig(
        min_replicas=min_replicas, max_replicas=20, concurrency_per_worker=concurrency
    )


def trace(*runs: tuple[float, float]) -> Trace:
    return Trace("hand", tuple(Run(a, d) for a, d in runs))


HAND = trace((0, 10), (2, 5), (3, 1))


def test_one_slot_queues_fifo_as_computed_by_hand() -> None:
    result = simulate(HAND, fixed(1), config(1), step_s=1, wait_target_s=10)
    # Run 0 holds the slot 0-10, run 1 then 10-15, run 2 then 15-16.
    assert result.waits == (0, 8, 12)
    assert (result.wait_p50_s, result.wait_max_s) == (8, 12)
    assert result.minutes_over_target == 1  # run 2 waited past 10 s, within minute 0
    assert (result.finished, result.unfinished, result.end_s) == (3, 0, 16)
    assert result.worker_hours == pytest.approx(16 / 3600)
    assert result.scale_events == 0


def test_two_slots_wait_for_the_first_to_free() -> None:
    result = simulate(HAND, fixed(1), config(2), step_s=1)
    # Run 0 holds 0-10, run 1 2-7; run 2 arrives at 3 to a full pod and starts at 7.
    assert result.waits == (0, 0, 4)


def test_pod_start_up_delays_service() -> None:
    one = trace((0, 5))
    slow = simulate(one, fixed(1), config(1, 0), step_s=1, start_replicas=0, pod_start_s=60)
    fast = simulate(one, fixed(1), config(1, 0), step_s=1, start_replicas=0, pod_start_s=0)
    assert slow.waits == (60,)
    assert fast.waits == (0,)
    assert slow.scale_events == fast.scale_events == 1
    assert slow.worker_hours == pytest.approx(65 / 3600)  # the start-up is paid for


def test_a_drained_pod_finishes_its_run_takes_no_new_one_and_still_counts() -> None:
    # Two pods, one slot each; at t=10 the policy wants one.  Pod 1 runs B until 50: it drains.
    runs = trace((0, 100), (0, 50), (20, 1))
    policy = Scripted(lambda t: 2 if t < 10 else 1)
    result = simulate(runs, policy, config(1), step_s=1, decide_every_s=1, start_replicas=2)
    assert result.finished == 3
    assert result.waits == (0, 0, 80)  # C waits for pod 0: the draining pod takes nothing new
    assert result.end_s == 101
    assert result.worker_hours == pytest.approx((101 + 50) / 3600)  # not (101 + 10)
    assert [e.direction for e in result.events] == ["down"]


def test_a_draining_pod_with_a_free_slot_takes_no_new_run() -> None:
    # Two slots a pod: pod 0 gets A and D, pod 1 gets B.  At t=10 pod 1 (fewer runs) drains.
    runs = trace((0, 100), (0, 100), (0, 40), (20, 1))
    policy = Scripted(lambda t: 2 if t < 10 else 1)
    result = simulate(runs, policy, config(2), step_s=1, decide_every_s=1, start_replicas=2)
    assert result.waits == (0, 0, 0, 20)  # C waits for D to end on pod 0, not for pod 1


def test_idle_pods_go_first_and_leave_at_once() -> None:
    runs = trace((0, 100))
    policy = Scripted(lambda t: 3 if t < 10 else 1)
    result = simulate(runs, policy, config(1), step_s=1, decide_every_s=1, start_replicas=3)
    assert result.worker_hours == pytest.approx((100 + 10 + 10) / 3600)


def test_flapping_policy_loses_no_run_and_its_flaps_are_counted() -> None:
    rng = random.Random(5)
    runs = trace(*((rng.uniform(0, 1800), rng.uniform(1, 400)) for _ in range(300)))
    policy = Scripted(lambda t: 1 if (t // 15) % 2 else 5)
    result = simulate(runs, policy, config(4), step_s=5, start_replicas=1, pod_start_s=5)
    assert (result.finished, result.unfinished) == (300, 0)
    assert all(math.isfinite(w) and w >= 0 for w in result.waits)
    assert result.scale_events > 10
    assert result.flaps == result.scale_events - 1  # every change reverses the last, 15 s apart
    assert result.peak_replicas == 5
    assert max(o.ready or 0 for o in policy.seen) == 5  # new pods served before draining


def test_the_observation_models_the_world() -> None:
    runs = trace((0, 100), (0, 100), (0, 100))
    policy = Scripted(lambda _t: 1)
    simulate(runs, policy, config(2), step_s=5, start_replicas=1, until_s=400)
    first, second = policy.seen[0], policy.seen[1]
    assert (first.at, first.replicas, first.ready, first.queued, first.running) == (0, 1, 1, 1, 2)
    assert first.arrivals_per_s == pytest.approx(3 / 60)
    assert first.cpu_ratio == pytest.approx(0.3)  # both slots busy, x 0.3
    assert first.memory_ratio == pytest.approx(0.5)
    assert first.memory_bytes == pytest.approx(0.5 * 2 * 1024**3)
    assert first.requests_per_s == 0.0  # finished runs per second (the HPA's pods metric)
    assert first.p95_latency_s is None  # nothing finished yet
    assert (second.at, second.oldest_queued_s) == (15, 15)
    later = [o for o in policy.seen if o.at >= 105]
    assert later[0].p95_latency_s == 100  # the two first runs: no wait, 100 s each
    # rate(claude_agent_requests_total[2m]): the 2 runs that ended at 100 s count for 120 s.
    assert later[0].requests_per_s == pytest.approx(2 / 120)
    by_time = {o.at: o.requests_per_s for o in policy.seen}
    assert by_time[210] == pytest.approx(3 / 120)  # the third run ended at 200 s
    assert by_time[225] == pytest.approx(1 / 120)  # the first two left the window at 220 s
    assert by_time[330] == 0.0


def test_a_policy_interval_sets_the_decision_period() -> None:
    policy = Scripted(lambda _t: 1)
    policy.interval_s = 30.0  # type: ignore[attr-defined]
    simulate(trace((0, 100)), policy, config(1), step_s=5)
    assert [o.at for o in policy.seen][:3] == [0, 30, 60]


def test_stranded_runs_are_reported_not_looped_on() -> None:
    result = simulate(trace((0, 5)), fixed(0), config(1, 0), step_s=60, start_replicas=0)
    assert result.unfinished == 1
    assert math.isinf(result.waits[0])


@pytest.mark.parametrize("step_s", [0, -1, 61])
def test_bad_steps_are_refused(step_s: float) -> None:
    with pytest.raises(ValueError, match="step_s"):
        simulate(HAND, fixed(1), config(1), step_s=step_s)


def test_percentile_is_nearest_rank() -> None:
    assert percentile([4, 1, 3, 2], 50) == 2
    assert percentile([4, 1, 3, 2], 99) == 4
    assert percentile([], 99) == 0.0


def burst_trace() -> Trace:
    quiet = [(float(t), 120.0) for t in range(0, 1800, 20)]
    burst = [(600 + i * 0.4, 180.0) for i in range(300)]
    return Trace("burst <&> test", tuple(Run(a, d) for a, d in sorted(quiet + burst)))


def test_compare_tables_json_and_ratios() -> None:
    cfg = ScalerConfig(concurrency_per_worker=10)
    comparison = compare(burst_trace(), ["quarterdeck", "guide-hpa"], cfg, step_s=5)
    rows = comparison.table_rows()
    assert [r["policy"] for r in rows] == ["quarterdeck", "guide-hpa"]
    assert set(rows[0]) >= {"wait p50", "wait p99", "worker-hours", "scale events", "flaps"}
    document = json.loads(comparison.to_json())
    assert document["policies"]["quarterdeck"]["finished"] == len(burst_trace().runs)
    assert len(document["policies"]["guide-hpa"]["series"]["t"]) > 30
    ratios = comparison.ratios()
    assert ratios is not None and set(ratios) == {
        "p99_wait_ratio",
        "p99_ok",
        "worker_hours_ratio",
        "worker_hours_ok",
        "flaps",
        "flaps_ok",
        "goal_met",
    }
    assert document["ratios"]["worker_hours_ratio"] == pytest.approx(ratios["worker_hours_ratio"])
    ours, theirs = comparison.results["quarterdeck"], comparison.results["guide-hpa"]
    assert ratios["worker_hours_ok"] == (ours.worker_hours <= theirs.worker_hours)
    assert ratios["flaps"] == ours.flaps and ratios["flaps_ok"] == (ours.flaps == 0)
    assert ratios["goal_met"] == (
        ratios["p99_ok"] and ratios["worker_hours_ok"] and ratios["flaps_ok"]
    )
    lines = comparison.goal_lines()
    assert len(lines) == 4 and lines[-1] == f"goal met: {'yes' if ratios['goal_met'] else 'NO'}"
    header, table = comparison.table_columns()
    assert header == ["", "quarterdeck", "guide-hpa"]
    assert [row[0] for row in table][:3] == ["wait p50", "wait p95", "wait p99"]
    assert all(len(row) == 3 for row in table)


def flap_count(wanted: Callable[[float], int], **kw: float) -> tuple[list[str], int]:
    """Directions and flaps of a scripted pool deciding every second over one long run."""
    result = simulate(
        trace((0, 2000)), Scripted(wanted), config(1), step_s=1, decide_every_s=1, **kw
    )
    return [e.direction for e in result.events], result.flaps


def test_a_flap_is_a_direction_change_within_the_window() -> None:
    # Up at 100, down at 200: 100 s apart, within 300 s.
    assert flap_count(lambda t: 1 if t < 100 else 3 if t < 200 else 2) == (["up", "down"], 1)
    # Down at 100, up at 250: a flap too.
    assert flap_count(lambda t: 3 if t < 100 else 2 if t < 250 else 4, start_replicas=3) == (
        ["down", "up"],
        1,
    )
    # Exactly the window apart is not within it; the same direction twice never flaps.
    assert flap_count(lambda t: 1 if t < 100 else 3 if t < 400 else 2)[1] == 0
    assert flap_count(lambda t: 1 if t < 100 else 3 if t < 150 else 5)[1] == 0
    # The window is scale_down_stabilization_s unless given.
    assert flap_count(lambda t: 1 if t < 100 else 3 if t < 400 else 2, flap_window_s=301)[1] == 1


def test_render_svg_is_well_formed_with_a_panel_per_policy() -> None:
    cfg = config(5)
    results = {
        name: simulate(burst_trace(), policy, cfg, step_s=5)
        for name, policy in (("fixed-2", fixed(2)), ("ramp", Scripted(lambda t: 2 + int(t // 300))))
    }
    svg = render_svg(Comparison("burst <&> test", cfg, {}, results))
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert "burst <&> test" in "".join(root.find(f"{SVG}title").itertext())  # type: ignore[union-attr]
    assert len(root.findall(f"{SVG}polygon")) == 2  # the load area, one per panel
    assert len(root.findall(f"{SVG}polyline")) == 4  # backlog and replicas, per panel
    width, height = float(root.get("width", 0)), float(root.get("height", 0))
    for line in root.findall(f"{SVG}polyline"):
        for point in line.get("points", "").split():
            px, py = map(float, point.split(","))
            assert 0 <= px <= width and 0 <= py <= height
