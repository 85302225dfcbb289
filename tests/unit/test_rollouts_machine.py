"""The rollout state machine driven by a fake clock: every path a rollout can take (issue 20).

Times are epoch seconds from :class:`FakeClock`; nothing sleeps. A "restart" is the stored state
copied through a plain dict (as a Postgres row would be) and ticked again later.
"""

from __future__ import annotations

import dataclasses

import pytest

from quarterdeck.exceptions import InvalidState, ValidationFailed
from quarterdeck.kit.clock import FakeClock
from quarterdeck.rollouts.analysis import AnalysisResult, Measurement, Verdict
from quarterdeck.rollouts.machine import (
    SPEC_CHANGED,
    Action,
    CleanupOld,
    OpenIncident,
    PromoteFully,
    Rollback,
    RolloutState,
    SetWeight,
    abort,
    promote,
    remaining_pause_s,
    start,
    tick,
)
from quarterdeck.rollouts.spec import Analysis, RolloutSpec, parse_steps

T0 = 1_800_000_000.0
GUIDE = RolloutSpec(
    target="claude-agent-api", image="quarterdeck:2.0", steps=parse_steps("5,20,50,80,100")
)
SOAK = GUIDE.stable_soak_s  # 600 s


def spec(
    weights: str = "5,20,50,80,100",
    pauses: str | None = None,
    *,
    max_extensions: int = 3,
    interval_s: float = 60.0,
    soak: float = 600.0,
) -> RolloutSpec:
    return RolloutSpec(
        target="claude-agent-api",
        image="quarterdeck:2.0",
        steps=parse_steps(weights, pauses),
        analysis=Analysis(interval_s=interval_s, max_extensions=max_extensions),
        stable_soak_s=soak,
    )


def res(verdict: Verdict, reason: str = "", samples: int = 300) -> AnalysisResult:
    return AnalysisResult(
        verdict=verdict,
        measurements=(),
        reason=reason or f"analysis says {verdict}",
        samples=samples,
        required=300,
    )


PASS, FAIL, UNSURE = res("pass"), res("fail", "error rate 4.0 % > 1.0 %"), res("inconclusive")


class Rollout:
    """One rollout under a fake clock: keeps the state and every action, like the controller."""

    def __init__(self, s: RolloutSpec, clock: FakeClock | None = None) -> None:
        self.spec, self.clock = s, clock or FakeClock(start=T0)
        self.state, actions = start(s, self.clock.now())
        self.actions: list[Action] = list(actions)

    def _take(self, out: tuple[RolloutState, list[Action]]) -> list[Action]:
        self.state = out[0]
        self.actions += out[1]
        return out[1]

    def tick(self, result: AnalysisResult | None = None, after: float = 0.0) -> list[Action]:
        self.clock.advance(after)
        return self._take(tick(self.spec, self.state, self.clock.now(), result))

    def promote(self, *, full: bool = False) -> list[Action]:
        return self._take(promote(self.spec, self.state, self.clock.now(), full=full))

    def abort(self, reason: str = "a person stopped it") -> list[Action]:
        return self._take(abort(self.spec, self.state, self.clock.now(), reason))

    def phase(self) -> str:
        """Read afresh (an ``assert r.phase() == …`` would narrow the type for later lines)."""
        return self.state.phase

    def remaining(self) -> float | None:
        return remaining_pause_s(self.spec, self.state, self.clock.now())

    def pass_step(self) -> list[Action]:
        """Wait out the current step's pause exactly, then hand it a passing result."""
        left = self.remaining()
        assert left is not None
        return self.tick(PASS, after=left)


def incidents(actions: list[Action]) -> list[OpenIncident]:
    return [a for a in actions if isinstance(a, OpenIncident)]


# --- start and the happy path ------------------------------------------------------------------


def test_start_sets_the_first_weight_and_times_its_pause() -> None:
    r = Rollout(GUIDE)
    assert r.actions == [SetWeight(5)]
    assert r.phase() == "progressing"
    assert (r.state.step_index, r.state.weight, r.state.extensions) == (0, 5, 0)
    assert r.state.step_started_at == T0 == r.state.updated_at
    assert r.state.spec_hash == GUIDE.spec_hash()
    assert r.remaining() == 300.0  # the guide's 5 minutes at 5 %


def test_start_refuses_an_invalid_spec() -> None:
    bad = spec("5,20,50")  # the last step does not reach 100 %
    with pytest.raises(ValidationFailed, match="last step must send 100"):
        start(bad, T0)


