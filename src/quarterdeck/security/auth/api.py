"""HTTP endpoints: ``/v1/admin/keys`` (key management, admin only) and ``/v1/me``.

Thin: parse, call :class:`AuthService`, shape the response. The acting key's id is recorded as
``created_by``/``revoked_by`` so the audit trail can say which key made which key.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from quarterdeck.exceptions import Unavailable
from quarterdeck.security.auth.dependencies import MaybeAuth, require
from quarterdeck.security.auth.errors import AuthOff
from quarterdeck.security.auth.keys import KEY_ID_RE
from quarterdeck.security.auth.models import (
    ApiKey,
    CreatedKey,
    KeyCreate,
    KeyList,
    KeyUpdate,
    Me,
)
from quarterdeck.security.auth.permissions import Permission
from quarterdeck.security.auth.principal import Principal
from quarterdeck.security.auth.service import AuthService

router = APIRouter(tags=["access control"])
KeyId = Annotated[str, Path(pattern=KEY_ID_RE.pattern, description="The public key id.")]


def _service(service: MaybeAuth) -> AuthService:
    """The auth service, required, with authentication on.

    While authentication is off every caller is an anonymous admin, so a key made (or revoked)
    over HTTP then would be the act of anyone who can reach the port, and a key made then would
    stay valid once authentication is on. So key management over HTTP needs authentication; the
    bootstrap path is ``quarterdeck keys create``, which needs the database credentials (more
    than any key: they could write the keys table directly).
    """
    if service is None:
        raise Unavailable("API keys are not available in this process")
    if not service.required:
        raise AuthOff(
            "key management over HTTP is refused while authentication is off: every caller "
            "acts as an admin here, and a key made now would stay valid once authentication is "
            "on. Turn it on (QUARTERDECK_AUTH_ENABLED=true) and use an admin key, or make keys "
            "with `quarterdeck keys create`, which needs the database credentials."
        )
    return service


Keys = Annotated[AuthService, Depends(_service)]


def actor(principal: Principal) -> str:
    return f"key:{principal.key_id}"


@router.post(
    "/v1/admin/keys",
    status_code=201,
    response_model=CreatedKey,
    summary="Create an API key (the key is in the response, once)",
)
async def create_key(
    body: KeyCreate,
    principal: Annotated[Principal, Depends(require(Permission.KEYS_WRITE))],
    keys: Keys,
) -> CreatedKey:
    return await keys.create(
        body.name,
        body.role,
        body.tenant,
        expires_at=body.expires_at,
        actor=actor(principal),
        gateway_fallback=body.gateway_fallback,
    )


@router.get("/v1/admin/keys", response_model=KeyList, summary="List API keys, newest first")
async def list_keys(
    _: Annotated[Principal, Depends(require(Permission.KEYS_READ))],
    keys: Keys,
    tenant: Annotated[str | None, Query(max_length=64)] = None,
    include_inactive: Annotated[bool, Query(description="Also revoked and expired keys.")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> KeyList:
    items = await keys.list_keys(tenant, include_inactive=include_inactive, limit=limit)
    return KeyList(items=items)


@router.get("/v1/admin/keys/{key_id}", response_model=ApiKey, summary="One API key")
async def get_key(
    key_id: KeyId,
    _: Annotated[Principal, Depends(require(Permission.KEYS_READ))],
    keys: Keys,
) -> ApiKey:
    return await keys.get(key_id)


@router.patch(
    "/v1/admin/keys/{key_id}",
    response_model=ApiKey,
    summary="Change a key's gateway fallback (applies within seconds on every replica)",
)
async def update_key(
    key_id: KeyId,
    body: KeyUpdate,
    principal: Annotated[Principal, Depends(require(Permission.KEYS_WRITE))],
    keys: Keys,
) -> ApiKey:
    return await keys.set_gateway_fallback(key_id, body.gateway_fallback, actor=actor(principal))


@router.delete(
    "/v1/admin/keys/{key_id}",
    response_model=ApiKey,
    summary="Revoke an API key (stops working within seconds on every replica)",
)
async def revoke_key(
    key_id: KeyId,
    principal: Annotated[Principal, Depends(require(Permission.KEYS_WRITE))],
    keys: Keys,
) -> ApiKey:
    return await keys.revoke(key_id, actor=actor(principal))


@router.get("/v1/me", response_model=Me, summary="The calling key: role, tenant, permissions")
async def me(principal: Annotated[Principal, Depends(require(Permission.SELF_READ))]) -> Me:
    return Me(
        key_id=principal.key_id,
        name=principal.name,
        role=principal.role,
        tenant=principal.tenant,
        method=principal.method.value,
        permissions=sorted(principal.permissions),
    )
