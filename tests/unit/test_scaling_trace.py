"""The load-trace format (CSV, JSON, gzip), its validation, and the two seeded generators."""

from __future__ import annotations

import gzip
import itertools
import statistics
from pathlib import Path

import pytest

from quarterdeck.scaling.trace import (
    DEFAULT_SAMPLE,
    SAMPLES,
    SAMPLES_DIR,
    Run,
    Trace,
    coding_agent_day,
    dump_csv,
    dump_json,
    load_sample_or_file,
    load_trace,
    overload_day,
    parse_csv,
    parse_json,
    sample_path,
    save_trace,
    synthetic_day,
)

SAMPLE = Trace(
    name="tiny",
    runs=(
        Run(0.0, 180.0, "acme", "interactive"),
        Run(12.5, 95.25, None, "ci"),
        Run(12.5, 0.001, "globex", None),
        Run(3600.0, 7200.0),
    ),
)


def between(trace: Trace, start_h: float, end_h: float) -> int:
    return sum(1 for r in trace.runs if start_h * 3600 <= r.arrival_s < end_h * 3600)


def test_csv_round_trips_every_field() -> None:
    assert parse_csv(dump_csv(SAMPLE), "tiny") == SAMPLE


def test_json_round_trips_and_keeps_its_name() -> None:
    assert parse_json(dump_json(SAMPLE), "ignored") == SAMPLE


@pytest.mark.parametrize("file_name", ["t.csv", "t.json", "t.csv.gz", "t.json.gz"])
def test_files_round_trip_by_suffix(tmp_path: Path, file_name: str) -> None:
    path = save_trace(SAMPLE, tmp_path / file_name)
    assert load_trace(path).runs == SAMPLE.runs
    if file_name.endswith(".gz"):
        gzip.decompress(path.read_bytes())  # really gzipped