def test_promotes_through_every_step_then_soaks_and_cleans_up() -> None:
    r = Rollout(GUIDE)
    for _ in range(len(GUIDE.steps)):
        r.pass_step()
    assert r.actions == [SetWeight(w) for w in (5, 20, 50, 80, 100)] + [PromoteFully()]
    assert r.phase() == "soaking"
    assert r.state.weight == 100
    # 5 min + 4 x 3 min of steps, then the soak is measured from full promotion.
    assert r.clock.now() - T0 == 300 + 4 * 180
    assert r.remaining() == SOAK
    assert r.tick(None, after=SOAK - 1) == []
    assert r.tick(None, after=1) == [CleanupOld()]
    assert r.phase() == "completed"
    assert r.state.pause_reason is None
    assert incidents(r.actions) == []
    assert r.state.updated_at == r.clock.now()


def test_a_pass_never_shortens_a_pause() -> None:
    r = Rollout(GUIDE)
    before = r.state
    assert r.tick(PASS, after=299.0) == []
    assert r.state is before  # unchanged: the controller has nothing to write
    assert r.remaining() == 1.0
    assert r.tick(PASS, after=1.0) == [SetWeight(20)]
    assert (r.state.step_index, r.state.step_started_at) == (1, T0 + 300)


def test_a_zero_pause_advances_on_the_next_passing_tick() -> None:
    r = Rollout(spec("10,100", "0s"))
    assert r.tick(PASS) == [SetWeight(100)]
    assert r.tick(PASS) == [PromoteFully()]


# --- failure -----------------------------------------------------------------------------------


@pytest.mark.parametrize("failing_step", range(5))
def test_a_failure_at_any_step_rolls_back_at_once_with_one_incident(failing_step: int) -> None:
    r = Rollout(GUIDE)
    for _ in range(failing_step):
        r.pass_step()
    weight = GUIDE.steps[failing_step].weight
    assert r.state.weight == weight
    out = r.tick(FAIL, after=10.0)  # mid-pause: a failure does not wait for the step to end
    assert [type(a) for a in out] == [Rollback, OpenIncident]
    assert r.phase() == "rolled_back"
    assert r.state.weight == 0
    reason = r.state.pause_reason or ""
    assert f"step {failing_step + 1}/5 ({weight} %)" in reason
    assert "error rate 4.0 % > 1.0 %" in reason
    assert out[0] == Rollback(reason)
    incident = incidents(out)[0]
    assert "claude-agent-api" in incident.summary and "quarterdeck:2.0" in incident.summary
    assert f"weight before rollback: {weight} %" in incident.detail
    # Later ticks, even failing ones, never open a second incident.
    rolled = r.state
    for result in (FAIL, FAIL, PASS, None):
        assert r.tick(result, after=60.0) == []
    assert r.state is rolled
    assert len(incidents(r.actions)) == 1


def test_the_incident_carries_the_measurements() -> None:
    r = Rollout(GUIDE)
    error_rate = Measurement("error_rate", 0.04, "<= 0.01", "fail", "12 errors in 300 requests")
    latency = Measurement("latency_p95_s", None, "<= 5", "inconclusive", "no requests finished")
    failing = dataclasses.replace(FAIL, measurements=(error_rate, latency), samples=120)
    out = r.tick(failing)
    detail = incidents(out)[0].detail
    assert "samples: 120 (required 300)" in detail
    assert "- error_rate: 0.04 (limit <= 0.01) fail: 12 errors in 300 requests" in detail
    assert "- latency_p95_s: no value (limit <= 5) inconclusive: no requests finished" in detail


def test_a_failure_during_the_soak_rolls_back() -> None:
    r = Rollout(GUIDE)
    r.promote(full=True)
    assert r.phase() == "soaking"
    out = r.tick(FAIL, after=SOAK - 1)
    assert [type(a) for a in out] == [Rollback, OpenIncident]
    assert r.phase() == "rolled_back"
    assert "the soak after full promotion" in (r.state.pause_reason or "")
    assert r.tick(None, after=SOAK) == []  # no CleanupOld after a rollback
    assert CleanupOld() not in r.actions


def test_the_soak_ends_on_time_whatever_the_evidence() -> None:
    r = Rollout(spec("100", "1m", soak=120))
    r.pass_step()
    assert r.tick(UNSURE, after=119) == []
    assert r.tick(UNSURE, after=1) == [CleanupOld()]


@pytest.mark.parametrize("phase", ["paused", "inconclusive"])
def test_a_failure_while_waiting_for_a_person_still_rolls_back(phase: str) -> None:
    r = Rollout(spec("5,100", "manual" if phase == "paused" else "1m", max_extensions=0))
    if phase == "inconclusive":
        r.tick(None, after=60)
    assert r.phase() == phase
    out = r.tick(FAIL, after=3600)
    assert [type(a) for a in out] == [Rollback, OpenIncident]
    assert r.phase() == "rolled_back"


