"""Traces for the scaling simulator: the generators, the shipped samples, and (re-exported from
:mod:`quarterdeck.scaling.trace_format`, where the format is described) the reader and writer.

Why two modules: the format is a stable contract (files on disk, ``--trace``); the generators
are tuned days that change with the goal. One import path (this module) serves both.

The generators (:func:`synthetic_day`, :func:`coding_agent_day`, :func:`overload_day`) are
deterministic: each draws only from its own ``random.Random(seed)``, in a fixed order, so one
seed always gives the same trace.  The sample traces shipped in ``scaling/traces/`` (see its
README) were written by :func:`write_samples`; :data:`SAMPLES` names them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from pathlib import Path

from quarterdeck.scaling.trace_format import (
    Run,
    Trace,
    dump_csv,
    dump_json,
    load_trace,
    parse_csv,
    parse_json,
    save_trace,
    sorted_trace,
)

__all__ = [
    "DEFAULT_SAMPLE",
    "SAMPLES",
    "SAMPLES_DIR",
    "Run",
    "Trace",
    "coding_agent_day",
    "dump_csv",
    "dump_json",
    "load_sample_or_file",
    "load_trace",
    "overload_day",
    "parse_csv",
    "parse_json",
    "sample_path",
    "save_trace",
    "synthetic_day",
    "write_samples",
]

SAMPLES_DIR = Path(__file__).parent / "traces"
DAY_S = 86_400.0


# --- generators -------------------------------------------------------------------------------


def _diurnal(
    t: float, night: float, peak: float, peak_hour: float, sharpness: float = 2.0
) -> float:
    """A rate that is ``night`` around 12 h before ``peak_hour`` and ``peak`` at it.

    A raised cosine over the day, sharpened (``** sharpness``) so nights are long and quiet and
    the working day is a hump, as request rates of office-hours tools look.  The day's mean rate
    is ``night + (peak - night) * m`` with ``m`` = 3/8 for sharpness 2 and 35/128 for 4.
    """
    phase = 2 * math.pi * ((t / 3600.0 - peak_hour) / 24.0)
    shape = math.pow((1 + math.cos(phase)) / 2, sharpness)
    return night + (peak - night) * shape


def _poisson_arrivals(
    rng: random.Random, rate_at: Callable[[float], float], peak_rate: float, end_s: float
) -> list[float]:
    """Arrival times of a Poisson process with a time-varying rate, by thinning (Lewis-Shedler):
    candidates at ``peak_rate`` (an upper bound of ``rate_at``), each kept with probability
    ``rate_at(t) / peak_rate``."""
    times: list[float] = []
    t = 0.0
    while True:
        t += rng.expovariate(peak_rate)
        if t >= end_s:
            return times
        if rng.random() * peak_rate < rate_at(t):
            times.append(t)


def synthetic_day(
    seed: int = 19,
    *,
    night_per_min: float = 2.0,
    peak_per_min: float = 60.0,
    peak_hour: float = 15.0,
    bursts: Iterable[tuple[float, int, float]] = (
        (2.0, 150, 180.0),
        (10.5, 200, 240.0),
        (13.75, 200, 240.0),
        (16.25, 200, 240.0),
    ),
    median_duration_s: float = 180.0,
    sigma: float = 0.6,
    sharpness: float = 6.0,
    name: str = "synthetic-day",
) -> Trace:
    """A 24 h trace: a diurnal Poisson stream plus sudden CI waves.

    How: interactive runs arrive as a Poisson process whose rate follows :func:`_diurnal`
    (``night_per_min`` at 03:00, ``peak_per_min`` at ``peak_hour`` = 15:00, the hump's width set
    by ``sharpness``), sampled by thinning.  Each burst ``(hour, count, spread_s)`` adds ``count``
    runs of kind ``ci`` uniformly within ``spread_s`` seconds from ``hour``.  Durations are
    lognormal with median ``median_duration_s`` (3 min) and shape ``sigma`` (mean 3.6 min; most
    runs take 1 to 8 minutes).  All draws come from ``random.Random(seed)``, in that order.

    The defaults are the sample day, sized to the deployment the guide scales (3..20 workers of
    50 slots): about 7 runs in flight at night (one worker), about 220 at the 15:00 peak (6
    workers at a 70-80 % target), and four CI waves — a nightly batch of 150 runs in 3 minutes
    at 02:00 (some 50 times the night rate) and 200 runs in 4 minutes at 10:30, 13:45 and 16:15
    (6x the morning rate, about twice the afternoon's).  :func:`overload_day` is the heavier
    day this generator used to default to.
    """
    rng = random.Random(seed)
    mu = math.log(median_duration_s)

    def rate_at(t: float) -> float:
        return _diurnal(t, night_per_min, peak_per_min, peak_hour, sharpness) / 60.0

    runs = [
        Run(t, rng.lognormvariate(mu, sigma), kind="interactive")
        for t in _poisson_arrivals(rng, rate_at, peak_per_min / 60.0, DAY_S)
    ]
    for hour, count, spread_s in bursts:
        start = hour * 3600.0
        for _ in range(count):
            runs.append(
                Run(start + rng.uniform(0, spread_s), rng.lognormvariate(mu, sigma), kind="ci")
            )
    return sorted_trace(f"{name}-{seed}", _rounded(runs))


def overload_day(seed: int = 19) -> Trace:
    """The first sample day, kept as a second case: load the guide's 3 pods cannot carry.

    A wide hump (sharpness 2) from 6 runs a minute at night to 80 at 15:00, about 120 runs in
    flight on average and 300 at the peak, plus two CI waves of 300 runs in 2 minutes.  The
    guide's HPA never leaves its 3 pods (150 slots), so it runs them near 100 % from mid-morning
    until its backlog drains in the evening: its worker-hours are the floor any policy that
    serves the load must pay, and the goal's "no more worker-hours" clause is out of reach for
    every policy by construction.  It shows what a policy does under sustained overload.
    """
    return synthetic_day(
        seed,
        night_per_min=6.0,
        peak_per_min=80.0,
        bursts=((10.5, 300, 120.0), (16.25, 300, 120.0)),
        sharpness=2.0,
        name="overload-day",
    )


def _agent_duration(rng: random.Random) -> float:
    """Heavy-tailed: 85 % lognormal around 2.5 min (most 1-5 min), 15 % Pareto from 20 min
    (shape 1.5: a few exceed an hour), capped at 4 h."""
    if rng.random() < 0.85:
        return min(rng.lognormvariate(math.log(150.0), 0.45), 4 * 3600.0)
    return min(1200.0 * rng.paretovariate(1.5), 4 * 3600.0)


def coding_agent_day(
    seed: int = 19,
    *,
    night_sessions_per_h: float = 4.0,
    peak_sessions_per_h: float = 150.0,
    peak_hour: float = 14.0,
    mean_turns: float = 6.0,
    tenants: int = 12,
    sharpness: float = 6.0,
    name: str = "coding-agent-day",
) -> Trace:
    """24 h of coding-agent sessions: each session submits many runs in sequence.

    How: sessions start as a Poisson process whose rate follows :func:`_diurnal` (few at night,
    ``peak_sessions_per_h`` at ``peak_hour``).  A session belongs to one of ``tenants`` tenants and
    has a geometric number of turns (mean ``mean_turns``); each turn submits a burst of 1-3 runs
    at once (the agent fanning out), their durations heavy-tailed (:func:`_agent_duration`); the
    next turn comes after the turn's longest run plus a think time (lognormal, median 90 s).  The
    trace is open-loop: a turn's arrival assumes its previous runs never waited (a replay cannot
    know the wait).  Sessions still running at midnight are cut there.  All draws come from
    ``random.Random(seed)``, session by session, in order.

    The defaults are the sample day, sized like :func:`synthetic_day`'s: one worker's worth of
    runs at night, about 6 workers at the 14:00 peak.  The long tail matters: a run of hours
    pins its worker, so a scale-down drains slowly and the pool pays for it.  (Until issue 19's
    resizing the defaults were 6 sessions/h at night, 240 at 14:00, sharpness 2: a day that kept
    the guide's 3 pods overloaded from morning to night.)
    """
    rng = random.Random(seed)

    def rate_at(t: float) -> float:
        return _diurnal(t, night_sessions_per_h, peak_sessions_per_h, peak_hour, sharpness) / 3600.0

    runs: list[Run] = []
    starts = _poisson_arrivals(rng, rate_at, peak_sessions_per_h / 3600.0, DAY_S)
    for start in starts:
        tenant = f"t{rng.randrange(tenants):02d}"
        t = start
        turns = 1
        while rng.random() > 1.0 / mean_turns:
            turns += 1
        for _ in range(turns):
            if t >= DAY_S:
                break
            fan_out = rng.choice((1, 1, 1, 1, 2, 2, 3))
            durations = [_agent_duration(rng) for _ in range(fan_out)]
            runs.extend(Run(t, d, tenant=tenant, kind="agent") for d in durations)
            t += max(durations) + rng.lognormvariate(math.log(90.0), 0.8)
    return sorted_trace(f"{name}-{seed}", _rounded(runs))


def _rounded(runs: Iterable[Run]) -> list[Run]:
    """Times to 0.1 s: keeps the shipped files small, far below what a 1-5 s step resolves."""
    return [
        Run(round(r.arrival_s, 1), max(round(r.duration_s, 1), 0.1), r.tenant, r.kind) for r in runs
    ]


SampleFactory = Callable[[int], Trace]
SAMPLES: dict[str, SampleFactory] = {
    "synthetic-day": synthetic_day,
    "coding-agent-day": coding_agent_day,
    "overload-day": overload_day,
}
"""The shipped samples by name (file ``SAMPLES_DIR / f"{name}.csv.gz"``), the default first."""
DEFAULT_SAMPLE = "synthetic-day"


def sample_path(name: str) -> Path:
    """The shipped file of sample ``name``; ``ValueError`` listing the samples if unknown."""
    if name not in SAMPLES:
        raise ValueError(f"no sample trace {name!r}; the samples are {', '.join(SAMPLES)}")
    return SAMPLES_DIR / f"{name}.csv.gz"


def load_sample_or_file(name_or_path: str | Path) -> Trace:
    """A sample by name (``coding-agent-day``) or a trace file by path: what ``--trace`` takes.

    A name wins over a file of that name in the working directory; write ``./name`` for that.
    ``FileNotFoundError`` when neither exists, ``ValueError`` for a malformed file.
    """
    text = str(name_or_path)
    if text in SAMPLES:
        return load_trace(sample_path(text))
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no trace file {text!r}; give a CSV or JSON file or one of {', '.join(SAMPLES)}"
        )
    return load_trace(path)


def write_samples(directory: Path = SAMPLES_DIR, seed: int = 19) -> list[Path]:
    """Regenerate the shipped sample traces (gzipped CSV, deterministic bytes): every entry of
    :data:`SAMPLES` with its generator's defaults and ``seed``."""
    directory.mkdir(parents=True, exist_ok=True)
    return [save_trace(make(seed), directory / f"{name}.csv.gz") for name, make in SAMPLES.items()]
