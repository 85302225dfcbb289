"""All SQL of rollouts (tables ``rollouts`` and ``rollout_events``, migration 0021), and how the
frozen spec, the machine's state and its pending actions are stored.

Why the codecs live here: the row is the only memory a controller has across restarts and
leaders, so the one module that writes it also defines exactly how a spec, a state and an
action round-trip through ``jsonb`` (a spec read back must hash the same, or the machine would
think it changed). Functions take an open connection, so the caller chooses the transaction.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import asyncpg

from quarterdeck.rollouts import canary_spec
from quarterdeck.rollouts.canary_spec import AgentCanarySpec
from quarterdeck.rollouts.machine import (
    Action,
    CleanupOld,
    OpenIncident,
    PromoteFully,
    Rollback,
    RolloutState,
    SetWeight,
)
from quarterdeck.rollouts.spec import Analysis, MetricCheck, RolloutSpec, Step

__all__ = [
    "AnyPlan",
    "action_from_json",
    "action_to_json",
    "append_event",
    "get_rollout",
    "insert_rollout",
    "list_events",
    "list_rollouts",
    "spec_from_json",
    "spec_to_json",
    "state_of",
    "work_list",
]

TERMINAL = ("completed", "aborted", "rolled_back")

AnyPlan = RolloutSpec | AgentCanarySpec


# --- codecs ------------------------------------------------------------------------------------


def spec_to_json(spec: AnyPlan) -> dict[str, Any]:
    if isinstance(spec, AgentCanarySpec):
        return canary_spec.to_json(spec)
    a = spec.analysis
    return {
        "target": spec.target,
        "image": spec.image,
        "strategy": spec.strategy,
        "steps": [{"weight": s.weight, "pause_s": s.pause_s} for s in spec.steps],
        "analysis": {
            "interval_s": a.interval_s,
            "max_error_rate": a.max_error_rate,
            "max_latency_p95_s": a.max_latency_p95_s,
            "min_throughput_ratio": a.min_throughput_ratio,
            "min_samples": a.min_samples,
            "max_extensions": a.max_extensions,
            "checks": [
                {"name": c.name, "query": c.query, "success": c.success, "failure": c.failure}
                for c in a.checks
            ],
        },
        "traffic": spec.traffic,
        "stable_soak_s": spec.stable_soak_s,
    }


def spec_from_json(raw: dict[str, Any]) -> AnyPlan:
    """The stored spec, with the exact types it was built with (so its hash is unchanged)."""
    if raw.get("kind") == AgentCanarySpec.kind:
        return canary_spec.from_json(raw)
    return deployment_spec(raw)


def deployment_spec(raw: dict[str, Any]) -> RolloutSpec:
    a = raw["analysis"]
    analysis = Analysis(
        interval_s=float(a["interval_s"]),
        max_error_rate=float(a["max_error_rate"]),
        max_latency_p95_s=float(a["max_latency_p95_s"]),
        min_throughput_ratio=float(a["min_throughput_ratio"]),
        min_samples=None if a["min_samples"] is None else int(a["min_samples"]),
        max_extensions=int(a["max_extensions"]),
        checks=tuple(
            MetricCheck(c["name"], c["query"], c.get("success"), c.get("failure"))
            for c in a["checks"]
        ),
    )
    return RolloutSpec(
        target=raw["target"],
        image=raw["image"],
        strategy=raw["strategy"],
        steps=tuple(
            Step(int(s["weight"]), None if s["pause_s"] is None else float(s["pause_s"]))
            for s in raw["steps"]
        ),
        analysis=analysis,
        traffic=raw["traffic"],
        stable_soak_s=float(raw["stable_soak_s"]),
    )


def action_to_json(action: Action) -> dict[str, Any]:
    if isinstance(action, SetWeight):
        return {"type": "set_weight", "weight": action.weight}
    if isinstance(action, Rollback):
        return {"type": "rollback", "reason": action.reason}
    if isinstance(action, PromoteFully):
        return {"type": "promote_fully"}
    if isinstance(action, CleanupOld):
        return {"type": "cleanup"}
    return {"type": "open_incident", "summary": action.summary, "detail": action.detail}


def action_from_json(raw: dict[str, Any]) -> Action:
    kind = raw.get("type")
    if kind == "set_weight":
        return SetWeight(int(raw["weight"]))
    if kind == "rollback":
        return Rollback(str(raw["reason"]))
    if kind == "promote_fully":
        return PromoteFully()
    if kind == "cleanup":
        return CleanupOld()
    if kind == "open_incident":
        return OpenIncident(str(raw["summary"]), str(raw["detail"]))
    raise ValueError(f"unknown stored rollout action {raw!r}")


def queue(pending: list[dict[str, Any]], actions: list[Action]) -> list[dict[str, Any]]:
    """``pending`` with ``actions`` appended; a rollback drops the traffic moves queued before it
    (applying a weight only to take it away at once would move users for nothing)."""
    new = [action_to_json(a) for a in actions]
    if any(a["type"] == "rollback" for a in new):
        pending = [p for p in pending if p["type"] not in ("set_weight", "promote_fully")]
    return [*pending, *new]


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def state_of(row: asyncpg.Record) -> RolloutState:
    return RolloutState(
        phase=row["phase"],
        step_index=row["step_index"],
        step_started_at=row["step_started_at"].timestamp(),
        extensions=row["extensions"],
        weight=row["weight"],
        pause_reason=row["pause_reason"],
        spec_hash=row["spec_hash"],
        updated_at=row["updated_at"].timestamp(),
    )


def finite(value: Any) -> Any:
    """``jsonb`` has no NaN or infinity: such numbers are stored as null, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


# --- rollouts ----------------------------------------------------------------------------------