# --- not enough evidence -----------------------------------------------------------------------


def test_inconclusive_is_extended_then_paused_for_a_person_never_passed() -> None:
    r = Rollout(spec(max_extensions=2, interval_s=60))
    assert r.tick(UNSURE, after=300) == []
    assert (r.state.phase, r.state.extensions, r.state.step_started_at) == (
        "progressing",
        1,
        T0 + 300,
    )
    assert r.remaining() == 60.0  # an extension lasts one analysis interval
    assert r.tick(UNSURE, after=59) == []
    assert r.state.extensions == 1
    assert r.tick(None, after=1) == []  # no result at all counts as no evidence
    assert r.state.extensions == 2
    assert r.tick(UNSURE, after=60) == []
    assert r.phase() == "inconclusive"
    assert r.state.weight == 5
    assert "inconclusive after 2 extension(s) of 60 s: analysis says inconclusive" in (
        r.state.pause_reason or ""
    )
    assert r.remaining() is None
    # A later pass does not move it on: a person decides.
    waiting = r.state
    assert r.tick(PASS, after=3600) == []
    assert r.state is waiting
    assert r.promote() == [SetWeight(20)]
    assert (r.state.phase, r.state.step_index, r.state.extensions) == ("progressing", 1, 0)
    assert r.state.pause_reason is None
    assert r.remaining() == 180.0


def test_an_extension_that_then_passes_advances() -> None:
    r = Rollout(spec(max_extensions=3))
    r.tick(UNSURE, after=300)
    assert r.tick(PASS, after=60) == [SetWeight(20)]
    assert r.state.extensions == 0


def test_without_extensions_an_inconclusive_step_pauses_at_once() -> None:
    r = Rollout(spec(max_extensions=0))
    assert r.tick(None, after=300) == []
    assert r.phase() == "inconclusive"
    assert "no analysis result" in (r.state.pause_reason or "")


# --- people: promote and abort -----------------------------------------------------------------


def test_a_manual_step_waits_in_paused_for_promote() -> None:
    r = Rollout(spec("5,50,100", "1m,manual,2m"))
    assert r.pass_step() == [SetWeight(50)]
    assert r.phase() == "paused"
    assert r.state.pause_reason == "step 2/3 (50 %) waits for promote"
    assert r.remaining() is None
    paused = r.state
    assert r.tick(PASS, after=86_400) == []
    assert r.state is paused
    assert r.promote() == [SetWeight(100)]
    assert (r.state.phase, r.state.step_index) == ("progressing", 2)
    assert r.remaining() == 120.0


def test_a_manual_first_step_starts_paused() -> None:
    r = Rollout(spec("5,100", "manual,1m"))
    assert r.actions == [SetWeight(5)]
    assert r.phase() == "paused"


def test_promote_on_the_last_step_promotes_fully() -> None:
    r = Rollout(spec("5,100", "1m,manual"))
    r.pass_step()
    assert r.phase() == "paused"
    assert r.promote() == [PromoteFully()]
    assert r.phase() == "soaking"


def test_promote_while_progressing_skips_the_rest_of_the_step() -> None:
    r = Rollout(GUIDE)
    r.clock.advance(10)
    assert r.promote() == [SetWeight(20)]
    assert (r.state.step_index, r.state.step_started_at) == (1, T0 + 10)


@pytest.mark.parametrize("from_phase", ["progressing", "paused"])
def test_promote_full_goes_straight_to_full_promotion(from_phase: str) -> None:
    r = Rollout(spec("5,20,100", "1m" if from_phase == "progressing" else "manual"))
    assert r.phase() == from_phase
    assert r.promote(full=True) == [PromoteFully()]
    assert (r.state.phase, r.state.weight, r.state.step_index) == ("soaking", 100, 2)
    assert r.tick(None, after=SOAK) == [CleanupOld()]
    assert r.actions == [SetWeight(5), PromoteFully(), CleanupOld()]


def test_promote_while_soaking_is_refused() -> None:
    r = Rollout(GUIDE)
    r.promote(full=True)
    with pytest.raises(InvalidState, match="already fully promoted"):
        r.promote()


@pytest.mark.parametrize("phase", ["progressing", "paused", "inconclusive", "soaking"])
def test_abort_rolls_back_from_any_live_phase_without_an_incident(phase: str) -> None:
    r = Rollout(spec("5,50,100", "manual" if phase == "paused" else "1m", max_extensions=0))
    if phase == "inconclusive":
        r.tick(None, after=60)
    elif phase == "soaking":
        r.promote(full=True)
    assert r.phase() == phase
    assert r.abort("bad dashboards") == [Rollback("bad dashboards")]
    assert (r.state.phase, r.state.weight, r.state.pause_reason) == ("aborted", 0, "bad dashboards")
    assert incidents(r.actions) == []
    aborted = r.state
    assert r.tick(FAIL, after=60) == []
    assert r.state is aborted


