"""What a claude-code run cost: the gateway's metering, settled, reconciled with the CLI's claim.

Apart from the runner because it is a different question with a different source of truth. The
runner drives the CLI; the bill comes from the gateway, which metered every model call the CLI
made through the bridge and writes them in batches (every ~0.2 s, possibly in another process),
so the totals are read only once those writes have settled. The CLI's own ``total_cost_usd`` is
an estimate made inside the sandbox: it is kept beside the gateway's figure, never instead of
it, and a disagreement beyond :data:`COST_TOLERANCE` is recorded as a ``cost_mismatch`` event.
The wait (:func:`settled_usage`) is kept apart from the decision (:func:`reconcile`), which
takes only its inputs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from quarterdeck.gateway.models import UsageRow

METER_WAIT_S = 10.0
"""How long to wait, after the CLI exits, for the gateway to record its last calls (they are
written in batches every ~0.2 s, possibly by another process)."""
COST_TOLERANCE = Decimal("0.01")
"""Relative difference between the CLI's own cost estimate and the gateway's metering above
which a ``cost_mismatch`` event is recorded."""

Event = tuple[str, int | None, dict[str, Any]]


async def settled_usage(
    read: Callable[[], Awaitable[UsageRow]], wanted: int, wait_s: float = METER_WAIT_S
) -> UsageRow:
    """The run's usage once its last calls are recorded: at least ``wanted`` calls (one per
    model reply the stream showed) and no new one for half a second, or whatever is recorded
    when ``wait_s`` runs out (0: what is recorded now)."""
    deadline = time.monotonic() + wait_s
    row = await read()
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        again = await read()
        if again.calls != row.calls:
            row, stable_since = again, time.monotonic()
        elif row.calls >= wanted and time.monotonic() - stable_since >= 0.5:
            break
    return row


def reconcile(row: UsageRow, turns: int, cli_cost: object) -> tuple[dict[str, Any], list[Event]]:
    """The run's totals (what its outcome carries) and the events recording them: ``metered``
    always, then ``cost_mismatch`` when the CLI's ``cli_cost`` (its result's
    ``total_cost_usd``, if it gave a number) is off the gateway's by more than the tolerance."""
    metered: dict[str, Any] = {
        "turns": turns,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "cache_creation_tokens": row.cache_write_tokens,
        "cache_read_tokens": row.cache_read_tokens,
        "cost_usd": str(row.cost_usd),
    }
    data: dict[str, Any] = {**metered, "calls": row.calls, "errors": row.errors}
    events: list[Event] = []
    if isinstance(cli_cost, int | float) and not isinstance(cli_cost, bool):
        data["cli_cost_usd"] = cli_cost
        gateway = Decimal(row.cost_usd)
        claimed = Decimal(str(cli_cost))
        if abs(claimed - gateway) > max(Decimal("0.0001"), COST_TOLERANCE * gateway):
            events.append(
                ("cost_mismatch", None, {"gateway_usd": str(gateway), "cli_usd": str(claimed)})
            )
    events.insert(0, ("metered", None, data))
    return metered, events
