"""Bounded request bodies, and the key checked before any body byte is read (issue 16), on the
full app (``create_app``, real Postgres, in process): 401 with the body unread, 413 at once for a
declared length and at the limit for a chunked body, problem+json on the API and Anthropic's
envelope on the gateway (its fast path and through the stack). After a refusal a short rest of
the body is skipped (the connection stays usable); a long one closes the connection."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from quarterdeck.app import create_app
from quarterdeck.runtime import Runtime
from quarterdeck.security.auth.body_gate import DRAIN_MAX
from quarterdeck.security.auth.dependencies import served_routes
from quarterdeck.ui import is_ui_path

ADMIN = "bootstrap-admin-key-for-body-limits-0123456789"
PROBLEM = "application/problem+json"
LIMIT, RUN_LIMIT, GATEWAY_LIMIT = 2048, 8192, 4096
CHUNK = 1024
MESSAGE = {"model": "simulated-sonnet", "max_tokens": 5, "messages": []}


class Upload:
    """A request body served chunk by chunk, counting what the app pulled."""

    def __init__(self, data: bytes, chunk: int = CHUNK) -> None:
        self.data, self.chunk, self.pulled = data, chunk, 0

    @classmethod
    def endless(cls, chunks: int = 4 * DRAIN_MAX // CHUNK) -> Upload:
        """Far more than any limit here and more than is ever skipped after a refusal."""
        return cls(b"x" * CHUNK * chunks)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.data), self.chunk):
            self.pulled += 1
            yield self.data[start : start + self.chunk]


Start = Callable[..., Any]


@pytest.fixture
async def start(make_settings: Callable[..., Any]) -> AsyncIterator[Start]:
    """An app on a started runtime, small limits; auth on unless told otherwise."""
    started: list[tuple[Runtime, httpx.AsyncClient]] = []

    async def go(**overrides: Any) -> tuple[Runtime, httpx.AsyncClient]:
        settings = make_settings(
            **{
                "auth_enabled": True,
                "admin_api_key": ADMIN,
                "health_monitor_enabled": False,
                "provider": "simulated",
                "rate_limit_key_per_minute": 0,
                "rate_limit_tenant_per_minute": 0,
                "max_body_bytes": LIMIT,
                "run_max_body_bytes": RUN_LIMIT,
                "gateway_max_body_bytes": GATEWAY_LIMIT,
                **overrides,
            }
        )
        rt = Runtime(settings, with_workers=False)
        await rt.start()
        app = create_app(settings, rt)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://qd")
        client.app = app  # type: ignore[attr-defined]
        started.append((rt, client))
        return rt, client

    yield go
    for rt, client in started:
        await client.aclose()
        await rt.stop()


def admin(**extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {ADMIN}", **extra}


def assert_problem(r: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["type"].endswith(f"/{slug}") and body["status"] == status
    return body


def assert_envelope(r: httpx.Response, status: int, error_type: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == error_type, body


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_no_key_is_401_before_any_body_byte_is_read(start: Start, declared: bool) -> None:
    _, c = await start()
    for path in ("/v1/runs", "/v1/admin/keys", "/v1/messages"):
        upload = Upload.endless()
        headers = {"content-type": "application/json"}
        if declared:
            headers["content-length"] = str(len(upload.data))
        r = await c.post(path, content=upload, headers=headers)
        assert r.status_code == 401, (path, r.text)
        # A declared body is never touched; a chunked one only skipped, up to DRAIN_MAX, to see
        # whether it ends soon enough to keep the connection.
        assert upload.pulled <= (0 if declared else DRAIN_MAX // CHUNK + 1), (path, upload.pulled)
        if path == "/v1/messages":
            assert_envelope(r, 401, "authentication_error")
        else:
            assert_problem(r, 401, "unauthenticated")
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.headers.get("connection") == "close", "a large unread body closes the connection"
    bad = Upload.endless()
    headers = {"authorization": "Bearer qd_wrong_key", "content-length": str(len(bad.data))}
    r = await c.post("/v1/runs", content=bad, headers=headers)
    assert_problem(r, 401, "unauthenticated")
    assert bad.pulled == 0


async def test_a_small_refused_body_keeps_the_connection(start: Start) -> None:
    _, c = await start()
    r = await c.post("/v1/runs", json={"prompt": "hi"})  # declared: the server skips it
    assert_problem(r, 401, "unauthenticated")
    assert "connection" not in r.headers
    small = Upload(b"x" * 10 * CHUNK)  # chunked: skipped here, to its end
    r = await c.post("/v1/runs", content=small)
    assert_problem(r, 401, "unauthenticated")
    assert "connection" not in r.headers and small.pulled == 10
    for path in ("/v1/runs", "/v1/messages"):
        expecting = Upload(b"x" * 10 * CHUNK)  # a client waiting for 100 Continue sends nothing
        r = await c.post(path, content=expecting, headers={"expect": "100-continue"})
        assert r.status_code == 401 and expecting.pulled == 0
        assert r.headers["connection"] == "close"


async def test_declared_length_over_the_limit_is_413_at_once(start: Start) -> None:
    _, c = await start()
    upload = Upload(b"{" + b" " * (LIMIT + 10) + b"}")
    headers = admin(**{"content-length": str(len(upload.data))})
    r = await c.post("/v1/admin/keys", content=upload, headers=headers)
    body = assert_problem(r, 413, "request-too-large")
    assert body["limit"] == LIMIT and str(LIMIT) in body["detail"]
    assert upload.pulled == 0
    assert "connection" not in r.headers  # small: left for the server to skip
    big = Upload.endless()  # declared, and longer than is ever skipped: the connection closes
    headers = admin(**{"content-length": str(len(big.data))})
    r = await c.post("/v1/admin/keys", content=big, headers=headers)
    assert_problem(r, 413, "request-too-large")
    assert big.pulled == 0 and r.headers["connection"] == "close"


async def test_a_chunked_body_is_cut_at_the_limit(start: Start) -> None:
    _, c = await start()
    upload = Upload.endless()
    r = await c.post("/v1/admin/keys", content=upload, headers=admin())
    body = assert_problem(r, 413, "request-too-large")  # not FastAPI's 400 for a cut body
    assert body["limit"] == LIMIT
    assert upload.pulled <= (LIMIT + DRAIN_MAX) // CHUNK + 2, "read past the limit and skip"
    assert r.headers["connection"] == "close"
    short = Upload(b"x" * 3 * LIMIT)  # over the limit, but ends soon: skipped, kept open
    r = await c.post("/v1/admin/keys", content=short, headers=admin())
    assert_problem(r, 413, "request-too-large")
    assert "connection" not in r.headers
    # Just under the limit streams through to the route, which answers for the body itself.
    fits = json.dumps({"name": "k" * 100, "role": "submitter", "tenant": "acme"}).encode()
    json_type = admin(**{"content-type": "application/json"})
    r = await c.post("/v1/admin/keys", content=Upload(fits, 16), headers=json_type)
    assert r.status_code == 201, r.text


async def test_run_submission_has_its_own_larger_limit(start: Start) -> None:
    _, c = await start()
    prompt = "p" * (LIMIT * 2)  # over the default limit, under the run limit
    r = await c.post("/v1/runs", json={"prompt": prompt}, headers=admin())
    assert r.status_code == 202, r.text
    r = await c.post("/v1/runs/batch", json={"runs": [{"prompt": prompt}]}, headers=admin())
    assert r.status_code in (200, 202), r.text
    r = await c.post("/v1/runs", json={"prompt": "p" * RUN_LIMIT}, headers=admin())
    assert_problem(r, 413, "request-too-large")
    r = await c.post("/v1/runs", content=Upload.endless(), headers=admin())
    assert assert_problem(r, 413, "request-too-large")["limit"] == RUN_LIMIT


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "through-the-stack"])
async def test_gateway_bodies_get_anthropics_413(start: Start, fast: bool) -> None:
    _, c = await start()
    if not fast:
        c.app.gateway_fast = None  # type: ignore[attr-defined]  # the routes in the router
    key = {"x-api-key": ADMIN}
    ok = await c.post("/v1/messages", json=MESSAGE, headers=key)
    assert ok.status_code == 200, ok.text
    big = json.dumps({**MESSAGE, "system": "s" * GATEWAY_LIMIT}).encode()
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        r = await c.post(path, content=big, headers={**key, "content-type": "application/json"})
        assert_envelope(r, 413, "request_too_large")
        assert "connection" not in r.headers
        upload = Upload.endless()
        r = await c.post(path, content=upload, headers=key)
        assert_envelope(r, 413, "request_too_large")
        assert upload.pulled <= (GATEWAY_LIMIT + DRAIN_MAX) // CHUNK + 2
        assert r.headers["connection"] == "close"


async def test_limits_hold_with_auth_off_too(start: Start) -> None:
    _, c = await start(auth_enabled=False)
    r = await c.post("/v1/runs", json={"prompt": "hi"})
    assert r.status_code == 202, r.text
    upload = Upload.endless()
    r = await c.post("/v1/incidents/inc_x/ack", content=upload)
    assert_problem(r, 413, "request-too-large")
    assert upload.pulled <= (LIMIT + DRAIN_MAX) // CHUNK + 2


async def test_every_route_taking_a_body_requires_a_key(start: Start) -> None:
    """The gate checks the key of every request with a body: true only while no route that
    takes one is open. A new open POST route must be exempted in the gate first. The
    dashboard's posts (``/ui``) carry a session cookie instead, which the gate checks for them
    (``test_ui_sessions.py``; every one is guarded: ``test_ui_route_walk.py``)."""
    _, c = await start()
    open_with_body = [
        (r.path, sorted(r.methods))
        for r in served_routes(c.app)  # type: ignore[attr-defined]
        if r.methods & {"POST", "PUT", "PATCH", "DELETE"}
        and not r.permissions
        and not is_ui_path(r.path)
    ]
    assert open_with_body == []
