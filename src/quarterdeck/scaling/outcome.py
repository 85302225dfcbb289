"""A scaler decision and what became of it, and how it is stored as a ``scaling_decisions`` row.

Apart from the loop (``scaler.py``) because two paths make outcomes, the ticks and the health
monitor's emergency step (asked here or handed over, ``handover.py``), and both must store, count and log them the
same way: the table is how a person finds out later why the pool was the size it was, so a
decision that is not stored the same way is one nobody can explain afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import structlog

from quarterdeck.scaling import repository as repo
from quarterdeck.scaling.gauges import DECISIONS, ERRORS
from quarterdeck.scaling.models import DecisionRecord, ScalerMode
from quarterdeck.scaling.policy import Decision, FactorValue
from quarterdeck.store.pool import Database

log = structlog.get_logger(__name__)

__all__ = ["Outcome", "detail", "record"]


@dataclass
class Outcome:
    """A decision and what became of it, ready to be stored."""

    current: int
    desired: int
    reason: str
    factors: dict[str, FactorValue] = field(default_factory=dict)
    applied: int | None = None
    error: str | None = None

    @property
    def direction(self) -> Literal["up", "down", "hold"]:
        if self.desired > self.current:
            return "up"
        return "down" if self.desired < self.current else "hold"

    @classmethod
    def of(cls, d: Decision) -> Outcome:
        return cls(d.current, d.desired, d.reason, dict(d.factors))


def detail(exc: BaseException) -> str:
    """An exception as the ``error`` column and the logs show it."""
    text = getattr(exc, "detail", None) or str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def record(
    db: Database,
    outcome: Outcome,
    *,
    at: datetime,
    policy: str,
    mode: ScalerMode,
    target: str,
) -> DecisionRecord | None:
    """Count, store and log one decision; None when storing failed (logged, never raised: a
    Postgres outage must not stop the loop from acting, only from remembering)."""
    DECISIONS.labels(outcome.direction).inc()
    fields: dict[str, Any] = {
        "at": at,
        "policy": policy,
        "mode": mode,
        "target": target,
        "current": outcome.current,
        "desired": outcome.desired,
        "applied": outcome.applied,
        "direction": outcome.direction,
        "reason": outcome.reason,
        "factors": outcome.factors,
        "error": outcome.error,
    }
    try:
        async with db.acquire() as conn:
            new_id = await repo.insert_decision(conn, **fields)
    except Exception as exc:
        ERRORS.inc()
        log.error("scaler.record_failed", target=target, error=detail(exc))
        return None
    log.info(
        "scaler.decision",
        target=target,
        direction=outcome.direction,
        current=outcome.current,
        desired=outcome.desired,
        applied=outcome.applied,
        error=outcome.error,
    )
    return DecisionRecord(id=new_id, **fields)
