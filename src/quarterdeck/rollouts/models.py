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


class CanaryCreate(BaseModel):
    """``POST /v1/canaries``: a share of new runs of ``agent_type`` gets the candidate settings
    (what ``quarterdeck canary start`` sends)."""

    model_config = STRICT

    agent_type: str = Field(pattern=r"^[a-z][a-z0-9_\-]{0,62}$")
    set: dict[str, str | int | float | None] = Field(
        min_length=1,
        max_length=8,
        description="the candidate's settings: model, system_prompt, max_turns, max_tokens, "
        "thinking_budget, cache_ttl, timeout_s, budget_usd",
    )
    steps: str = Field(default="10,25,50,100", max_length=200, description="shares of new runs, %")
    pauses: str | None = Field(
        default="15m", max_length=200, description="e.g. 15m (last repeats; `manual` waits)"
    )
    analysis_interval_s: float = Field(default=60.0, ge=1, le=3600)
    max_extensions: int = Field(default=10, ge=0, le=1000)
    min_runs: int | None = Field(default=None, ge=1, le=1_000_000, description="per arm")
    max_success_drop: float = Field(default=0.05, gt=0, lt=1)
    max_cost_increase: float = Field(default=0.10, ge=0, le=100)
    max_turns_increase: float = Field(default=0.25, ge=0, le=100)
    max_duration_increase: float = Field(default=0.50, ge=0, le=100)
    max_quality_drop: float = Field(default=0.10, ge=0, le=1)
    max_coverage_drop: float = Field(default=5.0, ge=0, le=100)


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
    kind: Literal["deployment", "agent-config"] = Field(
        default="deployment",
        description="a Deployment's image, or an agent type's configuration (target agent:<type>)",
    )
    target: str
    image: str
    strategy: Strategy
    traffic: Literal["auto", "nginx", "replicas", "runs"] = Field(
        description="how traffic is actually shifted ('auto' until the controller resolved it; "
        "'runs': the share of new runs of an agent type)"
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
