"""The rollout state machine: pure, so a restarted controller continues where the last one stopped.

Why pure: every function takes the spec, the stored :class:`RolloutState` and ``now`` (epoch
seconds) and returns the next state and the actions to carry out, in order. The controller writes
the new state in the same transaction as it records the actions, so killing it mid-rollout and
starting another (or electing a new leader) only means calling :func:`tick` again later with the
stored state: the pause is measured from the stored ``step_started_at``, not from a timer held in
memory (the guide's version kept everything in one process and lost it on restart). Argo Rollouts
keeps the same facts in the Rollout's status (``currentStepIndex``, the pause's ``startTime``,
``currentStepHash``, ``abort``) and Flagger in ``CanaryStatus`` ("used for state persistence").

A call that changes nothing returns the very same state object and no actions, so the controller
can skip the write (``new is state``).

The rules, with their anchors:

- A failed analysis rolls back at once (Argo: a Failed AnalysisRun aborts and sets the canary
  weight to zero) and opens one incident, as an action of the transition into ``rolled_back``;
  later ticks of the terminal state do nothing, so it is never repeated. It rolls back in every
  live phase, soaking and waiting-for-a-person included: the canary (or the old side) is still
  there, and a breach ignored while a gate waits is a known complaint (fluxcd/flagger#1801).
- A pass never shortens a pause: a step is analysed for its whole duration.
- A step short of evidence (inconclusive, or no result at all) is extended by one analysis
  interval up to ``analysis.max_extensions`` times, then paused for a person in phase
  ``inconclusive``: never passed (Flagger's no-traffic advancement, fluxcd/flagger#1011; Argo's
  inconclusive-means-pause, and its bug of promoting after an inconclusive pause expired,
  argoproj/argo-rollouts#3850).
- ``promote`` is a person's decision: it skips what is left of the current step (Argo's
  ``kubectl argo rollouts promote``; ``--full`` is ``promote --full``). ``abort`` rolls back
  without an incident, because a person did it.
- A spec whose hash differs from the one the rollout started with pauses it ("the spec changed",
  Argo's ``currentStepHash``): continuing a changed plan from the old plan's step index would
  apply weights nobody asked for. An abort moves it on, or a promote once the original spec
  is back (a failure still rolls it back).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from quarterdeck.exceptions import InvalidState, ValidationFailed

if TYPE_CHECKING:
    from collections.abc import Sequence

    from quarterdeck.rollouts.analysis import AnalysisResult
    from quarterdeck.rollouts.spec import Step


class PlanAnalysis(Protocol):
    @property
    def interval_s(self) -> float: ...

    @property
    def max_extensions(self) -> int: ...


class Plan(Protocol):
    """What the machine reads of a plan: a deployment's ``RolloutSpec`` or an agent
    configuration's ``AgentCanarySpec`` (steps of a share, pauses, extensions, a soak)."""

    @property
    def target(self) -> str: ...

    @property
    def image(self) -> str: ...

    @property
    def steps(self) -> Sequence[Step]: ...

    @property
    def analysis(self) -> PlanAnalysis: ...

    @property
    def stable_soak_s(self) -> float: ...

    def validate(self) -> None: ...

    def spec_hash(self) -> str: ...


Phase = Literal[
    "progressing", "paused", "inconclusive", "soaking", "completed", "aborted", "rolled_back"
]
TERMINAL_PHASES: frozenset[str] = frozenset({"completed", "aborted", "rolled_back"})
SPEC_CHANGED = "the spec changed"


@dataclass(frozen=True, slots=True)
class RolloutState:
    """Everything a restarted controller needs; stored in Postgres with the rollout.

    ``step_index`` indexes ``spec.steps`` (while soaking it stays on the last step);
    ``step_started_at`` is when the current step, its latest extension or the soak began;
    ``pause_reason`` says why the rollout is paused, inconclusive, aborted or rolled back.
    """

    phase: Phase
    step_index: int
    step_started_at: float
    extensions: int
    weight: int
    pause_reason: str | None
    spec_hash: str
    updated_at: float

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES


