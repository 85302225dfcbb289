"""The dashboard as a person sees it: a real Chromium against ``quarterdeck up``, auth on.

One deployment, one browser, a few dense walks. The model is the local Messages API stand-in,
answering by the marker in each run's prompt (so runs of every kind share one model): one run
writes a file (a diff), one calls ``sudo`` (the default policy holds it for approval), one
thinks for a long time (it stays running until cancelled), the rest answer at once.

Every page is checked for console errors and CSP violations and saved as a full-page screenshot
in ``test-artifacts/ui/`` for a person to look at.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect
from playwright.async_api import TimeoutError as PlaywrightTimeout

from quarterdeck.chaos.fake_http import Reply
from quarterdeck.chaos.messages_api import MessagesAPIServer, make_usage, message, text, tool_use
from tests.conftest import world_readable_tmpdir
from tests.e2e.conftest import Deployment
from tests.support.browser import Watch, launch, mark, same_document, shot

pytestmark = pytest.mark.e2e

ADMIN = "ui-browser-e2e-bootstrap-admin-key-0123456789"
MODEL = "claude-sonnet-4-5"
STEP_MS = 10_000  # one click or one element: fail fast and say which
WAIT_MS = 25_000  # a status a run reaches within seconds; generous for a loaded CI machine
NAV = {  # nav href -> (the page's <h1>, screenshot name)
    "/ui": ("Overview", "overview"),
    "/ui/runs": ("Runs", "runs"),
    "/ui/gateway": ("Gateway", "gateway"),
    "/ui/incidents": ("Incidents", "incidents"),
    "/ui/scaling": ("Scaling", "scaling"),
    "/ui/rollouts": ("Rollouts", "rollouts"),
    "/ui/reports": ("Reports", "reports"),
    "/ui/audit": ("Audit log", "audit"),
    "/ui/budgets": ("Budgets", "budgets"),
    "/ui/keys": ("API keys", "keys"),
}


def model(_: str, payload: Mapping[str, Any]) -> Reply:
    """The scripted model: the prompt's marker picks the dialogue, the turn its step."""
    prompt = json.dumps(payload.get("messages", [{}])[0])
    turn = 1 + sum(1 for m in payload.get("messages", []) if m.get("role") == "assistant")
    usage = make_usage(input_tokens=100, output_tokens=10)
    if "E2E-WRITE" in prompt:  # a second per turn: the page sees it queued or running first
        if turn == 1:
            call = tool_use("write_file", {"path": "hello.py", "content": "print('hi')\n"})
            return message(call, usage=usage, delay=1.5)
        return message(text("Wrote hello.py."), usage=usage, delay=1.0)
    if "E2E-HOLD" in prompt and turn == 1:
        call = tool_use("run_command", {"command": "sudo true; echo ran > proof.txt"})
        return message(call, usage=usage)
    if "E2E-SLEEP" in prompt:
        return message(text("Finally done."), usage=usage, delay=120)
    return message(text("Done."), usage=usage)


@pytest.fixture(scope="module")
def upstream() -> Iterator[MessagesAPIServer]:
    server = MessagesAPIServer().start()
    server.conversation = model  # type: ignore[assignment]
    yield server
    server.stop()


@pytest.fixture(scope="module")
def qd(upstream: MessagesAPIServer) -> Iterator[Deployment]:
    dep = Deployment(world_readable_tmpdir("qd-ui-e2e-"))
    dep.start(
        "up",
        QUARTERDECK_AUTH_ENABLED="true",
        QUARTERDECK_ADMIN_API_KEY=ADMIN,
        QUARTERDECK_PROVIDER="anthropic",
        ANTHROPIC_API_KEY="sk-ant-ui-e2e",
        QUARTERDECK_ANTHROPIC_BASE_URL=upstream.base_url,
        QUARTERDECK_DEFAULT_MODEL=MODEL,
        QUARTERDECK_DRAIN_TIMEOUT="2",
    )
    yield dep
    dep.stop_all()


