"""What the tenant-data API and CLI take and return: counts, never content."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class ErasureResult(BaseModel):
    """What one tenant erasure removed, per kind; the same numbers go into ``tenant.erased``."""

    tenant: str
    runs: int = Field(description="Runs deleted with every row that belongs to them.")
    rows: dict[str, int] = Field(description="Rows deleted per table.")
    workspaces: int = Field(description="Workspace trees (and their baselines) removed on disk.")
    api_keys_revoked: int
    audit_keys_destroyed: int = Field(
        description="Audit data keys crypto-shredded: the tenant's audit payloads are unreadable."
    )
    cancelled: int = Field(description="Runs still active that were cancelled first.")


class RetentionIn(BaseModel):
    retention: str = Field(
        description='How long finished runs are kept, e.g. "30d" or "1y".', max_length=32
    )


class RetentionOut(BaseModel):
    tenant: str
    retention_seconds: float
    retention_days: float
    overridden: bool = Field(description="False: the QUARTERDECK_RUN_RETENTION_DAYS default.")


class PurgeReport(BaseModel):
    """One run-data purge: runs deleted per tenant and rows per table."""

    ran_at: datetime
    runs: int
    by_tenant: dict[str, int]
    rows: dict[str, int]
    workspaces: int