@dataclass(frozen=True, slots=True)
class SetWeight:
    """Send ``weight`` % of traffic to the new version."""

    weight: int


@dataclass(frozen=True, slots=True)
class Rollback:
    """All traffic back to the old version and the new one scaled down."""

    reason: str


@dataclass(frozen=True, slots=True)
class PromoteFully:
    """The new version becomes the stable one; the old side is kept for the soak."""


@dataclass(frozen=True, slots=True)
class CleanupOld:
    """Remove the old side once the new version has been stable for ``stable_soak_s``."""


@dataclass(frozen=True, slots=True)
class OpenIncident:
    summary: str
    detail: str


Action = SetWeight | Rollback | PromoteFully | CleanupOld | OpenIncident
Transition = tuple[RolloutState, list[Action]]


def start(spec: Plan, now: float) -> Transition:
    """Step 0 at its weight. Raises ``ValidationFailed`` for a spec that fails validation."""
    try:
        spec.validate()
    except ValueError as exc:
        raise ValidationFailed(f"invalid rollout spec: {exc}") from exc
    state = RolloutState(
        phase="progressing",
        step_index=0,
        step_started_at=now,
        extensions=0,
        weight=0,
        pause_reason=None,
        spec_hash=spec.spec_hash(),
        updated_at=now,
    )
    return _enter_step(spec, state, 0, now)


def tick(
    spec: Plan, state: RolloutState, now: float, result: AnalysisResult | None = None
) -> Transition:
    """One reconcile: judge ``result`` (the current step's analysis, or ``None``) at ``now``."""
    if state.terminal:
        return state, []
    if result is not None and result.verdict == "fail":
        return _rolled_back(spec, state, now, result)
    if state.spec_hash != spec.spec_hash():
        if state.phase == "paused" and state.pause_reason == SPEC_CHANGED:
            return state, []
        return _pause(state, now, "paused", SPEC_CHANGED), []
    if state.phase == "soaking":
        if now - state.step_started_at < spec.stable_soak_s:
            return state, []
        return _evolve(state, now, phase="completed", pause_reason=None), [CleanupOld()]
    if state.phase != "progressing":
        return state, []  # paused or inconclusive: waiting for a person
    if now - state.step_started_at < _window(spec, state, spec.steps[state.step_index]):
        return state, []
    if result is not None and result.verdict == "pass":
        return _advance(spec, state, now)
    if state.extensions < spec.analysis.max_extensions:
        extended = _evolve(state, now, step_started_at=now, extensions=state.extensions + 1)
        return extended, []
    why = result.reason if result is not None else "no analysis result"
    reason = (
        f"{_step_name(spec, state.step_index)}: analysis inconclusive after "
        f"{state.extensions} extension(s) of {spec.analysis.interval_s:g} s: {why}"
    )
    return _pause(state, now, "inconclusive", reason), []


def promote(spec: Plan, state: RolloutState, now: float, *, full: bool = False) -> Transition:
    """A person moves the rollout on: to the next step, or with ``full`` straight to full promotion.

    Works from ``progressing`` too, skipping what is left of the step (Argo's promote). Raises
    ``InvalidState`` while soaking (already fully promoted) and when the spec changed since the
    rollout started (abort it and start a new one).
    """
    if state.terminal:
        return state, []
    if state.phase == "soaking":
        raise InvalidState(
            "the rollout is already fully promoted; the old side goes after the soak"
        )
    if state.spec_hash != spec.spec_hash():
        raise InvalidState(
            "the spec changed since this rollout started; abort it and start a new one"
        )
    if full:
        return _promote_fully(spec, state, now)
    return _advance(spec, state, now)


