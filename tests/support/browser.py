"""A real browser for the dashboard's end-to-end test: Debian's Chromium driven by Playwright.

No browser is downloaded (``playwright install`` is never run): the system's
``/usr/bin/chromium`` is launched with flags that keep it off the network (the machine has
none, and without them Chromium keeps dialing Google and logs every refusal). As root Chromium
cannot use its sandbox, so ``--no-sandbox`` is passed only then. To drive a sandboxed Chromium
from a root test run, start it as another user and name its DevTools endpoint in
``QD_UI_E2E_CDP``::

    runuser -u nobody -- /usr/bin/chromium --headless --remote-debugging-port=9333 <QUIET flags>
    QD_UI_E2E_CDP=http://127.0.0.1:9333 pytest tests/e2e/test_ui_browser.py

:class:`Watch` collects what a person would never see but a broken page shows in the console:
script errors, CSP violations (an inline script or style the policy refused) and failed loads.
A page that is *meant* to answer 4xx (the 404 page, a refused sign-in) is declared with
:meth:`Watch.expect_status`, so only that document's own failed load is forgiven.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, ConsoleMessage, Page, Playwright

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "ui"
CDP_ENV = "QD_UI_E2E_CDP"
QUIET = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def sandboxed() -> bool:
    """Whether Chromium keeps its sandbox: not as root, where it refuses to start with it."""
    return os.geteuid() != 0


async def launch(p: Playwright) -> Browser:
    """Debian's Chromium, or the one already running at ``$QD_UI_E2E_CDP``."""
    endpoint = os.environ.get(CDP_ENV)
    if endpoint:
        return await p.chromium.connect_over_cdp(endpoint)
    args = QUIET if sandboxed() else ["--no-sandbox", *QUIET]
    return await p.chromium.launch(executable_path=str(CHROMIUM), args=args)


@dataclass
class Watch:
    """Console errors, page errors and CSP violations of one page, with where they happened."""

    problems: list[str] = field(default_factory=list)
    expected: set[str] = field(default_factory=set)

    def attach(self, page: Page) -> Page:
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(f"{page.url}: page error: {exc}"))
        return page

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type not in ("error", "warning"):
            return
        text = msg.text
        where = str(msg.location.get("url", "")) if msg.location else ""
        if "Failed to load resource" in text and (
            where in self.expected or where.endswith("/favicon.ico")
        ):
            return  # a page answering 4xx on purpose; the icon Chromium asks every site for
        if msg.type == "warning" and "Content Security Policy" not in text:
            return  # only CSP warnings matter (e.g. report-only); other warnings are noise
        self.problems.append(f"{where or '?'}: console {msg.type}: {text}")

    @contextmanager
    def expect_status(self, url: str) -> Iterator[None]:
        """The document at ``url`` answers 4xx on purpose: its failed load is not a problem."""
        self.expected.add(url)
        try:
            yield
        finally:
            self.expected.discard(url)

    def take(self) -> list[str]:
        found, self.problems = self.problems, []
        return found

    def assert_clean(self, where: str) -> None:
        found = self.take()
        assert not found, f"{where}: console errors or CSP violations:\n" + "\n".join(found)


async def shot(page: Page, name: str) -> Path:
    """A full-page screenshot, ``test-artifacts/ui/<name>.png`` (for people, not assertions)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def mark(page: Page) -> str:
    """Tag the current document; :func:`same_document` later proves it was never replaced."""
    token = secrets.token_hex(8)
    await page.evaluate("t => { window.__qdMarker = t; }", token)
    return token


async def same_document(page: Page, token: str) -> bool:
    found: Any = await page.evaluate("() => window.__qdMarker || null")
    return bool(found == token)
