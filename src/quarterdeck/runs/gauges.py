"""The queue and run-state gauges, mirrored from Postgres every few seconds.

Queue depth, the oldest queued run's age and the runs per state are facts of the shared store,
not of one process: counting them in process (incrementing on enqueue, decrementing on claim)
would drift with every crash and differ per replica. So every process reads them from the run
store on an interval and sets the gauges; Prometheus then sees the same value from each replica
(the alert rules take ``max`` over instances). The same loop refreshes the budget gauges and
purges budget holds whose process died before settling them.
"""

from __future__ import annotations

import asyncio
import contextlib

from quarterdeck import metrics
from quarterdeck.budgets.holds import BudgetHolds
from quarterdeck.budgets.service import BudgetService
from quarterdeck.runs.store_protocol import RunStore

INTERVAL_S = 5.0


async def mirror_gauges(
    store: RunStore,
    budgets: BudgetService,
    holds: BudgetHolds,
    default_agent_type: str,
    interval_s: float = INTERVAL_S,
) -> None:
    """Set the gauges every ``interval_s`` until cancelled; a failed round is skipped (the
    database may be restarting), never fatal."""
    while True:
        with contextlib.suppress(Exception):
            stats = await store.stats()
            metrics.QUEUE_LENGTH.clear()
            for agent_type, n in stats.queued.items():
                metrics.QUEUE_LENGTH.labels(metrics.bounded(agent_type)).set(n)
            if not stats.queued:
                metrics.QUEUE_LENGTH.labels(default_agent_type).set(0)
            metrics.QUEUE_OLDEST_AGE.set(stats.oldest_s)
            for status in ("queued", "running"):
                metrics.RUNS_IN_STATE.labels(status).set(stats.states.get(status, 0))
            await budgets.refresh_metrics()
            await holds.purge_expired()  # holds of calls whose process died
        await asyncio.sleep(interval_s)
