"""Signing in to the dashboard from tests (httpx against the ASGI app, or a live server)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from quarterdeck.app import create_app
from quarterdeck.config import Settings
from quarterdeck.runtime import Runtime

LOGIN_TOKEN = re.compile(r'name="login_token" value="([^"]+)"')
CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
HTML = {"accept": "text/html"}


async def sign_in(
    client: httpx.AsyncClient, api_key: str = "", *, next: str = "/ui"
) -> httpx.Response:
    """Post the sign-in form as a browser would (its login token cookie and field)."""
    form = await client.get("/ui/login", headers=HTML)
    match = LOGIN_TOKEN.search(form.text)
    assert match, form.text[:500]
    return await client.post(
        "/ui/login",
        data={"api_key": api_key, "login_token": match.group(1), "next": next},
        headers=HTML,
    )


async def csrf_of(client: httpx.AsyncClient, page: str = "/ui") -> str:
    """The session's CSRF token, as a page carries it."""
    response = await client.get(page, headers=HTML)
    match = CSRF.search(response.text)
    assert match, f"{page}: {response.status_code} {response.text[:300]}"
    return match.group(1)


@asynccontextmanager
async def started(settings: Settings) -> AsyncIterator[Runtime]:
    """A runtime with the API's services and no workers (runs stay where a test puts them)."""
    runtime = Runtime(settings, with_workers=False)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


@asynccontextmanager
async def browser_of(
    rt: Runtime,
    api_key: str | None = None,
    *,
    app: FastAPI | None = None,
    base_url: str = "http://qd",
) -> AsyncIterator[httpx.AsyncClient]:
    """A cookie-keeping client of ``rt``'s app, in process; signed in when given a key."""
    app = app or create_app(rt.settings, rt)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        if api_key is not None:
            assert (await sign_in(client, api_key)).status_code == 303
        yield client
