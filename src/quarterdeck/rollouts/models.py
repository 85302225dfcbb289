"""A rollout as the API, the CLI and the dashboard show it, and the request that starts one.

Why separate from :mod:`spec`: the spec is the frozen plan the pure code runs on; these are the
wire shapes (validated input, stored record with its state and history).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from quarterdeck.rollouts.machine import Phase
from quarterdeck.rollouts.spec import Strategy, TrafficMode

STRICT = ConfigDict(strict=True, extra="forbid")
"""Request bodies: a 0 is not false and "5" is not 5 (the OpenAPI document says so)."""


class CheckIn(BaseModel):
    model_config = STRICT

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    query: str = Field(
        min_length=1, max_length=4000, description="PromQL; {{version}} is the version label"
    )
    success: str | None = Field(default=None, max_length=500)
    failure: str | None = Field(default=None, max_length=500)


class RolloutCreate(BaseModel):
    """``POST /v1/rollouts``: what ``quarterdeck rollout start`` sends."""

    model_config = STRICT

    target: str = Field(
        default="claude-agent-api",
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=63,
        description="the Deployment rolled out",
    )
    image: str = Field(min_length=1, max_length=500, pattern=r"^[^\s]+$")
    strategy: Strategy = "canary"
    steps: str = Field(default="5,20,50,80,100", max_length=200, description="weights in %")
    pauses: str | None = Field(
        default=None, max_length=200, description="e.g. 5m,3m (last repeats; `manual` waits)"
    )
    traffic: TrafficMode = "auto"
    max_error_rate: float = Field(default=0.01, gt=0, lt=1)
    max_latency_p95_s: float = Field(default=5.0, gt=0, le=3600)
    min_throughput_ratio: float = Field(default=0.8, ge=0, le=10)
    min_samples: int | None = Field(default=None, ge=1, le=1_000_000)
    analysis_interval_s: float = Field(default=60.0, ge=5, le=3600)
    max_extensions: int = Field(default=3, ge=0, le=100)
    stable_soak_s: float = Field(default=600.0, ge=0, le=86_400)
    checks: list[CheckIn] = Field(default_factory=list, max_length=20)


class RolloutEvent(BaseModel):
    """One entry of a rollout's history: a transition, an action, or an analysis."""

    id: int
    at: datetime
    kind: Literal[
        "started",
        "step",
        "analysis",
        "action",
        "paused",
        "promoted",
        "aborted",
        "rolled_back",
        "completed",
        "error",
    ]
    message: str
    data: dict[str, Any] = Field(default_factory=dict)


class Rollout(BaseModel):
    id: str  # "ro_<ulid>"
    target: str
    image: str
    strategy: Strategy
    traffic: Literal["auto", "nginx", "replicas"] = Field(
        description="how traffic is actually shifted ('auto' until the controller resolved it)"
    )
    phase: Phase
    step_index: int
    steps: int
    weight: int = Field(description="the weight last applied, in %")
    effective_weight: float | None = Field(
        default=None, description="what that weight really is (replica ratio), in %"
    )
    split: str | None = Field(default=None, description="e.g. 'replicas: 1 canary of 4 pods'")
    pause_reason: str | None
    remaining_pause_s: float | None
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    spec: dict[str, Any]
    last_analysis: dict[str, Any] | None = None


class RolloutDetail(Rollout):
    events: list[RolloutEvent]


class RolloutPage(BaseModel):
    items: list[Rollout]
    next_cursor: str | None = None
