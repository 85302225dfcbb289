"""The dependency-free helpers in ``quarterdeck.kit``: ids, durations, latency, backoff, clocks."""

from __future__ import annotations

import random
import statistics
from datetime import UTC, datetime, timedelta

import pytest

from quarterdeck.exceptions import ValidationFailed
from quarterdeck.kit.backoff import GUIDE_SCHEDULE, scheduled_delay
from quarterdeck.kit.clock import FakeClock, SystemClock, utcnow
from quarterdeck.kit.durations import parse_duration, positive_duration
from quarterdeck.kit.ids import is_id, new_id, ulid
from quarterdeck.kit.latency import LatencyProfile, parse_latency

CROCKFORD = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def _decode_ms(value: str) -> int:
    """The 48-bit millisecond timestamp held in a ULID's first 10 characters."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    n = 0
    for ch in value:
        n = n * 32 + alphabet.index(ch)
    return n >> 80


# -- ids --------------------------------------------------------------------------------------


def test_ulid_is_26_crockford_base32_characters():
    value = ulid()
    assert len(value) == 26
    assert set(value) <= CROCKFORD


def test_ulid_encodes_its_millisecond_timestamp():
    assert _decode_ms(ulid(now_ms=1_767_225_600_000)) == 1_767_225_600_000
    assert ulid(now_ms=0).startswith("0000000000")
    assert ulid(now_ms=2**48 - 1).startswith("7ZZZZZZZZZ")


def test_ulids_sort_by_creation_time():
    times = [0, 1, 31, 32, 1_000, 1_700_000_000_000, 1_767_225_600_000, 2**48 - 1]
    ids = [ulid(now_ms=ms) for ms in times]
    shuffled = ids[:]
    random.Random(3).shuffle(shuffled)
    assert sorted(shuffled) == ids


def test_ulids_from_the_same_millisecond_differ():
    ids = {ulid(now_ms=1_767_225_600_000) for _ in range(200)}
    assert len(ids) == 200


def test_ulid_without_a_time_uses_the_current_time():
    before = int(datetime.now(UTC).timestamp() * 1000)
    value = ulid()
    after = int(datetime.now(UTC).timestamp() * 1000)
    assert before <= _decode_ms(value) <= after


def test_new_id_has_prefix_and_ulid():
    value = new_id("run")
    prefix, _, tail = value.partition("_")
    assert prefix == "run"
    assert len(tail) == 26 and set(tail) <= CROCKFORD
    assert is_id(value, "run")


def test_new_ids_are_unique():
    assert len({new_id("run") for _ in range(500)}) == 500


@pytest.mark.parametrize(
    "value",
    [
        "run_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "run_00000000000000000000000000",
        "run_7ZZZZZZZZZZZZZZZZZZZZZZZZZ",
    ],
)
def test_is_id_accepts_well_formed_ids(value: str):
    assert is_id(value, "run")


@pytest.mark.parametrize(
    ("value", "prefix"),
    [
        ("run_01ARZ3NDEKTSV4RRFFQ69G5FAV", "job"),  # wrong prefix
        ("01ARZ3NDEKTSV4RRFFQ69G5FAV", "run"),  # no prefix
        ("run01ARZ3NDEKTSV4RRFFQ69G5FAV", "run"),  # no separator
        ("run_01arz3ndektsv4rrffq69g5fav", "run"),  # lower case
        ("run_01ARZ3NDEKTSV4RRFFQ69G5FA", "run"),  # 25 characters
        ("run_01ARZ3NDEKTSV4RRFFQ69G5FAVX", "run"),  # 27 characters
        ("run_01ARZ3NDEKTSV4RRFFQ69G5FAI", "run"),  # I is not Crockford
        ("run_01ARZ3NDEKTSV4RRFFQ69G5FAL", "run"),  # L is not Crockford
        ("run_01ARZ3NDEKTSV4RRFFQ69G5FAO", "run"),  # O is not Crockford
        ("run_01ARZ3NDEKTSV4RRFFQ69G5FAU", "run"),  # U is not Crockford
        ("run_", "run"),
        ("", "run"),
        ("run_01ARZ3NDEKTSV4RRFFQ69G5FAV\n", "run"),
        ("RUN_01ARZ3NDEKTSV4RRFFQ69G5FAV", "run"),
        ("run_../../etc/passwd", "run"),
    ],
)
def test_is_id_rejects_malformed_ids(value: str, prefix: str):
    assert not is_id(value, prefix)


# -- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("250ms", 0.25),
        ("2s", 2.0),
        ("1.5s", 1.5),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("0", 0.0),
        ("45", 45.0),
        ("  3 s ", 3.0),
        (7, 7.0),
        (0.25, 0.25),
    ],
)
def test_parse_duration(text: str | float, seconds: float):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "-1s", "5 minutes", "1e3", "2x", "s", "1.s", "ms5"])
def test_parse_duration_rejects_garbage_with_a_hint(text: str):
    with pytest.raises(ValueError, match="500ms"):
        parse_duration(text)


@pytest.mark.parametrize("value", [-1, -0.5])
def test_parse_duration_rejects_negative_numbers(value: float):
    with pytest.raises(ValueError, match="negative"):
        parse_duration(value)


# -- latency profiles -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "median"),
    [("0", 0.0), ("2s", 2.0), ("250ms", 0.25), (" 1m ", 60.0), (3, 3.0), (0.5, 0.5)],
)
def test_parse_fixed_latency(text: str | float, median: float):
    assert parse_latency(text) == LatencyProfile("fixed", pytest.approx(median))  # type: ignore[arg-type]


def test_parse_lognormal_latency():
    profile = parse_latency("lognormal:1.5s:0.6")
    assert profile == LatencyProfile("lognormal", 1.5, 0.6)
    assert parse_latency("lognormal:200ms:0").median == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lognormal:1s", "lognormal:MEDIAN:SIGMA"),
        ("lognormal:1s:0.5:9", "lognormal:MEDIAN:SIGMA"),
        ("lognormal:1s:wide", "not a number"),
        ("lognormal:1s:-0.5", "negative"),
        ("lognormal:fast:0.5", "not a duration"),
        ("fast", "not a duration"),
        ("-2s", "not a duration"),
    ],
)
def test_parse_latency_rejects_bad_profiles(text: str, message: str):
    with pytest.raises(ValueError, match=message):
        parse_latency(text)


def test_parse_latency_rejects_negative_numbers():
    with pytest.raises(ValueError):
        parse_latency(-1)


@pytest.mark.parametrize("text", ["0", "2s", "250ms", "lognormal:1.5s:0.6", "lognormal:2s:0"])
def test_latency_profile_str_round_trips(text: str):
    profile = parse_latency(text)
    assert parse_latency(str(profile)) == profile


def test_fixed_latency_sample_is_the_median_and_draws_nothing():
    rng = random.Random(1)
    state = rng.getstate()
    assert parse_latency("2s").sample(rng) == 2.0
    assert rng.getstate() == state


def test_zero_median_lognormal_samples_zero():
    assert LatencyProfile("lognormal", 0.0, 0.6).sample(random.Random(1)) == 0.0


def test_lognormal_sample_is_deterministic_for_a_seed():
    profile = parse_latency("lognormal:1.5s:0.6")
    first = [profile.sample(random.Random(42)) for _ in range(3)]
    assert first[0] == first[1] == first[2]
    a, b = random.Random(7), random.Random(7)
    assert [profile.sample(a) for _ in range(50)] == [profile.sample(b) for _ in range(50)]


def test_lognormal_samples_are_positive_and_centred_on_the_median():
    profile = parse_latency("lognormal:1.5s:0.6")
    rng = random.Random(2024)
    samples = [profile.sample(rng) for _ in range(4001)]
    assert min(samples) > 0
    assert len(set(samples)) > 100  # actually spread out
    assert statistics.median(samples) == pytest.approx(1.5, rel=0.1)


def test_lognormal_with_zero_sigma_is_the_median():
    profile = parse_latency("lognormal:1.5s:0")
    assert profile.sample(random.Random(5)) == pytest.approx(1.5)


# -- backoff ----------------------------------------------------------------------------------


def test_guide_schedule():
    assert GUIDE_SCHEDULE == (1.0, 5.0, 15.0, 30.0)


@pytest.mark.parametrize(
    ("attempt", "delay"),
    [(1, 1.0), (2, 5.0), (3, 15.0), (4, 30.0), (5, 30.0), (6, 30.0), (100, 30.0)],
)
def test_scheduled_delay_follows_the_guide_then_repeats_the_last(attempt: int, delay: float):
    assert scheduled_delay(attempt, jitter=0) == delay


def test_scheduled_delay_with_a_custom_schedule():
    assert [scheduled_delay(n, (2.0, 4.0), jitter=0) for n in (1, 2, 3)] == [2.0, 4.0, 4.0]


def test_empty_schedule_means_no_delay():
    assert scheduled_delay(3, (), jitter=0.5) == 0.0


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempt_below_one_raises(attempt: int):
    with pytest.raises(ValueError):
        scheduled_delay(attempt)


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 7])
def test_jitter_stays_within_bounds(attempt: int):
    base = GUIDE_SCHEDULE[min(attempt, 4) - 1]
    rng = random.Random(attempt)
    delays = [scheduled_delay(attempt, jitter=0.2, rng=rng) for _ in range(500)]
    assert all(base * 0.8 <= d <= base * 1.2 for d in delays)
    assert len(set(delays)) > 1  # jitter actually varies the delay


def test_default_jitter_is_bounded_without_an_explicit_rng():
    delays = [scheduled_delay(2) for _ in range(200)]
    assert all(4.0 <= d <= 6.0 for d in delays)


def test_jitter_is_deterministic_for_a_seeded_rng():
    a = [scheduled_delay(n, rng=random.Random(9)) for n in range(1, 6)]
    b = [scheduled_delay(n, rng=random.Random(9)) for n in range(1, 6)]
    assert a == b


def test_huge_jitter_never_goes_negative():
    rng = random.Random(11)
    assert all(scheduled_delay(1, jitter=5.0, rng=rng) >= 0 for _ in range(500))


# -- clocks -----------------------------------------------------------------------------------


def test_fake_clock_stands_still_until_advanced():
    clock = FakeClock()
    assert clock.now() == 0.0
    assert clock.now() == 0.0
    clock.advance(1.5)
    clock.advance(0.5)
    assert clock.now() == 2.0


def test_fake_clock_wall_time_moves_with_now():
    clock = FakeClock(start=10.0)
    start_wall = clock.wall()
    assert start_wall.tzinfo is not None
    clock.advance(90)
    assert clock.now() == 100.0
    assert clock.wall() - start_wall == timedelta(seconds=90)


def test_fake_clock_default_and_custom_wall():
    assert FakeClock().wall() == datetime(2026, 1, 1, tzinfo=UTC)
    origin = datetime(2030, 6, 1, 12, tzinfo=UTC)
    assert FakeClock(wall=origin).wall() == origin


def test_fake_clock_cannot_go_backwards():
    clock = FakeClock(start=5.0)
    with pytest.raises(ValueError):
        clock.advance(-1)
    assert clock.now() == 5.0


def test_fake_clock_advance_zero_is_allowed():
    clock = FakeClock()
    clock.advance(0)
    assert clock.now() == 0.0


def test_system_clock_is_monotonic_and_utc():
    clock = SystemClock()
    a, b = clock.now(), clock.now()
    assert b >= a
    assert clock.wall().tzinfo is not None
    assert clock.wall().utcoffset() == timedelta(0)
    assert utcnow().utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["0s", "-1d", "9223372036854775807d", "101y", "nonsense"])
def test_positive_duration_refuses_what_no_date_can_hold(text: str):
    with pytest.raises(ValidationFailed) as err:
        positive_duration(text, "retention")
    assert err.value.detail.startswith("retention: ")


def test_positive_duration_accepts_up_to_a_century():
    assert positive_duration("30d", "retention") == 30 * 86_400
    assert positive_duration(100 * 365 * 86_400, "retention") == 100 * 365 * 86_400
