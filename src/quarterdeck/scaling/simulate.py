"""Replay a load trace through a scaling policy, in discrete time, and measure what it cost.

Why a simulator: an autoscaler's mistakes show only over hours of load (a burst it reacts to too
late, a night it never scales down, a pool that flaps), and no cluster is needed to see them.
The policy under test is the same pure code the scaler runs; only the world around it is
modelled, and the model is deliberately small so its numbers can be checked by hand:

- **Time** advances in ticks of ``step_s`` seconds (1-5 s).  At each tick, in this order: runs
  whose end time has come release their slot; pods whose start-up delay has passed become ready;
  runs that have arrived join one FIFO queue; queued runs start on free slots; then, every
  ``decide_every_s``, the policy sees an :class:`~quarterdeck.scaling.policy.Observation` and
  its desired count is applied.  A run's wait is its start tick minus its arrival.
- **Pods**: each serves ``concurrency_per_worker`` runs at once.  A scale-up creates pods that
  serve ``pod_start_s`` (default 60 s) after the decision.  A queued run goes to the ready pod
  with the most free slots (ties: the oldest), as workers that poll when free spread the load.
- **Scale-down drains**, as the issue's safe scale-down does: pods are removed in the
  ReplicaSet's order (not yet ready first, then the fewest running runs, the pod-deletion-cost
  hint, then the newest).  A removed pod takes no new run and leaves when its last run ends; no
  run is ever killed.  A pod counts as a worker from its creation (start-up time is paid for)
  until it leaves, draining included.
- **Metrics** the policy sees are modelled, not measured: CPU is ``busy slots / capacity x 0.3``
  (agent runs wait on models and use little CPU), memory ``0.2 + 0.3 x busy fraction`` of the
  limit (a Python worker's base footprint plus its runs), p95 latency over the runs finished in
  the last 5 min (wait + duration), errors 0.  ``requests_per_s`` is what the deployment serves as
  the HPA's pods metric ``claude_agent_requests_per_second``: prometheus-adapter's
  ``rate(claude_agent_requests_total[2m])``, a counter the worker bumps once per *finished run*
  (``deploy/kubernetes/prometheus-adapter/adapter-config.yaml``), so here it is the runs that
  finished in the last 120 s over 120, pool-wide (the HPA divides by its pods).  Model calls
  would be the wrong model: no metric the guide's HPA reads counts them.

The simulation runs until every run has finished and at least until the trace's span; a policy
that strands runs (zero replicas with a backlog) is stopped a day later, and the stranded runs
are counted as ``unfinished``.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from quarterdeck.scaling.policy import Decision, Observation, Policy, ScalerConfig
from quarterdeck.scaling.trace import Trace

__all__ = ["Sample", "SimResult", "percentile", "simulate"]

DEFAULT_DECIDE_EVERY_S = 15.0
"""The HPA's sync period; a policy's ``decide_every_s`` (or ``interval_s``) attribute wins."""
LATENCY_WINDOW_S = 300.0
ARRIVALS_WINDOW_S = 60.0
REQUESTS_WINDOW_S = 120.0
"""prometheus-adapter's ``rate(claude_agent_requests_total[2m])``: finished runs over 2 min."""
MAX_OVERRUN_S = 86_400.0


@dataclass(frozen=True, slots=True)
class Sample:
    """The state at the first tick of one minute; ``arrivals`` counts that minute's arrivals."""

    t: float
    arrivals: int
    queued: int
    running: int
    replicas: int  # the desired count in force
    ready: int  # pods serving new runs


