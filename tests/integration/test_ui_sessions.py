"""Signing in to the dashboard: the session cookie, what ends a session, CSRF on every post."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from quarterdeck.runtime import Runtime
from quarterdeck.security.auth import Role
from tests.support.ui import HTML, browser_of, csrf_of, sign_in, started

ADMIN = "ui-sessions-bootstrap-admin-key-0123456789"


@pytest.fixture
async def rt(make_settings: object) -> AsyncIterator[Runtime]:
    settings = make_settings(auth_enabled=True, admin_api_key=ADMIN)  # type: ignore[operator]
    async with started(settings) as runtime:
        yield runtime


@pytest.fixture
async def browser(rt: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with browser_of(rt) as client:
        yield client


async def test_a_page_sends_a_stranger_to_sign_in_and_back(browser: httpx.AsyncClient) -> None:
    page = await browser.get("/ui/runs?status=failed", headers=HTML)
    assert page.status_code == 303
    assert page.headers["location"] == "/ui/login?next=%2Fui%2Fruns%3Fstatus%3Dfailed"
    # Not a browser: the API's answer, problem+json.
    api = await browser.get("/ui")
    assert api.status_code == 401
    assert api.headers["content-type"] == "application/problem+json"


async def test_sign_in_sets_a_strict_httponly_cookie_and_signs_out(
    rt: Runtime, browser: httpx.AsyncClient
) -> None:
    key = (await rt.auth.create("ui", Role.submitter, "acme")).api_key
    signed = await sign_in(browser, key, next="/ui/runs")
    assert signed.status_code == 303, signed.text
    assert signed.headers["location"] == "/ui/runs"
    cookie = next(h for h in signed.headers.get_list("set-cookie") if h.startswith("qd_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie  # development over plain HTTP: a Secure cookie never returns
    assert key not in cookie
    home = await browser.get("/ui", headers=HTML)
    assert home.status_code == 200 and "submitter" in home.text and "acme" in home.text
    csrf = await csrf_of(browser)
    # Signing out is a post like any other: without the CSRF token it is refused.
    assert (await browser.post("/ui/logout", headers=HTML)).status_code == 403
    out = await browser.post("/ui/logout", data={"csrf": csrf}, headers=HTML)
    assert out.status_code == 303
    browser.cookies.clear()
    # The old cookie's session is gone from the table, not just from this browser.
    assert (await browser.get("/ui", headers=HTML)).status_code == 303


async def test_revoking_the_key_ends_its_sessions(rt: Runtime, browser: httpx.AsyncClient) -> None:
    created = await rt.auth.create("ui", Role.operator, "*")
    assert (await sign_in(browser, created.api_key)).status_code == 303
    assert (await browser.get("/ui", headers=HTML)).status_code == 200
    await rt.auth.revoke(created.id)
    rt.auth.cache.clear()  # another replica's revocation reaches this one when its cache lapses
    assert (await browser.get("/ui", headers=HTML)).status_code == 303
    again = await sign_in(browser, created.api_key)
    assert again.status_code == 401 and "revoked" in again.text


async def test_bad_keys_run_tokens_and_forged_sign_in_forms_are_refused(
    browser: httpx.AsyncClient,
) -> None:
    assert (await sign_in(browser, "")).status_code == 401
    assert (await sign_in(browser, "qd_live_nonsense")).status_code == 401
    assert (await sign_in(browser, "qd_run_run_abc_secret")).status_code == 401
    # A cross-site form has no login cookie to echo: refused, and no session comes of it.
    forged = await browser.post(
        "/ui/login", data={"api_key": ADMIN, "login_token": "guess"}, headers=HTML
    )
    assert forged.status_code == 403
    assert "qd_session" not in forged.headers.get("set-cookie", "")


async def test_next_never_leaves_the_dashboard(browser: httpx.AsyncClient) -> None:
    for target in ("https://evil.example/", "//evil.example/ui", "/v1/admin/keys", "/ui\\x"):
        browser.cookies.clear()
        signed = await sign_in(browser, ADMIN, next=target)
        assert signed.headers["location"] == "/ui", target


async def test_posts_without_a_session_are_refused_before_their_body_is_read(
    browser: httpx.AsyncClient,
) -> None:
    big = b"x" * (5 * 1024 * 1024)
    refused = await browser.post(
        "/ui/logout", content=big, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert refused.status_code == 401


async def test_with_auth_off_the_dashboard_says_so_loudly(make_settings: object) -> None:
    settings = make_settings()  # type: ignore[operator]
    async with started(settings) as rt, browser_of(rt) as browser:
        form = await browser.get("/ui/login", headers=HTML)
        assert "Authentication is off" in form.text
        assert (await sign_in(browser, "")).status_code == 303
        home = await browser.get("/ui", headers=HTML)
        assert "Authentication is off" in home.text and "admin" in home.text


async def test_cookies_are_secure_when_asked_and_sessions_last_as_configured(
    make_settings: object,
) -> None:
    settings = make_settings(  # type: ignore[operator]
        auth_enabled=True, admin_api_key=ADMIN, ui_secure_cookies=True
    )
    async with started(settings) as rt:
        # Behind a proxy that ends TLS, requests arrive over plain HTTP: Secure all the same.
        async with browser_of(rt) as plain:
            form = await plain.get("/ui/login", headers=HTML)
            assert "Secure" in form.headers["set-cookie"]
    settings = make_settings(  # type: ignore[operator]
        auth_enabled=True, admin_api_key=ADMIN, ui_session_lifetime="1h"
    )
    async with started(settings) as rt, browser_of(rt, base_url="https://qd") as browser:
        signed = await sign_in(browser, ADMIN)
        cookie = next(h for h in signed.headers.get_list("set-cookie") if "qd_session=" in h)
        assert "Secure" in cookie and "Max-Age=3600" in cookie
