"""Run and event shapes shared by the API, the CLI and the worker."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_NAME = r"^[a-z][a-z0-9_\-]{0,62}$"
_ID_SEARCH = re.compile(r"^run_[0-9A-HJKMNP-TV-Z]{1,26}$")


class RunStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    timed_out = "timed_out"
    max_turns = "max_turns"
    budget_exceeded = "budget_exceeded"

    @property
    def terminal(self) -> bool:
        return self not in (RunStatus.queued, RunStatus.running)

    @property
    def outcome(self) -> str:
        """The guide's coarse ``status`` label: success, error or cancelled."""
        if self is RunStatus.succeeded:
            return "success"
        if self is RunStatus.cancelled:
            return "cancelled"
        return "error"


TERMINAL = frozenset(s for s in RunStatus if s.terminal)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


class WorkspaceSpec(BaseModel):
    """Where a run's workspace starts from.

    ``empty``: an empty directory. ``path``: a directory on the server, copied. ``git``: a URL
    cloned with ``git``. ``tar``: a base64-encoded tar archive (the CLI uploads local directories
    this way).
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["empty", "path", "git", "tar"] = "empty"
    value: str | None = Field(default=None, max_length=70_000_000)

    @model_validator(mode="after")
    def _value_required(self) -> WorkspaceSpec:
        if self.type != "empty" and not self.value:
            raise ValueError(f"workspace of type {self.type!r} needs a value")
        return self


class RunCreate(BaseModel):
    """Body of ``POST /v1/runs``. Only ``prompt`` is required."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=200_000)
    agent_type: str | None = Field(default=None, pattern=_NAME)
    operation: str = Field(default="task", pattern=_NAME)
    model: str | None = Field(default=None, min_length=1, max_length=128)
    max_turns: int | None = Field(default=None, ge=1, le=10_000)
    timeout_s: float | None = Field(default=None, gt=0, le=7 * 86400)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=50)
    workspace: WorkspaceSpec | None = None
    budget_usd: float | None = Field(default=None, gt=0, le=1_000_000)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        """Postgres text and jsonb cannot hold U+0000: refuse it here (422), not at the insert."""
        if _has_nul(data):
            raise ValueError("text must not contain NUL (\\u0000) characters")
        return data

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must not be blank")
        return value


class RunBatchCreate(BaseModel):
    """Body of ``POST /v1/runs/batch``: up to 1,000 submissions, accepted all together or not."""

    model_config = ConfigDict(extra="forbid")

    runs: list[RunCreate] = Field(min_length=1, max_length=1000)


class AcceptedRun(BaseModel):
    id: str
    status: str = "queued"
    location: str


class RunBatchAccepted(BaseModel):
    count: int
    runs: list[AcceptedRun]


class Run(BaseModel):
    id: str
    tenant: str
    agent_type: str
    operation: str
    prompt: str
    model: str
    status: RunStatus
    attempts: int
    max_attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    input_tokens: int
    output_tokens: int
    cache_creation_tokens: int
    cache_read_tokens: int
    cost_usd: float | None
    turns: int
    result: str | None
    error: str | None
    idempotency_key: str | None
    params: dict[str, Any]
    budget_usd: float | None = None
    key_id: str | None = None
    """The API key that submitted the run (None without auth): its budget holds the run too."""
    changed_files: list[str] = Field(default_factory=list)
    quality_score: float | None = None
    coverage_percent: float | None = None
    quality: dict[str, Any] = Field(default_factory=dict)
    config_version: str | None = None
    """The agent configuration the run ran with: ``<type>@<hash of its effective settings>``."""
    canary_id: str | None = None
    """The agent-configuration canary that routed the run (``quarterdeck canary``), if any."""
    canary_arm: Literal["stable", "candidate"] | None = None

    @classmethod
    def from_row(cls, row: Any) -> Run:
        """A run read from the ``runs`` table (extra columns such as ``job_id`` are ignored).

        Validated rather than ``model_construct``-ed: with pydantic 2.14 construct is ~3x
        slower for this model (17 us against 6 us), because it resolves every default itself.
        """
        data = dict(row)
        data["cost_usd"] = float(data["cost_usd"]) if data.get("cost_known", True) else None
        if data.get("budget_usd") is not None:
            data["budget_usd"] = float(data["budget_usd"])
        data.pop("diff", None)  # served by GET /v1/runs/{id}/diff, not inlined
        return cls.model_validate(data)


class RunEvent(BaseModel):
    id: int
    run_id: str
    ts: datetime
    type: str
    turn: int | None
    data: dict[str, Any]


class RunPage(BaseModel):
    items: list[Run]
    next_cursor: str | None


class RunFilter(BaseModel):
    """What a run listing is narrowed to. ``tenant`` narrows an all-tenant reader's listing to
    one tenant (the caller's reach is passed separately, so a tenant's key naming another tenant
    gets nothing); ``q`` is a search: a run id (exact, or an id prefix) or words of the prompt."""

    status: list[RunStatus] | None = None
    agent_type: str | None = None
    model: str | None = None
    tenant: str | None = None
    q: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    cursor: str | None = None
    limit: int = 50

    def id_prefix(self) -> str | None:
        """The run id (or id prefix) ``q`` names, normalised (``run_`` lower, the rest upper),
        or None when ``q`` is not shaped like one."""
        text = (self.q or "").strip()
        if text[:4].lower() != "run_":
            return None
        text = "run_" + text[4:].upper()
        return text if _ID_SEARCH.fullmatch(text) else None

    def words(self) -> list[str]:
        """The words of ``q``, lower-cased, for the in-memory twin's prompt match."""
        return re.findall(r"\w+", (self.q or "").lower())