def test_csv_columns_in_any_order_labels_optional_rows_sorted() -> None:
    trace = parse_csv("duration_s,arrival_s\n5,20\n7,3\n", "x")
    assert trace.runs == (Run(3.0, 7.0), Run(20.0, 5.0))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("arrival_s,duration_s\n1,2\n-1,2\n", r"row 2: arrival_s must be >= 0"),
        ("arrival_s,duration_s\n1,abc\n", r"row 1: duration_s must be a number"),
        ("arrival_s,duration_s\n1,2\n2,3\n3,nan\n", r"row 3: duration_s must be finite"),
        ("arrival_s,duration_s\n1,\n", r"row 1: duration_s must be a number"),
        ("arrival_s,duration_s\n1,2,3\n", r"row 1: more values"),
        ("arrival_s,tenant\n1,a\n", r"header must name duration_s"),
    ],
)
def test_bad_csv_rows_are_refused_with_the_row(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_csv(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"runs": [{"arrival_s": 1, "duration_s": 2}, {"arrival_s": 1}]}', "row 2: duration_s"),
        ('{"runs": [{"arrival_s": "x", "duration_s": 2}]}', "row 1: arrival_s must be a number"),
        ('{"runs": [{"arrival_s": true, "duration_s": 2}]}', "row 1: arrival_s must be a number"),
        ('{"runs": [{"arrival_s": 1, "duration_s": -2}]}', "row 1: duration_s must be >= 0"),
        ('{"runs": [{"arrival_s": 1, "duration_s": 2, "tenant": 5}]}', "row 1: tenant"),
        ('{"runs": [7]}', "row 1: a run must be an object"),
        ('{"name": "x"}', '"runs" list'),
    ],
)
def test_bad_json_rows_are_refused_with_the_row(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_json(text)


def test_unknown_suffix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.csv, \.json"):
        save_trace(SAMPLE, tmp_path / "t.txt")


def small_day(seed: int) -> Trace:
    return synthetic_day(seed, night_per_min=1.0, peak_per_min=8.0, bursts=((10.5, 300, 120.0),))


def test_synthetic_day_is_deterministic_per_seed() -> None:
    assert small_day(7) == small_day(7)
    assert small_day(7).runs != small_day(8).runs


def test_synthetic_day_has_its_burst_and_a_quiet_night() -> None:
    trace = small_day(7)
    assert between(trace, 2, 5) * 3 < between(trace, 13, 16)  # night vs afternoon, same length
    burst = [r for r in trace.runs if 10.5 * 3600 <= r.arrival_s <= 10.5 * 3600 + 120]
    assert sum(1 for r in burst if r.kind == "ci") == 300
    assert len(burst) > 10 * between(trace, 10.4, 10.4 + 120 / 3600)  # far above the minutes before
    median = statistics.median(r.duration_s for r in trace.runs)
    assert 120 < median < 260  # "a few minutes"
    assert all(0 <= r.arrival_s < 86_400 for r in trace.runs)


def small_agents(seed: int) -> Trace:
    return coding_agent_day(seed, night_sessions_per_h=1.0, peak_sessions_per_h=30.0)


def test_coding_agent_day_is_deterministic_sessions_in_sequence_heavy_tail() -> None:
    trace = small_agents(3)
    assert trace == small_agents(3)
    assert trace.runs != small_agents(4).runs
    durations = sorted(r.duration_s for r in trace.runs)
    share_short = sum(1 for d in durations if 60 <= d <= 300) / len(durations)
    assert share_short > 0.6  # most 1-5 min
    assert sum(1 for d in durations if d >= 1800) >= 5  # some 30+ min
    assert between(trace, 1, 5) * 4 < between(trace, 12, 16)
    # Sessions: each tenant submits many runs, several of them in one burst (the fan-out).
    assert len(trace.runs) > 4 * len({r.tenant for r in trace.runs})
    assert any(
        a.arrival_s == b.arrival_s and a.tenant == b.tenant
        for a, b in itertools.pairwise(trace.runs)
    )


@pytest.mark.parametrize("name", list(SAMPLES))
def test_shipped_samples_are_small_and_in_the_format(name: str) -> None:
    path = sample_path(name)
    assert path.parent == SAMPLES_DIR and path.name == f"{name}.csv.gz"
    assert path.stat().st_size <= 300 * 1024
    head = gzip.decompress(path.read_bytes()).decode().splitlines()[:200]
    assert head[0] == "arrival_s,duration_s,tenant,kind"
    assert len(parse_csv("\n".join(head)).runs) == 199


def in_flight_at(trace: Trace, hour: float) -> int:
    """Runs in flight at ``hour`` if none waited (what the pool must hold)."""
    t = hour * 3600
    return sum(1 for r in trace.runs if r.arrival_s <= t < r.arrival_s + r.duration_s)


def test_the_sample_day_is_sized_to_the_guides_deployment() -> None:
    day = load_sample_or_file(DEFAULT_SAMPLE)
    assert DEFAULT_SAMPLE == "synthetic-day" and day.name == "synthetic-day"
    # 50 slots a worker: the night fits in one, the 15:00 peak needs about 6 (of 3..20).
    assert max(in_flight_at(day, h) for h in (1, 3, 4, 5)) <= 50
    assert 180 <= in_flight_at(day, 15) <= 300
    # The 10:30 CI wave: several times the minutes before it.
    assert between(day, 10.5, 10.5 + 4 / 60) > 4 * between(day, 10.4, 10.4 + 4 / 60)


def test_overload_day_is_the_old_sample_and_overloads_three_pods() -> None:
    heavy = load_sample_or_file("overload-day")
    assert heavy.runs == overload_day(19).runs and len(heavy.runs) == 49_132
    assert in_flight_at(heavy, 12) > 150  # more than the guide's 3 pods hold, from noon


def test_load_sample_or_file_takes_names_and_paths(tmp_path: Path) -> None:
    path = save_trace(SAMPLE, tmp_path / "mine.csv")
    assert load_sample_or_file(path).runs == SAMPLE.runs
    assert load_sample_or_file(str(path)).name == "mine"
    with pytest.raises(FileNotFoundError, match="coding-agent-day"):
        load_sample_or_file(tmp_path / "absent.csv")
    with pytest.raises(ValueError, match="no sample trace"):
        sample_path("absent")