def abort(spec: Plan, state: RolloutState, now: float, reason: str) -> Transition:
    """A person stops the rollout: traffic back to the old version, no incident."""
    if state.terminal:
        return state, []
    aborted = _evolve(state, now, phase="aborted", weight=0, pause_reason=reason)
    return aborted, [Rollback(reason)]


def remaining_pause_s(spec: Plan, state: RolloutState, now: float) -> float | None:
    """Seconds until the current step (or its extension, or the soak) is judged; ``None`` when
    nothing is timed: waiting for a person, or finished."""
    if state.phase == "soaking":
        return max(0.0, state.step_started_at + spec.stable_soak_s - now)
    if state.phase != "progressing" or not 0 <= state.step_index < len(spec.steps):
        return None
    step = spec.steps[state.step_index]
    if step.pause_s is None:
        return None
    return max(0.0, state.step_started_at + _window(spec, state, step) - now)


# --- transitions -------------------------------------------------------------------------------


def _advance(spec: Plan, state: RolloutState, now: float) -> Transition:
    """The next step, or after the last one full promotion."""
    nxt = state.step_index + 1
    if nxt >= len(spec.steps):
        return _promote_fully(spec, state, now)
    return _enter_step(spec, state, nxt, now)


def _enter_step(spec: Plan, state: RolloutState, index: int, now: float) -> Transition:
    step = spec.steps[index]
    manual = step.pause_s is None
    entered = _evolve(
        state,
        now,
        phase="paused" if manual else "progressing",
        step_index=index,
        step_started_at=now,
        extensions=0,
        weight=step.weight,
        pause_reason=_manual_reason(spec, index) if manual else None,
    )
    return entered, [SetWeight(step.weight)]


def _promote_fully(spec: Plan, state: RolloutState, now: float) -> Transition:
    soaking = _evolve(
        state,
        now,
        phase="soaking",
        step_index=len(spec.steps) - 1,
        step_started_at=now,
        extensions=0,
        weight=100,
        pause_reason=None,
    )
    return soaking, [PromoteFully()]


def _rolled_back(spec: Plan, state: RolloutState, now: float, result: AnalysisResult) -> Transition:
    where = (
        "the soak after full promotion"
        if state.phase == "soaking"
        else _step_name(spec, state.step_index)
    )
    reason = f"analysis failed during {where}: {result.reason}"
    rolled = _evolve(state, now, phase="rolled_back", weight=0, pause_reason=reason)
    summary = f"rollout of {spec.target} to {spec.image} rolled back"
    detail = (
        f"{reason}\nweight before rollback: {state.weight} %; samples: {result.samples} "
        f"(required {result.required})"
    )
    measurements = "\n".join(
        f"- {m.name}: {m.value if m.value is not None else 'no value'} (limit {m.limit}) "
        f"{m.verdict}: {m.detail}"
        for m in result.measurements
    )
    if measurements:
        detail += f"\nmeasurements:\n{measurements}"
    return rolled, [Rollback(reason), OpenIncident(summary, detail)]


def _pause(state: RolloutState, now: float, phase: Phase, reason: str) -> RolloutState:
    return _evolve(state, now, phase=phase, pause_reason=reason)


# --- helpers -----------------------------------------------------------------------------------


def _window(spec: Plan, state: RolloutState, step: Step) -> float:
    """How long the current stretch lasts: the step's pause, or one interval per extension."""
    if state.extensions:
        return spec.analysis.interval_s
    return step.pause_s if step.pause_s is not None else 0.0


def _step_name(spec: Plan, index: int) -> str:
    if 0 <= index < len(spec.steps):
        return f"step {index + 1}/{len(spec.steps)} ({spec.steps[index].weight} %)"
    return f"step {index + 1}"


def _manual_reason(spec: Plan, index: int) -> str:
    return f"{_step_name(spec, index)} waits for promote"


def _evolve(state: RolloutState, now: float, **changes: object) -> RolloutState:
    return dataclasses.replace(state, updated_at=now, **changes)  # type: ignore[arg-type]
