"""The gateway's records: one relayed call as it is billed, and the API's views of many.

:class:`GatewayCall` is built once per call, after the response ended (or the client left), by
the relay; the recorder writes it to ``gateway_calls`` in batches, off the response path. The
pydantic models below are what ``GET /v1/gateway/calls`` and ``/v1/gateway/usage`` return.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from quarterdeck.providers.types import Usage

Money = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]


@dataclass(slots=True)
class GatewayCall:
    """One ``POST /v1/messages`` relayed upstream: who, what, how it went, what it cost.

    ``cost_estimated`` is True when the model had no known price (priced by the fallback
    model) or the usage is a floor estimate (the stream ended before its final usage).
    ``hold_id`` is the budget hold this call settles; the recorder deletes it in the same
    transaction that inserts this row.
    """

    id: str
    created_at: datetime
    tenant: str
    key_id: str | None
    model: str
    stream: bool
    status: int
    usage: Usage = field(default_factory=Usage)
    web_search_requests: int = 0
    cost_usd: Decimal = Decimal(0)
    cost_estimated: bool = False
    served_model: str | None = None
    run_id: str | None = None
    session_id: str | None = None
    agent_id: str | None = None
    error_type: str | None = None
    ttfb_ms: float | None = None
    duration_ms: float = 0.0
    upstream_request_id: str | None = None
    client_disconnected: bool = False
    hold_id: str | None = None


class CallView(BaseModel):
    """A recorded call as the API shows it."""

    id: str
    created_at: datetime
    tenant: str
    key_id: str | None
    run_id: str | None
    session_id: str | None
    agent_id: str | None
    model: str
    served_model: str | None
    stream: bool
    status: int
    error_type: str | None
    input_tokens: int
    output_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    cache_read_tokens: int
    web_search_requests: int
    cost_usd: Money
    cost_estimated: bool
    ttfb_ms: float | None
    duration_ms: float
    upstream_request_id: str | None
    client_disconnected: bool


class CallPage(BaseModel):
    items: list[CallView]
    next_cursor: str | None = None


class CallFilter(BaseModel):
    """Query of ``GET /v1/gateway/calls``; newest first, ``cursor`` continues a page."""

    model_config = ConfigDict(extra="forbid")

    tenant: str | None = Field(default=None, max_length=64)
    key_id: str | None = Field(default=None, max_length=64)
    run_id: str | None = Field(default=None, max_length=64)
    session_id: str | None = Field(default=None, max_length=128)
    model: str | None = Field(default=None, max_length=200)
    status: int | None = Field(default=None, ge=100, le=599)
    since: datetime | None = None
    until: datetime | None = None
    limit: int = Field(default=50, ge=1, le=1000)
    cursor: str | None = Field(default=None, max_length=200)


UsageGroup = Literal["tenant", "key", "model", "session", "day"]


class UsageRow(BaseModel):
    """Totals of one group of calls."""

    group: dict[str, str | None]
    calls: int
    errors: int
    input_tokens: int
    output_tokens: int
    cache_write_tokens: int
    cache_read_tokens: int
    web_search_requests: int
    cost_usd: Money
    cost_estimated_calls: int


class UsageReport(BaseModel):
    since: datetime
    until: datetime
    group_by: list[UsageGroup]
    rows: list[UsageRow]
