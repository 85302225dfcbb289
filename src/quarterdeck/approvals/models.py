"""Approval requests and decisions as the API shows them; see :mod:`.service` for the life cycle."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ApprovalStatus = Literal["pending", "approved", "rejected", "expired", "cancelled"]
"""``cancelled``: the run ended while the request was pending (nobody can act on it any more)."""


class Approval(BaseModel):
    id: str
    run_id: str
    tenant: str
    tool_use_id: str
    tool: str
    input: dict[str, Any]
    rule_id: str
    severity: str
    reason: str
    status: ApprovalStatus
    requested_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    note: str | None


class Decision(BaseModel):
    """Body of ``POST /v1/approvals/{id}/approve|reject``."""

    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=2000)