class Api:
    """The API as the test's side channel: keys, runs submitted behind the page's back."""

    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, method: str, path: str, key: str, **kw: Any) -> Any:
        r = httpx.request(method, f"{self.url}{path}", headers={"x-api-key": key}, timeout=30, **kw)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def key(self, tenant: str, role: str = "submitter") -> dict[str, Any]:
        body = {"name": f"ui {role} of {tenant}", "role": role, "tenant": tenant}
        made: dict[str, Any] = self.call("POST", "/v1/admin/keys", ADMIN, json=body)
        return made

    def submit(self, key: str, prompt: str) -> str:
        body = {"prompt": prompt, "workspace": {"type": "empty"}}
        return str(self.call("POST", "/v1/runs", key, json=body)["id"])

    def run(self, key: str, run_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.call("GET", f"/v1/runs/{run_id}", key)
        return found

    async def until(self, what: str, check: Any, timeout: float = 25) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            await asyncio.sleep(0.2)
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@pytest.fixture(scope="module")
def api(qd: Deployment) -> Api:
    return Api(qd.url)


@pytest.fixture(scope="module")
def keys(api: Api) -> dict[str, str]:
    return {
        "a": str(api.key("tenant-a")["api_key"]),
        "b": str(api.key("tenant-b")["api_key"]),
    }


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        chromium = await launch(p)
        yield chromium
        await chromium.close()


@pytest.fixture
def watch() -> Watch:
    return Watch()


async def signed_in(browser: Browser, url: str, key: str, watch: Watch) -> Page:
    """A fresh browser profile (light scheme) signed in with ``key`` through the form."""
    context: BrowserContext = await browser.new_context(
        base_url=url, color_scheme="light", viewport={"width": 1280, "height": 800}
    )
    context.set_default_timeout(STEP_MS)
    page = watch.attach(await context.new_page())
    await page.goto("/ui/login")
    await page.fill("#api_key", key)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(lambda u: "/ui/login" not in u)
    return page


async def test_a_submitter_submits_watches_it_succeed_live_and_reads_its_diff(
    browser: Browser, qd: Deployment, api: Api, keys: dict[str, str], watch: Watch
) -> None:
    page = await signed_in(browser, qd.url, keys["a"], watch)
    await page.goto("/ui/runs")
    await expect(page.locator("h1")).to_have_text("Runs")
    form = page.locator("form#submit-run")
    await form.locator('textarea[name="prompt"]').fill("E2E-WRITE: write hello.py")
    await expect(form.locator('select[name="agent_type"]')).to_have_count(1)
    async with page.expect_navigation():  # a plain form: Post/Redirect/Get
        await form.get_by_role("button", name="Submit run").click()
    runs = api.call("GET", "/v1/runs", keys["a"])["items"]
    run_id = next(r["id"] for r in runs if r["prompt"].startswith("E2E-WRITE"))

    # Wherever the form's redirect landed (the list or the run), the status changes in place.
    badge = (
        page.locator("#run-status .status")
        if page.url.rstrip("/").endswith(run_id)
        else page.locator(f'tr[data-run-id="{run_id}"] .status')
    )
    await expect(badge).to_have_count(1)
    first = (await badge.inner_text()).strip()
    assert first in ("queued", "running"), f"the new run shows {first!r} before it ran"
    url, token = page.url, await mark(page)
    await expect(badge).to_have_text("succeeded", timeout=WAIT_MS)
    assert page.url == url and await same_document(page, token), (
        "the page navigated (or reloaded) to show the new status: it must update live"
    )
    watch.assert_clean("runs list / submit")

    await page.goto(f"/ui/runs/{run_id}")
    await expect(page.locator("h1")).to_contain_text(run_id)
    await expect(page.locator("#run-status .status")).to_have_text("succeeded")
    await expect(page.locator("section#timeline")).to_have_count(1)
    await shot(page, "run-detail")
    await page.locator("section#diff").get_by_role("link", name="Diff").click()
    await page.wait_for_url(f"**/ui/runs/{run_id}/diff")
    added = page.locator(".gi")
    await expect(added.first).to_be_visible()
    assert "print('hi')" in " ".join(await added.all_inner_texts())
    await shot(page, "diff")
    watch.assert_clean("run detail and diff")
    await page.context.close()


async def test_an_approval_a_cancel_and_a_confirmation_no_live_update_replaces(
    browser: Browser, qd: Deployment, api: Api, keys: dict[str, str], watch: Watch
) -> None:
    # The overview stays open in a first tab the whole time, as an operator's would: its live
    # stream and the runs list's share the process's one all-runs subscription.
    overview = await signed_in(browser, qd.url, keys["a"], watch)
    held = api.submit(keys["a"], "E2E-HOLD: sudo something")
    sleeper = api.submit(keys["a"], "E2E-SLEEP: think for a long time")
    pending = await api.until(
        "the held call's approval",
        lambda: [a for a in api.call("GET", "/v1/approvals", ADMIN) if a["run_id"] == held],
    )
    await api.until(
        "the sleeper to run", lambda: api.run(keys["a"], sleeper)["status"] == "running"
    )

    # The bulk-cancel confirmation stays open, word for word, while the list gets live news.
    page = watch.attach(await overview.context.new_page())
    await page.goto("/ui/runs")
    await page.evaluate(
        """() => { window.__qdSse = 0;
          document.body.addEventListener('htmx:sseMessage', () => { window.__qdSse += 1; }); }"""
    )
    await page.locator(f'tr[data-run-id="{sleeper}"] input[type=checkbox][data-row]').check()
    await page.get_by_role("button", name="Cancel selected").click()
    dialog = page.locator("dialog#qd-confirm")
    await expect(dialog).to_be_visible()
    said = await dialog.locator("#qd-confirm-text").inner_text()
    assert said.strip(), "the confirmation dialog says nothing"
    seen = await page.evaluate("() => window.__qdSse")
    quick = api.submit(keys["a"], "E2E-QUICK: answer at once")
    await api.until(
        "the quick run to succeed", lambda: api.run(keys["a"], quick)["status"] == "succeeded"
    )
    try:
        await page.wait_for_function(f"() => window.__qdSse > {seen}", timeout=WAIT_MS)
    except PlaywrightTimeout:
        raise AssertionError(
            "no live signal (htmx:sseMessage) reached the runs list after a run changed"
        ) from None
    await expect(dialog).to_be_visible()
    await expect(dialog.locator("#qd-confirm-text")).to_have_text(said)
    await shot(page, "runs-confirm")
    await dialog.get_by_role("button", name="Keep it").click()
    await expect(dialog).to_be_hidden()
    assert api.run(keys["a"], sleeper)["status"] == "running", "'Keep it' cancelled the run"
    watch.assert_clean("runs list with the bulk-cancel dialog")

    # A submitter cancels the long run from its page, confirming in the dialog.
    await page.goto(f"/ui/runs/{sleeper}")
    await expect(page.locator("#run-status .status")).to_have_text("running")
    await page.get_by_role("button", name="Cancel run").click()
    await expect(dialog).to_be_visible()
    async with page.expect_navigation():
        await dialog.locator("#qd-confirm-yes").click()
    await expect(page.locator("#run-status .status")).to_have_text("cancelled", timeout=WAIT_MS)
    watch.assert_clean("run detail: cancel")
    await page.context.close()

    # An operator of every tenant (here the admin) approves the held call on the run's page.
    admin = await signed_in(browser, qd.url, ADMIN, watch)
    await admin.goto(f"/ui/runs/{held}")
    await expect(admin.locator("#run-status .status")).to_have_text("running")
    async with admin.expect_navigation():
        await admin.locator('button[name="decision"][value="approve"]').click()
    await expect(admin.locator("#run-status .status")).to_have_text("succeeded", timeout=WAIT_MS)
    decided = api.call("GET", f"/v1/approvals/{pending[0]['id']}", ADMIN)
    assert decided["status"] == "approved", decided
    watch.assert_clean("run detail: approve")
    await admin.context.close()


async def test_a_revoked_key_and_another_tenant_stay_out(
    browser: Browser, qd: Deployment, api: Api, keys: dict[str, str], watch: Watch
) -> None:
    revoked = api.key("tenant-a")
    api.call("DELETE", f"/v1/admin/keys/{revoked['id']}", ADMIN)
    context = await browser.new_context(base_url=qd.url, color_scheme="light")
    context.set_default_timeout(STEP_MS)
    page = watch.attach(await context.new_page())
    await page.goto("/ui/login")
    await shot(page, "sign-in")
    await page.fill("#api_key", revoked["api_key"])
    login = f"{qd.url}/ui/login"
    with watch.expect_status(login):
        await page.get_by_role("button", name="Sign in").click()
        error = page.locator("#login-error")
        await expect(error).to_be_visible()
        await expect(error).to_contain_text("revoked")
    await shot(page, "sign-in-refused")
    watch.assert_clean("sign-in with a revoked key")
    await context.close()

    theirs = api.submit(keys["b"], "E2E-B: tenant b's own run")
    await api.until("B's run to end", lambda: api.run(keys["b"], theirs)["status"] == "succeeded")
    page = await signed_in(browser, qd.url, keys["a"], watch)
    await page.goto("/ui/runs")
    await expect(page.locator("tr[data-run-id]").first).to_be_visible()
    assert await page.locator(f'tr[data-run-id="{theirs}"]').count() == 0
    assert theirs not in await page.content(), "tenant A's runs list mentions B's run"
    where = f"{qd.url}/ui/runs/{theirs}"
    with watch.expect_status(where):
        answer = await page.goto(where)
        assert answer is not None and answer.status == 404, answer and answer.status
        await expect(page.locator("h1")).to_contain_text("404")
    await shot(page, "not-found")
    watch.assert_clean("tenant isolation")
    await page.context.close()


async def test_an_admin_visits_every_page_in_light_and_dark(
    browser: Browser, qd: Deployment, watch: Watch
) -> None:
    page = await signed_in(browser, qd.url, ADMIN, watch)
    links = page.locator('nav[aria-label="Main"] a')
    hrefs = [str(await a.get_attribute("href")) for a in await links.all()]
    assert hrefs == list(NAV), f"the admin's nav is {hrefs}"
    failures: list[str] = []
    for href, (title, name) in NAV.items():
        answer = await page.goto(href)
        status = answer.status if answer else None
        heading = (await page.locator("h1").first.inner_text()).strip()
        if status != 200 or heading != title:
            failures.append(f"{href}: HTTP {status}, <h1> {heading!r} (want {title!r})")
        await shot(page, name)
        failures += [f"{href}: {problem}" for problem in watch.take()]
    assert not failures, "pages that did not load cleanly:\n" + "\n".join(failures)

    await page.goto("/ui/runs")
    await page.locator("[data-theme-toggle]").click()
    await expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    await shot(page, "runs-dark")
    await page.locator("[data-theme-toggle]").click()  # the profile goes back as it was
    watch.assert_clean("dark mode")
    await page.context.close()
