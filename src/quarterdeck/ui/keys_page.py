"""The API keys page: list, create and revoke keys, as ``/v1/admin/keys`` does.

The same service calls, request model, validation and acting key (``created_by`` /
``revoked_by`` is ``key:<id>`` of the signed-in key) as the API, and the same refusal while
authentication is off: a key made by "anyone who can reach the port" would outlive that.

A new key's secret is shown once, in the answer to the post that made it (never in a URL or a
redirect, which browsers keep in history and logs), on a page no cache may keep. Revoking the
key a session signed in with works like revoking any other: the session ends with it, so the
next page asks to sign in again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from quarterdeck.exceptions import Unavailable, ValidationFailed
from quarterdeck.kit.wiring import services
from quarterdeck.security.auth import Role
from quarterdeck.security.auth.api import actor
from quarterdeck.security.auth.errors import AuthOff
from quarterdeck.security.auth.keys import KEY_ID_RE
from quarterdeck.security.auth.models import ApiKey, KeyCreate
from quarterdeck.security.auth.service import AuthService
from quarterdeck.ui.confirm import ask, confirmed
from quarterdeck.ui.guard import KeysReader, KeysWriter
from quarterdeck.ui.web import Viewer, render

router = APIRouter()
KeyId = Annotated[str, Path(pattern=KEY_ID_RE.pattern)]
NEVER = "none"
"""What the fallback field takes for "never fail over" (the API's ``[]``)."""


def _keys(request: Request) -> AuthService:
    """The auth service, with ``auth/api.py``'s refusal while authentication is off."""
    service = services(request.app).get(AuthService)
    if service is None:
        raise Unavailable("API keys are not available in this process")
    if not service.required:
        raise AuthOff(
            "key management is refused while authentication is off: every caller acts as an "
            "admin here, and a key made now would stay valid once authentication is on. Turn "
            "it on (QUARTERDECK_AUTH_ENABLED=true) and sign in with an admin key, or make keys "
            "with `quarterdeck keys create`."
        )
    return service


async def _page(
    request: Request,
    viewer: Viewer,
    keys: AuthService,
    *,
    tenant: str = "",
    role: str = "",
    include_inactive: bool = False,
    form: dict[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    items: list[ApiKey] = await keys.list_keys(
        tenant.strip() or None, include_inactive=include_inactive
    )
    if role:
        items = [k for k in items if k.role.value == role]
    return render(
        request,
        "keys.html",
        viewer,
        status=status,
        keys=items,
        roles=[r.value for r in Role],
        filters={"tenant": tenant, "role": role, "include_inactive": include_inactive},
        form=form
        or {
            "name": "",
            "role": Role.submitter.value,
            "tenant": "",
            "expires_at": "",
            "gateway_fallback": "",
        },
        never=NEVER,
        error=error,
    )


@router.get("/ui/keys", summary="API keys")
async def keys_page(
    request: Request,
    viewer: KeysReader,
    tenant: Annotated[str, Query(max_length=64)] = "",
    role: Annotated[str, Query(max_length=16)] = "",
    include_inactive: bool = False,
) -> Response:
    """``GET /v1/admin/keys`` (newest first, up to its 1000), filtered by role here."""
    if role and role not in {r.value for r in Role}:
        role = ""
    return await _page(
        request,
        viewer,
        _keys(request),
        tenant=tenant,
        role=role,
        include_inactive=include_inactive,
    )


def _expires(value: str) -> datetime | None:
    """``datetime-local`` has no zone: the form says UTC, and so it is read."""
    value = value.strip()
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValidationFailed(
            "expires_at: not a time (e.g. 2027-01-01T00:00, UTC)",
            errors=[{"field": "expires_at", "message": str(exc)}],
        ) from exc
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def _fallback(value: str) -> list[str] | None:
    """Blank: the deployment default (null); ``none``: never ([]); else a comma list."""
    value = value.strip()
    if not value:
        return None
    if value.lower() == NEVER:
        return []
    return [m.strip() for m in value.split(",")]


def _body(form: dict[str, str]) -> KeyCreate:
    """``POST /v1/admin/keys``'s body from the form, validated by the same model."""
    try:
        return KeyCreate.model_validate(
            {
                "name": form["name"].strip(),
                "role": form["role"],
                "tenant": form["tenant"].strip(),
                "expires_at": _expires(form["expires_at"]),
                "gateway_fallback": _fallback(form["gateway_fallback"]),
            }
        )
    except ValidationError as exc:
        problems = [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()
        ]
        detail = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        raise ValidationFailed(detail, errors=problems) from exc


@router.post("/ui/keys", summary="Create an API key")
async def create_key(request: Request, viewer: KeysWriter) -> Response:
    """``POST /v1/admin/keys``; the answer is the one page that shows the key."""
    keys = _keys(request)
    posted = await request.form()
    form = {
        name: value if isinstance(value := posted.get(name), str) else ""
        for name in ("name", "role", "tenant", "expires_at", "gateway_fallback")
    }
    try:
        body = _body(form)
        created = await keys.create(
            body.name,
            body.role,
            body.tenant,
            expires_at=body.expires_at,
            actor=actor(viewer.principal),
            gateway_fallback=body.gateway_fallback,
        )
    except ValidationFailed as exc:
        return await _page(
            request, viewer, keys, form=form, error=f"Key not created: {exc.detail}", status=422
        )
    return render(
        request,
        "key_created.html",
        viewer,
        status=201,
        headers={"Cache-Control": "no-store, max-age=0", "Pragma": "no-cache"},
        key=created,
    )


@router.post("/ui/keys/{key_id}/revoke", summary="Revoke an API key")
async def revoke_key(request: Request, key_id: KeyId, viewer: KeysWriter) -> Response:
    """``DELETE /v1/admin/keys/{key_id}``, after a confirmation."""
    keys = _keys(request)
    await keys.get(key_id)  # no such key: 404 now, not after the question
    if not await confirmed(request):
        own = " This is the key you are signed in with: you will be signed out." * (
            key_id == viewer.principal.key_id
        )
        return await ask(
            request,
            viewer,
            message=f"Revoke API key {key_id}? Every client using it stops working.{own}",
            verb="revoke it",
            back="/ui/keys",
        )
    await keys.revoke(key_id, actor=actor(viewer.principal))
    return RedirectResponse("/ui/keys", status_code=303)
