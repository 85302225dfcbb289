"""The scaler's records as the API, the CLI and the dashboard show them.

Why a record per decision, holds included: an autoscaler is judged after the fact ("why did it
not scale out at 14:02?"), and the answer must be in the data, not in a log line that rotated
away. Each row carries the policy's ``factors`` (every input and intermediate it used), the
reason a person reads, and what was done about it (``applied``, ``error``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from quarterdeck.scaling.policy import FactorValue

ScalerMode = Literal["off", "dry-run", "metric", "kubernetes"]
"""``off``: no scaler loop. ``dry-run``: decide and record, act on nothing. ``metric``: export
the desired count (``claude_agent_scaler_desired_replicas``) for KEDA or an HPA to act on.
``kubernetes``: write the worker Deployment's scale subresource."""

Direction = Literal["up", "down", "hold"]


class DecisionRecord(BaseModel):
    """One stored decision of the leader's scaler."""

    id: int
    at: datetime
    policy: str
    mode: ScalerMode
    target: str = Field(description="namespace/deployment the decision is about")
    current: int = Field(description="replicas when the decision was made")
    desired: int = Field(description="replicas the policy wants")
    applied: int | None = Field(
        description="the replica count written to the target; null when nothing was written "
        "(a hold, dry-run or metric mode, or an error)"
    )
    direction: Direction
    reason: str
    factors: dict[str, FactorValue]
    error: str | None = None


class DecisionPage(BaseModel):
    items: list[DecisionRecord]
    next_cursor: str | None = Field(
        default=None, description="pass as ?cursor= for older decisions; null on the last page"
    )


class ScalerStatus(BaseModel):
    """What the scaler is set to do and what it last did (read from Postgres, any replica)."""

    mode: ScalerMode
    policy: str
    target: str | None
    interval_s: float
    config: dict[str, float | int]
    leader: bool = Field(description="this process holds the scaler's leadership")
    last: DecisionRecord | None = None
    last_age_s: float | None = Field(
        default=None, description="seconds since the newest stored decision"
    )
    stale: bool = Field(
        description="a scaler is configured but no decision was stored for 3 intervals "
        "(no leader, or the leader cannot reach Postgres or Kubernetes)"
    )
