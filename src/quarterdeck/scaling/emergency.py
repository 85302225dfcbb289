"""The health monitor's emergency scale-up, answered by the autoscaler (``ScaleRequester``).

Why through the scaler and not a write of its own: the worker count has one writer, the
scaler's leader, and a second one (this) would fight it exactly as an HPA would. So a request
becomes one bounded step the scaler takes by its own path (the scale subresource in
``kubernetes`` mode, the exported desired count in ``metric`` mode, after the same refusal when
an HPA owns the Deployment), stored as a scaler decision (reason ``health monitor: <reason>: …``,
shown by ``quarterdeck scaler decisions`` and ``/v1/scaling/decisions``) and held against the
scaler's next ticks for the scale-down stabilization window
(:class:`~quarterdeck.scaling.policy.EmergencyFloor`: the step rules, the hold, the rate limit).

Why a process that does not lead the scaler passes the request on instead of refusing it: the
health monitor and the scaler have separate elections, so the process that sees the problem is
often not the one that may write the count. The request is stored for the scaler's leader,
which acts on it at its next tick (:mod:`quarterdeck.scaling.handover`); the answer here says
it was passed on and is not "accepted" (nothing was added yet).

Why every "no" carries its reason (:class:`~quarterdeck.health.recovery.ScaleAnswer`): the
recovery result and the incident then say *why* nothing was added (the scaler only recommends,
is off, was passed the request elsewhere, an HPA owns the Deployment, one was made moments
ago) instead of a bare false. A requester never raises: a failed scale-up must not fail the rest
of the recovery.
"""

from __future__ import annotations

from typing import Any, Protocol

import structlog

from quarterdeck.health.recovery import ScaleAnswer, ScaleRequester
from quarterdeck.scaling.handover import HANDED_OVER, HandOver
from quarterdeck.scaling.scaler import Scaler

log = structlog.get_logger(__name__)

__all__ = ["EmergencyScaleUp", "ScaleTaker", "ScalerOff", "emergency_requester"]


class ScaleTaker(Protocol):
    """What answers a request: a :class:`Scaler` (acts when leading, else hands it over) or,
    in a process with no scaler loop, a :class:`HandOver` alone (always hands it over)."""

    async def emergency_scale_up(self, why: str) -> ScaleAnswer: ...


class EmergencyScaleUp:
    """The health monitor's requests, turned into the scaler's bounded emergency step."""

    def __init__(self, scaler: ScaleTaker) -> None:
        self.scaler = scaler

    async def request_scale_up(self, reason: str, details: dict[str, Any]) -> ScaleAnswer:
        """Ask the scaler for one step up; the answer says whether it was taken, and why."""
        try:
            answer = await self.scaler.emergency_scale_up(reason)
        except Exception as exc:  # Postgres or the observer failed mid-way: say so, never raise
            text = str(exc) or type(exc).__name__
            answer = ScaleAnswer(False, f"not scaled: the scaler failed ({text})")
        event = "health.emergency_scale_up" if answer else "health.emergency_scale_up_refused"
        if answer.reason.startswith(HANDED_OVER):
            event = "health.emergency_scale_up_handed_over"
        log.warning(event, reason=reason, answer=answer.reason, **details)
        return answer


class ScalerOff:
    """Where no scaler runs (``QUARTERDECK_SCALER_MODE=off``): logs the request, adds nothing."""

    async def request_scale_up(self, reason: str, details: dict[str, Any]) -> ScaleAnswer:
        answer = ScaleAnswer(False, "not scaled: the scaler is off (QUARTERDECK_SCALER_MODE)")
        log.warning(
            "health.emergency_scale_up_refused", reason=reason, answer=answer.reason, **details
        )
        return answer


def emergency_requester(scaler: Scaler | HandOver | None) -> ScaleRequester:
    """The health monitor's scale requester for a process whose scaler is ``scaler``: None when
    the deployment's scaler mode is ``off``; a :class:`HandOver` where the mode is on but this
    process runs no scaler loop (today every process with the mode on builds one)."""
    return ScalerOff() if scaler is None else EmergencyScaleUp(scaler)
