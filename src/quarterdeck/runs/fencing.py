"""Fencing of run attempts: the rule both run stores apply to an attempt's writes.

Each claim of a run starts a new attempt; its number (``runs.attempts`` after the claim) is the
attempt's fencing epoch. A worker that stalled (a long GC pause, a frozen VM, SIGSTOP) while its
job was picked up again must not record a second copy of the work: every write an attempt makes
(a turn checkpoint, its tool events, its heartbeat, its own finish) is accepted only while the
run is ``running`` at that attempt. The Postgres store puts this rule in the guard of each
statement, so the decision and the write are one; :class:`~.memory.InMemoryRunStore` applies
:func:`holds` so the logic above the store is tested against the same rule.

One write is deliberately not fenced: the ``discarded_call`` event a fenced worker leaves when a
model call it had in flight completed after it lost the run. That call was paid and cannot be
recorded as a turn; the event is how the run's timeline says so (:func:`discarded_call`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from quarterdeck.exceptions import Fenced
from quarterdeck.runs.models import RunStatus

DISCARDED_CALL = "discarded_call"


def holds(status: RunStatus, attempts: int, epoch: int) -> bool:
    """Does attempt ``epoch`` still hold a run found at ``status`` after ``attempts`` claims?"""
    return status is RunStatus.running and attempts == epoch


def fenced(run_id: str, epoch: int) -> Fenced:
    return Fenced(
        f"run {run_id}: attempt {epoch} no longer holds it (it was picked up again, or ended); "
        "nothing of this attempt is recorded from now on"
    )


def discarded_call(
    epoch: int, turn: int, model: str, usage: dict[str, int], cost: Decimal | None
) -> dict[str, Any]:
    """The event data for a call that completed after its attempt lost the run."""
    return {
        "attempt": epoch,
        "turn": turn,
        "model": model,
        "usage": usage,
        "cost_usd": float(cost) if cost is not None else None,
        "reason": "the attempt lost the run while this call was in flight: paid, not recorded",
    }