# --- restarts, terminal states, spec changes ---------------------------------------------------


def stored(state: RolloutState) -> RolloutState:
    """Through a plain row and back, as the controller's Postgres copy would be."""
    return RolloutState(**dataclasses.asdict(state))


def test_a_restart_mid_pause_continues_from_the_stored_step_start() -> None:
    r = Rollout(GUIDE)
    r.pass_step()
    r.tick(PASS, after=100)  # 100 s into step 2's 180 s pause, then the controller dies
    row = stored(r.state)
    assert row == r.state and row is not r.state
    # A new controller 50 s later: the pause is counted from the stored start, not its own.
    later = r.clock.now() + 50
    assert remaining_pause_s(GUIDE, row, later) == 30.0
    assert tick(GUIDE, row, later, PASS) == (row, [])
    state, actions = tick(GUIDE, row, later + 30, PASS)
    assert actions == [SetWeight(50)]
    assert (state.step_index, state.step_started_at) == (2, later + 30)


def test_a_restart_long_after_the_pause_judges_the_step_once() -> None:
    r = Rollout(GUIDE)
    row = stored(r.state)
    state, actions = tick(GUIDE, row, T0 + 10_000, PASS)
    assert actions == [SetWeight(20)]  # one step, not every step that "would have" elapsed
    assert state.step_started_at == T0 + 10_000


def test_a_restart_keeps_the_extension_count() -> None:
    r = Rollout(spec(max_extensions=1))
    r.tick(UNSURE, after=300)
    row = stored(r.state)
    state, _ = tick(r.spec, row, r.clock.now() + 60, UNSURE)
    assert state.phase == "inconclusive"


def terminal_states() -> list[RolloutState]:
    done = Rollout(spec("100", "0s", soak=0))
    done.tick(PASS)
    done.tick(None)
    failed = Rollout(GUIDE)
    failed.tick(FAIL)
    aborted = Rollout(GUIDE)
    aborted.abort()
    return [done.state, failed.state, aborted.state]


@pytest.mark.parametrize("state", terminal_states(), ids=lambda s: s.phase)
def test_terminal_phases_ignore_everything(state: RolloutState) -> None:
    s = spec("100", "0s", soak=0) if state.phase == "completed" else GUIDE
    later = T0 + 86_400
    calls = [
        *(tick(s, state, later, r) for r in (PASS, FAIL, UNSURE, None)),
        tick(spec("5,100"), state, later, None),  # even a changed spec
        promote(s, state, later),
        promote(s, state, later, full=True),
        abort(s, state, later, "again"),
    ]
    for new, actions in calls:
        assert new is state
        assert actions == []
    assert remaining_pause_s(s, state, later) is None


def test_a_changed_spec_pauses_the_rollout_until_a_person_acts() -> None:
    r = Rollout(GUIDE)
    changed = dataclasses.replace(GUIDE, image="quarterdeck:2.1")
    state, actions = tick(changed, r.state, T0 + 400, PASS)
    assert actions == []
    assert (state.phase, state.pause_reason, state.weight) == ("paused", SPEC_CHANGED, 5)
    assert state.spec_hash == GUIDE.spec_hash()  # still the spec it started with
    again = tick(changed, state, T0 + 500, PASS)
    assert again == (state, []) and again[0] is state
    with pytest.raises(InvalidState, match="spec changed"):
        promote(changed, state, T0 + 500)
    # A failure still rolls back: the canary is serving traffic.
    rolled, out = tick(changed, state, T0 + 500, FAIL)
    assert rolled.phase == "rolled_back" and [type(a) for a in out] == [Rollback, OpenIncident]
    # Abort works with either spec.
    assert abort(changed, state, T0 + 500, "replaced")[1] == [Rollback("replaced")]
    # With the original spec back, a person can move it on.
    assert promote(GUIDE, state, T0 + 500)[1] == [SetWeight(20)]


def test_a_changed_spec_pauses_a_soak_too() -> None:
    r = Rollout(GUIDE)
    r.promote(full=True)
    changed = dataclasses.replace(GUIDE, stable_soak_s=60.0)
    state, actions = tick(changed, r.state, T0 + SOAK, None)
    assert (state.phase, actions) == ("paused", [])  # no CleanupOld under a plan nobody started
