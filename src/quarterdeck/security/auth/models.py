"""API key records, and the shapes the admin API and CLI show them in.

:class:`KeyRecord` is the stored row including the digest and never leaves the package;
:class:`ApiKey` is the public view (no digest, with a computed ``status``); the full key exists
only in :class:`CreatedKey`, returned once by the call that made it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from quarterdeck.security.auth.permissions import Permission, Role


class KeyStatus(StrEnum):
    active = "active"
    expired = "expired"
    revoked = "revoked"


@dataclass(frozen=True)
class KeyRecord:
    id: str
    prefix: str
    digest: bytes
    name: str
    tenant: str
    role: Role
    created_at: datetime
    created_by: str | None
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None
    gateway_fallback: tuple[str, ...] | None = None
    """Models the key's gateway calls may fail over to (see :data:`GATEWAY_FALLBACK_DOC`)."""
    last_used_at: datetime | None = None
    """When the key last authenticated a request, to within the usage writer's interval."""

    @classmethod
    def from_row(cls, row: Any) -> KeyRecord:
        fallback = row.get("gateway_fallback")
        return cls(
            id=row["id"],
            prefix=row["prefix"],
            digest=bytes(row["digest"]),
            name=row["name"],
            tenant=row["tenant"],
            role=Role(row["role"]),
            created_at=row["created_at"],
            created_by=row["created_by"],
            expires_at=row["expires_at"],
            revoked_at=row["revoked_at"],
            revoked_by=row["revoked_by"],
            gateway_fallback=tuple(fallback) if fallback is not None else None,
            last_used_at=row.get("last_used_at"),
        )

    def status(self, now: datetime) -> KeyStatus:
        if self.revoked_at is not None:
            return KeyStatus.revoked
        if self.expires_at is not None and self.expires_at <= now:
            return KeyStatus.expired
        return KeyStatus.active

    def public(self, now: datetime) -> ApiKey:
        return ApiKey(
            id=self.id,
            prefix=f"{self.prefix}{self.id}",
            name=self.name,
            tenant=self.tenant,
            role=self.role,
            status=self.status(now),
            created_at=self.created_at,
            created_by=self.created_by,
            expires_at=self.expires_at,
            revoked_at=self.revoked_at,
            revoked_by=self.revoked_by,
            last_used_at=self.last_used_at,
            gateway_fallback=list(self.gateway_fallback)
            if self.gateway_fallback is not None
            else None,
        )


GATEWAY_FALLBACK_DOC = (
    "Models this key's gateway calls may fail over to, before the first byte, when the model "
    "asked for is overloaded or down: null follows the deployment default "
    "(QUARTERDECK_GATEWAY_FALLBACK with QUARTERDECK_MODEL_FALLBACKS); [] never fails over; "
    '["*"] uses QUARTERDECK_MODEL_FALLBACKS even with that switch off; a list of models is '
    "tried in its order after the one asked for."
)
MAX_FALLBACK_MODELS = 8
MAX_MODEL_CHARS = 256


def check_gateway_fallback(value: list[str] | None) -> list[str] | None:
    """The value normalised (names stripped, duplicates dropped), or ValueError saying why not."""
    if value is None:
        return None
    models = list(dict.fromkeys(m.strip() for m in value))
    if len(models) > MAX_FALLBACK_MODELS:
        raise ValueError(f"at most {MAX_FALLBACK_MODELS} fallback models")
    for model in models:
        if not model or len(model) > MAX_MODEL_CHARS or not model.isprintable():
            raise ValueError(
                f"a fallback model is a name of 1 to {MAX_MODEL_CHARS} printable characters"
            )
    if "*" in models and len(models) > 1:
        raise ValueError("'*' (the deployment's chain) stands alone")
    return models


class ApiKey(BaseModel):
    id: str = Field(description="Public key id: safe to log; used to revoke.")
    prefix: str = Field(description="The non-secret start of the key, to recognise it by.")
    name: str
    tenant: str = Field(description="The tenant the key acts for; '*' for all tenants.")
    role: Role
    status: KeyStatus
    created_at: datetime
    created_by: str | None
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None
    last_used_at: datetime | None = Field(
        default=None,
        description="When the key last authenticated a request (written every 30 s, so up to "
        "that much behind); null if never since it was made.",
    )
    gateway_fallback: list[str] | None = Field(default=None, description=GATEWAY_FALLBACK_DOC)


class CreatedKey(ApiKey):
    api_key: str = Field(description="The key itself. Shown once: it is stored only hashed.")


class KeyList(BaseModel):
    items: list[ApiKey]


class KeyCreate(BaseModel):
    """Body of ``POST /v1/admin/keys``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="What the key is for.")
    role: Role
    tenant: str = Field(
        min_length=1, max_length=64, description="A tenant, or '*' (admin, operator, auditor)."
    )
    expires_at: datetime | None = Field(
        default=None, description="When the key stops working (must be in the future)."
    )
    gateway_fallback: list[str] | None = Field(default=None, description=GATEWAY_FALLBACK_DOC)

    _fallback = field_validator("gateway_fallback")(check_gateway_fallback)


class KeyUpdate(BaseModel):
    """Body of ``PATCH /v1/admin/keys/{id}``: what may change on a live key (only its gateway
    routing; role and tenant never change, a new key is made instead)."""

    model_config = ConfigDict(extra="forbid")

    gateway_fallback: list[str] | None = Field(description=GATEWAY_FALLBACK_DOC)

    _fallback = field_validator("gateway_fallback")(check_gateway_fallback)


class Me(BaseModel):
    """``GET /v1/me``: who the caller's key says it is, and what it may do."""

    key_id: str
    name: str
    role: Role
    tenant: str
    method: str
    permissions: list[Permission]
