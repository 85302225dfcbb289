"""The Lease election policy, pure, with explicit times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from quarterdeck.health.lease import LeaseView, decide

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_no_lease_is_created():
    assert decide(None, "a", T0) == "create"


def test_the_holder_renews():
    assert decide(LeaseView("a", 15, T0), "a", T0 + timedelta(seconds=60)) == "renew"


def test_a_live_lease_of_another_is_followed_until_it_expires():
    lease = LeaseView("b", 15, T0)
    assert decide(lease, "a", T0 + timedelta(seconds=14.9)) == "follow"
    assert decide(lease, "a", T0 + timedelta(seconds=15)) == "take"


def test_a_released_lease_is_taken_at_once():
    assert decide(LeaseView(None, 15, None), "a", T0) == "take"
    assert decide(LeaseView("b", 15, None), "a", T0) == "take"
