"""What must hold before each model call of a run: the budgets have room, and the attempt is ours.

Budgets. A check-then-call budget lets N concurrent runs (times replicas) all see the same room
left, and each pays a call past the limit. So before every call the executor *reserves* the
call's worst case with the gateway's own machinery (:class:`~quarterdeck.budgets.holds.
BudgetHolds`: one server-side function that locks the tenant, key and run budget rows and admits
the hold only if spend (``run_turns``, the gateway's calls) plus live holds plus this amount stay
within every limit, the run's own ``runs.budget_usd`` included). The hold rides on the turn's
:class:`~.attempt_repository.TurnRecord` and the statement that records the metered cost deletes
it, so spend + holds only ever steps down to the truth; a call that fails, is cancelled or is fenced
releases it (:meth:`CallGuard.release`).

Fencing. Then the attempt is confirmed (:meth:`RunStore.check_attempt`, one primary-key read):
a worker that lost its job while it was stalled stops here, before paying for another call. The
read is not folded into the reservation because most runs have no budget and then reserve
without a round trip at all (``BudgetHolds`` remembers "unlimited"); it costs well under a
millisecond against calls of seconds. What remains is the call already in flight when the job
was lost: it completes, its turn is refused with ``Fenced``, and the executor leaves a
``discarded_call`` event with its usage and cost.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Protocol

import structlog

from quarterdeck.providers.types import ModelRequest, Usage
from quarterdeck.resilience.calls import CostFn
from quarterdeck.runs.models import Run
from quarterdeck.runs.store_protocol import RunStore

log = structlog.get_logger(__name__)

CHARS_PER_TOKEN = 3
"""Over-counts English and code for Claude's tokenizer (about 3.5-4 characters a token)."""


class Reserver(Protocol):
    """The budget holds the run path shares with the gateway (``budgets.holds.BudgetHolds``)."""

    async def reserve(
        self, *, tenant: str, key_id: str | None, run_id: str | None, amount: Decimal
    ) -> str | None: ...

    async def release(self, hold_id: str) -> None: ...


def _chars(value: Any) -> int:
    return len(value) if isinstance(value, str) else len(json.dumps(value, default=str))


def worst_case_usage(request: ModelRequest) -> Usage:
    """A deliberately high estimate of one call's usage, for the reservation before it.

    Everything the request sends counts as input (system prompt, tool schemas, messages, at three
    characters a token) and is priced as a one-hour cache write, the dearest input class; the
    output is assumed to use all of ``max_tokens`` (extended thinking counts inside it). So the
    hold always covers the metered cost, and a run stops before a call that *could* overspend.
    """
    chars = _chars(request.system)
    chars += sum(_chars(m.to_dict()) for m in request.messages)
    chars += sum(
        _chars({"name": t.name, "description": t.description, "input_schema": t.input_schema})
        for t in request.tools
    )
    tokens = chars // CHARS_PER_TOKEN + 1
    return Usage(
        output_tokens=request.max_tokens,
        cache_creation_input_tokens=tokens,
        cache_creation_1h_tokens=tokens,
    )


class CallGuard:
    """Reserve, then confirm the attempt, before each model call of a run (see the module doc).

    Without ``holds`` (a process that enforces no budgets) only the attempt is confirmed.
    """

    def __init__(
        self,
        store: RunStore,
        cost_of: CostFn,
        holds: Reserver | None,
        *,
        models_for: Callable[[str], list[str]] | None = None,
    ) -> None:
        """``models_for``: every model a call may end up at (the resilient caller's fallback
        chain); the hold covers the dearest."""
        self.store = store
        self.cost_of = cost_of
        self.holds = holds
        self.models_for = models_for or (lambda model: [model])

    def worst_case(self, request: ModelRequest) -> Decimal:
        """USD the call could cost at most, at the dearest model of its fallback chain; 0 for
        models without a price (a budget at or past its limit still refuses it)."""
        usage = worst_case_usage(request)
        costs = [self.cost_of(m, usage) or Decimal(0) for m in self.models_for(request.model)]
        return max(costs, default=Decimal(0))

    async def before_call(self, run: Run, request: ModelRequest) -> str | None:
        """The hold's id (None when no budget applies). Raises ``BudgetExceeded`` when a budget
        has no room, ``Fenced`` when the attempt lost the run (nothing is left held), and
        ``Unavailable`` when the reservation could not be made (budgets fail closed)."""
        hold = None
        if self.holds is not None:
            hold = await self.holds.reserve(
                tenant=run.tenant,
                key_id=run.key_id,
                run_id=run.id,
                amount=self.worst_case(request),
            )
        try:
            await self.store.check_attempt(run.id, epoch=run.attempts)
        except BaseException:
            await self.release(hold)
            raise
        return hold

    async def release(self, hold: str | None) -> None:
        """Drop a hold whose call will not be recorded. Best effort: a hold that cannot be
        deleted now (Postgres away) stops counting when it expires."""
        if hold is None or self.holds is None:
            return
        try:
            await self.holds.release(hold)
        except Exception as exc:
            log.warning("budget.hold_release_failed", hold=hold, error=type(exc).__name__)
