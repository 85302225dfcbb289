"""Local receivers for incident notifications: Slack, PagerDuty Events v2, a webhook, and SMTP.

All four run on one event loop in a daemon thread (uvicorn for HTTP, an ``asyncio`` server for
SMTP), so the code under test talks to them over real sockets exactly as it would to the real
services. Each records what it received and can be told to fail the next N requests, to drive
the notifier's retries. The SMTP server is a minimal RFC 5321 dialogue (no SMTP library is
installed): EHLO/HELO, MAIL, RCPT, DATA with dot-unstuffing, RSET, NOOP, QUIT.
"""

from __future__ import annotations

import asyncio
import atexit
import email
import email.policy
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

PD_SEVERITIES = {"critical", "error", "warning", "info"}


@dataclass
class Received:
    endpoint: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float  # time.monotonic() on arrival

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class Failure:
    remaining: int
    status: int = 500
    retry_after: float | None = None


@dataclass
class Mail:
    mail_from: str
    rcpt_to: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        msg = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


@dataclass
class Receivers:
    """HTTP endpoints ``/slack``, ``/pagerduty/v2/enqueue``, ``/webhook``, plus an SMTP port."""

    slack_min_interval: float = 0.0  # answer 429 to a Slack post sooner than this after the last
    received: list[Received] = field(default_factory=list)
    mails: list[Mail] = field(default_factory=list)
    port: int = 0
    smtp_port: int = 0
    _failures: dict[str, Failure] = field(default_factory=dict)
    _smtp_failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _last_slack: float = 0.0
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    # -- control ------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, endpoint: str) -> str:
        return f"{self.base_url}/{endpoint}"

    @property
    def pagerduty_base(self) -> str:
        return f"{self.base_url}/pagerduty"

    def fail(
        self, endpoint: str, times: int, status: int = 500, retry_after: float | None = None
    ) -> None:
        """Answer the next ``times`` requests to ``endpoint`` (slack, pagerduty, webhook) with
        ``status``; ``endpoint="smtp"`` makes the SMTP server answer 451 to DATA instead."""
        with self._lock:
            if endpoint == "smtp":
                self._smtp_failures = times
            else:
                self._failures[endpoint] = Failure(times, status, retry_after)

    def reset(self) -> None:
        with self._lock:
            self.received.clear()
            self.mails.clear()
            self._failures.clear()
            self._smtp_failures = 0
            self._last_slack = 0.0
            self.slack_min_interval = 0.0

    def requests(self, endpoint: str, *, ok_only: bool = False) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.endpoint == endpoint and (r.ok or not ok_only)]

    def delivered(self, endpoint: str) -> list[Received]:
        return self.requests(endpoint, ok_only=True)

    # -- HTTP ----------------------------------------------------------------------------------
    def _take_failure(self, endpoint: str) -> Failure | None:
        failure = self._failures.get(endpoint)
        if failure is None or failure.remaining <= 0:
            return None
        failure.remaining -= 1
        return failure

    async def _handle(self, request: Request, endpoint: str) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        now = time.monotonic()
        with self._lock:
            failure = self._take_failure(endpoint)
            if failure is not None:
                extra = {"retry-after": str(failure.retry_after)} if failure.retry_after else {}
                response: Response = PlainTextResponse(
                    "injected failure", failure.status, headers=extra
                )
            elif endpoint == "slack":
                response = self._slack(body, now)
            elif endpoint == "pagerduty":
                response = _pagerduty(body)
            else:
                response = JSONResponse({"ok": True})
            self.received.append(Received(endpoint, headers, body, response.status_code, now))
        return response

    def _slack(self, body: bytes, now: float) -> Response:
        """Slack answers ``ok`` as text/plain, ``invalid_payload`` 400, and 429 when too fast."""
        if self.slack_min_interval and now - self._last_slack < self.slack_min_interval:
            return PlainTextResponse("rate_limited", 429, headers={"retry-after": "1"})
        try:
            data = json.loads(body)
        except ValueError:
            return PlainTextResponse("invalid_payload", 400)
        if not isinstance(data, dict) or not (data.get("text") or data.get("blocks")):
            return PlainTextResponse("no_text", 400)
        self._last_slack = now
        return PlainTextResponse("ok")

    def routes(self) -> list[Route]:
        async def slack(request: Request) -> Response:
            return await self._handle(request, "slack")

        async def pagerduty(request: Request) -> Response:
            return await self._handle(request, "pagerduty")

        async def webhook(request: Request) -> Response:
            return await self._handle(request, "webhook")

        return [
            Route("/slack", slack, methods=["POST"]),
            Route("/pagerduty/v2/enqueue", pagerduty, methods=["POST"]),
            Route("/webhook", webhook, methods=["POST"]),
        ]

    # -- SMTP ----------------------------------------------------------------------------------
    async def _smtp_session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        async def reply(line: str) -> None:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        mail_from, rcpts = "", []
        await reply("220 receivers.test ESMTP test receiver")
        try:
            while True:
                raw = await reader.readline()
                if not raw:
                    return
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                verb = line[:4].upper()
                if verb == "EHLO":
                    await reply("250-receivers.test")
                    await reply("250 8BITMIME")
                elif verb == "HELO":
                    await reply("250 receivers.test")
                elif verb == "MAIL":
                    mail_from, rcpts = line.split(":", 1)[1].strip().strip("<>"), []
                    await reply("250 OK")
                elif verb == "RCPT":
                    rcpts.append(line.split(":", 1)[1].strip().strip("<>"))
                    await reply("250 OK")
                elif verb == "DATA":
                    await reply("354 End data with <CR><LF>.<CR><LF>")
                    lines: list[bytes] = []
                    while True:
                        chunk = await reader.readline()
                        if chunk in (b".\r\n", b".\n", b""):
                            break
                        lines.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                    with self._lock:
                        fail = self._smtp_failures > 0
                        if fail:
                            self._smtp_failures -= 1
                        else:
                            self.mails.append(Mail(mail_from, list(rcpts), b"".join(lines)))
                    await reply("451 Try again later" if fail else "250 OK queued")
                elif verb == "RSET":
                    mail_from, rcpts = "", []
                    await reply("250 OK")
                elif verb == "NOOP":
                    await reply("250 OK")
                elif verb == "QUIT":
                    await reply("221 Bye")
                    return
                else:
                    await reply("502 Command not implemented")
        finally:
            writer.close()

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            Starlette(routes=self.routes()),
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = server = uvicorn.Server(config)
        smtp_ready = threading.Event()

        async def main() -> None:
            smtp = await asyncio.start_server(self._smtp_session, "127.0.0.1", 0)
            self.smtp_port = smtp.sockets[0].getsockname()[1]
            smtp_ready.set()
            async with smtp:
                await server.serve(sockets=[sock])

        self._thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
        self._thread.start()
        for _ in range(500):
            if server.started and smtp_ready.is_set():
                return
            time.sleep(0.01)
        raise RuntimeError("receivers did not start")

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)