async def insert_rollout(
    conn: asyncpg.Connection,
    *,
    rollout_id: str,
    spec: AnyPlan,
    state: RolloutState,
    pending: list[dict[str, Any]],
    created_by: str | None,
) -> asyncpg.Record:
    """Store a new rollout; raises ``asyncpg.UniqueViolationError`` when its target is live.
    An agent-configuration canary's traffic is known from the start: the share of new runs."""
    row: asyncpg.Record | None = await conn.fetchrow(
        """
        INSERT INTO rollouts (id, target, image, strategy, spec, spec_hash, phase, step_index,
                              step_started_at, extensions, weight, pause_reason, pending,
                              created_by, created_at, updated_at, kind, traffic_mode)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15, $16, $17)
        RETURNING *
        """,
        rollout_id,
        spec.target,
        spec.image,
        spec.strategy,
        spec_to_json(spec),
        state.spec_hash,
        state.phase,
        state.step_index,
        _at(state.step_started_at),
        state.extensions,
        state.weight,
        state.pause_reason,
        pending,
        created_by,
        _at(state.updated_at),
        spec.kind if isinstance(spec, AgentCanarySpec) else "deployment",
        spec.traffic if isinstance(spec, AgentCanarySpec) else None,
    )
    assert row is not None  # INSERT … RETURNING returns the row or raises
    return row


async def get_rollout(
    conn: asyncpg.Connection, rollout_id: str, *, lock: bool = False
) -> asyncpg.Record | None:
    sql = "SELECT * FROM rollouts WHERE id = $1" + (" FOR UPDATE" if lock else "")
    row: asyncpg.Record | None = await conn.fetchrow(sql, rollout_id)
    return row


async def live_rollout_of(conn: asyncpg.Connection, target: str) -> str | None:
    """The id of the target's rollout still in progress, if any."""
    found: str | None = await conn.fetchval(
        "SELECT id FROM rollouts WHERE target = $1"
        " AND phase NOT IN ('completed', 'aborted', 'rolled_back')",
        target,
    )
    return found


async def set_last_analysis(conn: asyncpg.Connection, rollout_id: str, analysis: Any) -> None:
    """The newest analysis of a rollout whose state did not change."""
    await conn.execute(
        "UPDATE rollouts SET last_analysis = $2 WHERE id = $1", rollout_id, finite(analysis)
    )


async def save_state(
    conn: asyncpg.Connection,
    rollout_id: str,
    state: RolloutState,
    pending: list[dict[str, Any]],
    *,
    last_analysis: dict[str, Any] | None = None,
) -> None:
    """The machine's new state and the pending actions (``last_analysis`` kept when None)."""
    await conn.execute(
        """
        UPDATE rollouts
           SET phase = $2, step_index = $3, step_started_at = $4, extensions = $5, weight = $6,
               pause_reason = $7, pending = $8, updated_at = $9,
               last_analysis = coalesce($10, last_analysis)
         WHERE id = $1
        """,
        rollout_id,
        state.phase,
        state.step_index,
        _at(state.step_started_at),
        state.extensions,
        state.weight,
        state.pause_reason,
        pending,
        _at(state.updated_at),
        finite(last_analysis) if last_analysis is not None else None,
    )


async def set_applied(
    conn: asyncpg.Connection,
    rollout_id: str,
    pending: list[dict[str, Any]],
    *,
    traffic_mode: str | None = None,
    split: str | None = None,
    effective_weight: float | None = None,
) -> None:
    """What is left to apply, and (when given) what applying it found out."""
    await conn.execute(
        """
        UPDATE rollouts
           SET pending = $2, traffic_mode = coalesce($3, traffic_mode),
               split = coalesce($4, split), effective_weight = coalesce($5, effective_weight)
         WHERE id = $1
        """,
        rollout_id,
        pending,
        traffic_mode,
        split,
        effective_weight,
    )


async def work_list(conn: asyncpg.Connection) -> list[str]:
    """Ids of the rollouts the controller looks at: live ones and those with pending actions."""
    rows = await conn.fetch(
        """
        SELECT id FROM rollouts
         WHERE phase NOT IN ('completed', 'aborted', 'rolled_back') OR pending <> '[]'::jsonb
         ORDER BY id
        """
    )
    return [r["id"] for r in rows]


async def list_rollouts(
    conn: asyncpg.Connection,
    *,
    limit: int,
    before_id: str | None,
    live_only: bool,
    kind: str | None = None,
) -> list[asyncpg.Record]:
    """Newest first (ids are ULIDs: they sort by creation time), a keyset page."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT * FROM rollouts
         WHERE ($1::text IS NULL OR id < $1)
           AND (NOT $2 OR phase NOT IN ('completed', 'aborted', 'rolled_back'))
           AND ($4::text IS NULL OR kind = $4)
         ORDER BY id DESC
         LIMIT $3
        """,
        before_id,
        live_only,
        limit,
        kind,
    )
    return rows


# --- events ------------------------------------------------------------------------------------


async def append_event(
    conn: asyncpg.Connection,
    rollout_id: str,
    kind: str,
    message: str,
    data: dict[str, Any] | None = None,
    *,
    at: datetime,
) -> int:
    new_id = await conn.fetchval(
        """
        INSERT INTO rollout_events (rollout_id, at, kind, message, data)
        VALUES ($1, $2, $3, $4, $5) RETURNING id
        """,
        rollout_id,
        at,
        kind,
        message,
        json.loads(json.dumps(finite(data or {}), default=str)),
    )
    return int(new_id)


async def list_events(conn: asyncpg.Connection, rollout_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM rollout_events WHERE rollout_id = $1 ORDER BY id", rollout_id
    )
    return rows
