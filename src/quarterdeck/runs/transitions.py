"""Which status changes a run may make: the one table both run stores follow.

The Postgres store cannot check a transition in Python before writing it (another process may
move the run between the read and the write), so its SQL guards every state change with
``WHERE status = ANY(...)``. Those lists are computed here, from :data:`TRANSITIONS`, and the
in-memory twin checks the same table; so the rules are written down once and the two stores
cannot drift apart.

A guard that finds the run elsewhere is a lost race, not a bug: a worker finishing a run that was
cancelled meanwhile changes nothing and is told so (the store returns None). Asking for a change
the table can never allow (finishing a run as ``queued``, say) is a bug and raises
:class:`IllegalTransition`.
"""

from __future__ import annotations

from quarterdeck.exceptions import InvalidState
from quarterdeck.runs.models import TERMINAL, RunStatus

Q, R = RunStatus.queued, RunStatus.running

TRANSITIONS: frozenset[tuple[RunStatus, RunStatus]] = frozenset(
    {
        (Q, R),  # claimed by a worker: attempts + 1
        (R, R),  # re-claimed after its worker was lost: pgqueuer re-delivered the job
        (R, Q),  # requeued: released by a draining worker, or its worker stopped heartbeating
        (Q, Q),  # requeued: its job was lost, so it gets a new one
        # Ended. A queued run can end without running: cancelled before it started, or finished
        # by a worker whose run the health monitor requeued meanwhile (its result is kept, and
        # the new job then finds the run terminal).
        *((source, end) for source in (Q, R) for end in TERMINAL),
    }
)
"""Every allowed (from, to) pair. Terminal statuses have no way out."""


class IllegalTransition(InvalidState):
    """A status change the transition table does not allow."""


def allowed(source: RunStatus, target: RunStatus) -> bool:
    return (source, target) in TRANSITIONS


def check(source: RunStatus, target: RunStatus) -> None:
    """Raise :class:`IllegalTransition` unless ``source -> target`` is in the table."""
    if (source, target) not in TRANSITIONS:
        raise IllegalTransition(f"a {source.value} run cannot become {target.value}")


def sources(target: RunStatus) -> frozenset[RunStatus]:
    """The statuses a run may be in to move to ``target``: what the SQL guards accept."""
    return _SOURCES[target]


def guard(target: RunStatus) -> list[str]:
    """:func:`sources` as the text array a ``WHERE status = ANY($n)`` guard takes."""
    return _GUARDS[target]


def require_end(status: RunStatus) -> None:
    """A finish must name a terminal status: anything else is a caller's bug."""
    if not status.terminal:
        raise IllegalTransition(f"{status.value} is not a terminal status; a run cannot end so")


_SOURCES = {t: frozenset(s for s, to in TRANSITIONS if to is t) for t in RunStatus}
_GUARDS = {t: sorted(s.value for s in _SOURCES[t]) for t in RunStatus}

CLAIMABLE = sources(RunStatus.running)
REQUEUEABLE = sources(RunStatus.queued)
ENDABLE = frozenset.intersection(*(sources(t) for t in TERMINAL))