def _pagerduty(body: bytes) -> Response:
    """Validate like the Events API v2: 202 on success, 400 ``invalid event`` with errors."""
    try:
        event = json.loads(body)
    except ValueError:
        return JSONResponse({"status": "invalid event", "message": "Invalid JSON"}, 400)
    errors = []
    if not isinstance(event.get("routing_key"), str) or not event["routing_key"]:
        errors.append("'routing_key' is missing or blank")
    action = event.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        errors.append("'event_action' is invalid")
    if action in ("acknowledge", "resolve") and not event.get("dedup_key"):
        errors.append("'dedup_key' is required for acknowledge and resolve")
    if len(str(event.get("dedup_key", ""))) > 255:
        errors.append("'dedup_key' is longer than 255")
    if action == "trigger":
        payload = event.get("payload") or {}
        if not payload.get("summary") or len(payload["summary"]) > 1024:
            errors.append("'payload.summary' is missing or longer than 1024")
        if not payload.get("source"):
            errors.append("'payload.source' is missing")
        if payload.get("severity") not in PD_SEVERITIES:
            errors.append("'payload.severity' is invalid")
    if errors:
        return JSONResponse(
            {"status": "invalid event", "message": "Event object is invalid", "errors": errors},
            400,
        )
    return JSONResponse(
        {"status": "success", "message": "Event processed", "dedup_key": event.get("dedup_key")},
        202,
    )


_shared: Receivers | None = None
_shared_lock = threading.Lock()


def shared_receivers() -> Receivers:
    """One set of receivers per test process, started on first use (they bind real ports)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Receivers()
            _shared.start()
            atexit.register(_shared.stop)
    return _shared


@pytest.fixture
def receivers() -> Iterator[Receivers]:
    """The shared receivers, emptied before and after each test."""
    rec = shared_receivers()
    rec.reset()
    yield rec
    rec.reset()
