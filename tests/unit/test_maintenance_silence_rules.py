"""The pure rules of maintenance silences: which window covers an instant, what it holds, and
what the API says about it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from quarterdeck.incidents.models import (
    Kind,
    Notification,
    WindowSpan,
    covering_window,
    silence_note,
    silenced,
)
from quarterdeck.kit.clock import FakeClock

T0 = datetime(2026, 10, 3, 22, 0, tzinfo=UTC)


def window(wid: str, start_min: float, end_min: float) -> WindowSpan:
    return WindowSpan(
        id=wid,
        starts_at=T0 + timedelta(minutes=start_min),
        ends_at=T0 + timedelta(minutes=end_min),
    )


def test_a_window_covers_from_its_start_up_to_but_not_including_its_end() -> None:
    clock = FakeClock(wall=T0)
    w = [window("mw_a", 0, 60)]
    assert covering_window(w, clock.wall() - timedelta(microseconds=1)) is None
    assert covering_window(w, clock.wall()) == w[0]
    clock.advance(timedelta(minutes=59, seconds=59))
    assert covering_window(w, clock.wall()) == w[0]
    clock.advance(1)
    assert covering_window(w, clock.wall()) is None, "the end is the first instant outside"
    assert covering_window([], clock.wall()) is None


def test_back_to_back_windows_hand_over_and_overlaps_pick_the_one_ending_last() -> None:
    a, b, c = window("mw_a", 0, 60), window("mw_b", 60, 120), window("mw_c", 30, 90)
    assert covering_window([a, b], T0 + timedelta(minutes=60)) == b
    assert covering_window([a, b, c], T0 + timedelta(minutes=45)) == c
    assert covering_window([c, a, b], T0 + timedelta(minutes=70)) == b
    assert covering_window([a, b, c], T0 + timedelta(minutes=120)) is None


@pytest.mark.parametrize(
    ("kind", "channel_paged", "held"),
    [
        (Kind.trigger, False, True),
        (Kind.trigger, True, True),
        (Kind.escalation, False, True),
        (Kind.escalation, True, True),
        (Kind.info, False, True),
        (Kind.resolve, False, True),  # its page never went out: drop the all-clear with it
        (Kind.resolve, True, False),  # someone was paged before the window: tell them at once
    ],
)
def test_what_a_window_holds(kind: Kind, channel_paged: bool, held: bool) -> None:
    assert silenced(kind, channel_paged) is held


def test_the_note_says_why() -> None:
    assert silence_note("pending", None) is None
    assert silence_note("sent", None) is None
    assert silence_note("held", "mw_1") == "held: maintenance window mw_1"
    assert silence_note("suppressed", "mw_1") == (
        "suppressed: opened and resolved inside maintenance window mw_1"
    )
    assert silence_note("sent", "mw_1") == "held by maintenance window mw_1 until it ended"
    row = Notification(
        id=1,
        incident_id="inc_1",
        channel="slack",
        kind=Kind.trigger,
        status="held",
        attempts=0,
        last_error=None,
        created_at=T0,
        sent_at=None,
        held_by="mw_9",
        held_until=T0 + timedelta(hours=1),
    )
    assert row.model_dump(mode="json")["note"] == "held: maintenance window mw_9"