@dataclass(frozen=True, slots=True)
class SimResult:
    """What one policy did over one trace; the fields after ``series`` are for inspection."""

    policy: str
    trace: str
    runs: int
    finished: int
    unfinished: int
    wait_p50_s: float
    wait_p95_s: float
    wait_p99_s: float
    wait_max_s: float
    wait_target_s: float
    minutes_over_target: int  # minutes in which some queued run had waited > wait_target_s
    worker_hours: float
    scale_events: int  # decisions that changed the replica count
    flaps: int  # direction changes less than flap_window_s after the previous change
    flap_window_s: float
    peak_replicas: int
    end_s: float
    series: tuple[Sample, ...] = field(repr=False)
    waits: tuple[float, ...] = field(repr=False)  # per run, in trace order; inf if never started
    events: tuple[Decision, ...] = field(repr=False)  # the decisions that changed the count

    def summary(self) -> dict[str, Any]:
        """The scalar results, JSON-ready (no series, waits or events)."""
        skip = {"series", "waits", "events"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``: an observed value, never an
    interpolation, so a hand-computed expectation is exact; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


class _Pod:
    __slots__ = ("created_at", "draining", "ends", "gone_at", "id", "last_end", "ready_at")

    def __init__(self, pod_id: int, created_at: float, ready_at: float) -> None:
        self.id = pod_id
        self.created_at = created_at
        self.ready_at = ready_at
        self.draining = False
        self.gone_at: float | None = None
        self.ends: list[tuple[float, float]] = []  # heap of (end, arrival) of its runs
        self.last_end = created_at

    def ready(self, t: float) -> bool:
        return self.ready_at <= t


class _World:
    """The mutable state of one simulation: pods, queue, and the bookkeeping for metrics."""

    def __init__(self, trace: Trace, config: ScalerConfig, replicas: int, pod_start_s: float):
        self.trace = trace
        self.config = config
        self.pod_start_s = pod_start_s
        self.pods: list[_Pod] = []
        self.gone: list[_Pod] = []
        self.queue: deque[int] = deque()
        self.waits = [math.inf] * len(trace.runs)
        self.finished = 0
        self.next_arrival = 0
        self.recent_arrivals: deque[float] = deque()
        self.recent_latencies: deque[tuple[float, float]] = deque()  # (end, wait + duration)
        self.recent_finishes: deque[float] = deque()  # end times, for requests_per_s
        self.desired = replicas
        for _ in range(replicas):
            self.pods.append(_Pod(len(self.pods) + len(self.gone), 0.0, 0.0))

    # --- the tick -----------------------------------------------------------------------------

    def finish(self, t: float) -> None:
        for pod in self.pods:
            while pod.ends and pod.ends[0][0] <= t:
                end, arrival = heapq.heappop(pod.ends)
                pod.last_end = max(pod.last_end, end)
                self.recent_latencies.append((end, end - arrival))
                self.recent_finishes.append(end)
                self.finished += 1
            if pod.draining and not pod.ends:
                self._leave(pod, pod.last_end)
        self.pods = [p for p in self.pods if p.gone_at is None]

    def admit(self, t: float) -> None:
        runs = self.trace.runs
        while self.next_arrival < len(runs) and runs[self.next_arrival].arrival_s <= t:
            self.queue.append(self.next_arrival)
            self.recent_arrivals.append(runs[self.next_arrival].arrival_s)
            self.next_arrival += 1

    def dispatch(self, t: float) -> None:
        concurrency = self.config.concurrency_per_worker
        serving = [p for p in self.pods if not p.draining and p.ready(t)]
        while self.queue and serving:
            pod = min(serving, key=lambda p: (len(p.ends), p.id))
            if len(pod.ends) >= concurrency:
                return
            index = self.queue.popleft()
            run = self.trace.runs[index]
            self.waits[index] = t - run.arrival_s
            heapq.heappush(pod.ends, (t + run.duration_s, run.arrival_s))

    def apply(self, desired: int, t: float) -> None:
        """Create or drain pods so that ``desired`` pods are (or will be) taking runs."""
        self.desired = max(0, desired)
        active = [p for p in self.pods if not p.draining]
        for _ in range(self.desired - len(active)):
            pod_id = len(self.pods) + len(self.gone)
            self.pods.append(_Pod(pod_id, t, t + self.pod_start_s))
        excess = len(active) - self.desired
        if excess <= 0:
            return
        order = sorted(active, key=lambda p: (p.ready(t), len(p.ends), -p.id))
        for pod in order[:excess]:
            pod.draining = True
            if not pod.ends:
                self._leave(pod, t)
        self.pods = [p for p in self.pods if p.gone_at is None]

    def _leave(self, pod: _Pod, at: float) -> None:
        pod.gone_at = at
        self.gone.append(pod)

    # --- what the policy sees -----------------------------------------------------------------

    def running(self) -> int:
        return sum(len(p.ends) for p in self.pods)

    def ready_count(self, t: float) -> int:
        return sum(1 for p in self.pods if not p.draining and p.ready(t))

    def observe(self, t: float, memory_limit_bytes: float) -> Observation:
        while self.recent_arrivals and self.recent_arrivals[0] <= t - ARRIVALS_WINDOW_S:
            self.recent_arrivals.popleft()
        while self.recent_finishes and self.recent_finishes[0] <= t - REQUESTS_WINDOW_S:
            self.recent_finishes.popleft()  # appended per pod per tick: nearly in end order
        cutoff = t - REQUESTS_WINDOW_S
        finished_recently = sum(1 for end in self.recent_finishes if end > cutoff)
        running = self.running()
        serving = sum(1 for p in self.pods if p.ready(t))  # draining pods still report metrics
        capacity = serving * self.config.concurrency_per_worker
        busy = running / capacity if capacity else None
        memory_ratio = None if busy is None else 0.2 + 0.3 * busy
        oldest = t - self.trace.runs[self.queue[0]].arrival_s if self.queue else 0.0
        return Observation(
            at=t,
            replicas=self.desired,
            ready=self.ready_count(t),
            queued=len(self.queue),
            running=running,
            oldest_queued_s=oldest,
            arrivals_per_s=len(self.recent_arrivals) / ARRIVALS_WINDOW_S,
            cpu_ratio=None if busy is None else busy * 0.3,
            memory_ratio=memory_ratio,
            p95_latency_s=self._p95_latency(t),
            error_rate=0.0,
            requests_per_s=finished_recently / REQUESTS_WINDOW_S,
            memory_bytes=None if memory_ratio is None else memory_ratio * memory_limit_bytes,
            provider_failing=False,
        )

    def _p95_latency(self, t: float) -> float | None:
        while self.recent_latencies and self.recent_latencies[0][0] <= t - LATENCY_WINDOW_S:
            self.recent_latencies.popleft()  # appended as runs finish, so in end order per tick
        window = [lat for end, lat in self.recent_latencies if end > t - LATENCY_WINDOW_S]
        return percentile(window, 95) if window else None

    def done(self) -> bool:
        return self.next_arrival == len(self.trace.runs) and not self.queue and not self.running()


def _minutes_over(trace: Trace, waits: Sequence[float], target_s: float, end_s: float) -> int:
    """Minutes ``m`` ([60m, 60m+60)) in which some run was queued past ``target_s``: the run's
    over-target interval (arrival + target, start) overlaps the minute."""
    minutes: set[int] = set()
    for run, wait in zip(trace.runs, waits, strict=True):
        if wait <= target_s:
            continue
        late_from = run.arrival_s + target_s
        started = min(run.arrival_s + wait, end_s)
        minutes.update(range(math.floor(late_from / 60.0), math.ceil(started / 60.0)))
    return len(minutes)


def _flaps(events: Sequence[Decision], window_s: float) -> int:
    count = 0
    for before, after in itertools.pairwise(events):
        if before.direction != after.direction and after.at - before.at < window_s:
            count += 1
    return count


def simulate(
    trace: Trace,
    policy: Policy,
    config: ScalerConfig,
    *,
    step_s: float = 5.0,
    pod_start_s: float = 60.0,
    decide_every_s: float | None = None,
    start_replicas: int | None = None,
    wait_target_s: float = 60.0,
    flap_window_s: float | None = None,
    until_s: float | None = None,
    memory_limit_bytes: float = 2 * 1024**3,
) -> SimResult:
    """Replay ``trace`` through ``policy`` and measure waits, worker-hours and scale events.

    ``decide_every_s`` defaults to the policy's own ``decide_every_s`` or ``interval_s``
    attribute if it has one (the guide's pressure score runs every 30 s), else 15 s.  Waits are
    resolved to the tick: a run arriving between ticks waits until the next one.  ``start_replicas`` defaults to
    ``config.min_replicas``; those pods are ready at t = 0.  ``flap_window_s`` defaults to
    ``config.scale_down_stabilization_s``.  ``until_s`` (default: the trace's span) is the least
    simulated time, so policies compared on one trace pay for the same quiet tail.
    """
    config.validate()
    if not 0 < step_s <= 60:
        raise ValueError(f"step_s must be in (0, 60], got {step_s}")
    if pod_start_s < 0:
        raise ValueError(f"pod_start_s must be >= 0, got {pod_start_s}")
    every = decide_every_s
    if every is None:
        own = getattr(policy, "decide_every_s", None) or getattr(policy, "interval_s", None)
        every = float(own) if own else DEFAULT_DECIDE_EVERY_S
    if every <= 0:
        raise ValueError(f"decide_every_s must be > 0, got {every}")
    replicas = config.min_replicas if start_replicas is None else start_replicas
    if replicas < 0:
        raise ValueError(f"start_replicas must be >= 0, got {replicas}")
    window = config.scale_down_stabilization_s if flap_window_s is None else flap_window_s
    horizon = trace.span_s if until_s is None else until_s

    world = _World(trace, config, replicas, pod_start_s)
    per_minute = [0] * (math.ceil((horizon + MAX_OVERRUN_S) / 60.0) + 2)
    for run in trace.runs:
        per_minute[min(int(run.arrival_s // 60), len(per_minute) - 1)] += 1
    series: list[Sample] = []
    events: list[Decision] = []
    peak = replicas
    next_decision = 0.0
    tick = 0
    while True:
        t = tick * step_s
        world.finish(t)
        world.admit(t)
        world.dispatch(t)
        if t >= next_decision:
            decision = policy.decide(world.observe(t, memory_limit_bytes))
            if decision.desired != world.desired:
                events.append(decision)
                world.apply(decision.desired, t)
                world.dispatch(t)  # with pod_start_s = 0 the new pods serve at once
                peak = max(peak, world.desired)
            next_decision = t + every
        minute = int(t // 60)
        if not series or int(series[-1].t // 60) != minute:
            series.append(
                Sample(
                    t=t,
                    arrivals=per_minute[minute],
                    queued=len(world.queue),
                    running=world.running(),
                    replicas=world.desired,
                    ready=world.ready_count(t),
                )
            )
        if (t >= horizon and world.done()) or t >= horizon + MAX_OVERRUN_S:
            break
        tick += 1

    end = t
    hours = sum((p.gone_at or 0.0) - p.created_at for p in world.gone)
    hours += sum(end - p.created_at for p in world.pods)
    waits = world.waits
    started = [w for w in waits if math.isfinite(w)]
    return SimResult(
        policy=policy.name,
        trace=trace.name,
        runs=len(trace.runs),
        finished=world.finished,
        unfinished=len(trace.runs) - world.finished,
        wait_p50_s=percentile(started, 50),
        wait_p95_s=percentile(started, 95),
        wait_p99_s=percentile(started, 99),
        wait_max_s=max(started, default=0.0),
        wait_target_s=wait_target_s,
        minutes_over_target=_minutes_over(trace, waits, wait_target_s, end),
        worker_hours=hours / 3600.0,
        scale_events=len(events),
        flaps=_flaps(events, window),
        flap_window_s=window,
        peak_replicas=peak,
        end_s=end,
        series=tuple(series),
        waits=tuple(waits),
        events=tuple(events),
    )
