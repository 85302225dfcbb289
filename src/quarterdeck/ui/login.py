"""Signing in and out of the dashboard.

Sign-in takes an API key (the same keys the API takes; with auth off, none) and answers with
an HttpOnly, SameSite=Strict session cookie scoped to ``/ui``. The sign-in form itself is
protected against login CSRF (a forged post signing a victim in as the attacker) with a
double-submit token: a random cookie set with the form, echoed in a hidden field.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from quarterdeck.security.auth import Unauthenticated
from quarterdeck.security.auth.sessions import SESSION_COOKIE, same_token
from quarterdeck.ui.guard import SigningOut, session_service
from quarterdeck.ui.paths import LOGIN_PATH, UI_PREFIX
from quarterdeck.ui.web import render

router = APIRouter()
LOGIN_COOKIE = "qd_login"


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a dashboard path only (never an open redirect)."""
    if value and value.startswith(UI_PREFIX) and not value.startswith("//") and "\\" not in value:
        if value.split("?")[0] != LOGIN_PATH:
            return value
    return UI_PREFIX


def _cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    secure = request.url.scheme == "https" or session_service(request).secure_cookies
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=UI_PREFIX,
        httponly=True,
        samesite="strict",
        secure=secure,
    )


def _form(request: Request, *, status: int = 200, error: str | None = None, nxt: str) -> Response:
    token = secrets.token_urlsafe(24)
    sessions = session_service(request)
    response = render(
        request,
        "login.html",
        None,
        status=status,
        login_token=token,
        error=error,
        next=nxt,
        auth_off=not sessions.auth_required,
    )
    _cookie(response, request, LOGIN_COOKIE, token, 3600)
    return response


@router.get(LOGIN_PATH, summary="Sign-in form")
async def login_form(request: Request, next: str | None = None) -> Response:
    return _form(request, nxt=safe_next(next))


@router.post(LOGIN_PATH, summary="Sign in with an API key")
async def login(
    request: Request,
    api_key: Annotated[str, Form(max_length=512)] = "",
    login_token: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str, Form(max_length=2048)] = UI_PREFIX,
) -> Response:
    nxt = safe_next(next)
    if not same_token(request.cookies.get(LOGIN_COOKIE), login_token) or not login_token:
        return _form(
            request,
            status=403,
            error="The sign-in form expired or came from another site. Try again.",
            nxt=nxt,
        )
    sessions = session_service(request)
    try:
        token, _ = await sessions.sign_in(api_key)
    except Unauthenticated as exc:
        return _form(request, status=401, error=f"Sign-in failed: {exc.detail}.", nxt=nxt)
    response = RedirectResponse(nxt, status_code=303)
    lifetime = int(sessions.lifetime.total_seconds())
    _cookie(response, request, SESSION_COOKIE, token, lifetime)
    response.delete_cookie(LOGIN_COOKIE, path=UI_PREFIX)
    return response


@router.post(f"{UI_PREFIX}/logout", summary="Sign out")
async def logout(request: Request, viewer: SigningOut) -> Response:
    await session_service(request).sign_out(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse(LOGIN_PATH, status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=UI_PREFIX)
    return response
