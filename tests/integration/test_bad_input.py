"""Bad input never gives a 500 (issue 16): through the real app on the real embedded Postgres.

A NUL anywhere (body at any depth, query, path) is a 422 problem+json naming the field; so is an
event cursor past int64 and malformed JSON (line and column, field ``body``). Whatever slips past
the API's checks is still a 422 from the store, never a 500. The client does not re-raise app
exceptions, so a 500 is seen as a 500 rather than as an exception in the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from quarterdeck.app import create_app
from quarterdeck.runtime import Runtime
from quarterdeck.security.auth.permissions import Role
from quarterdeck.store.pool import UnstorableValue

pytestmark = pytest.mark.asyncio
ADMIN = "qd-admin-bad-input-" + "x" * 40
PROBLEM = "application/problem+json"
INT64 = 2**63 - 1


@pytest.fixture
async def rt(make_settings: Callable[..., Any]) -> AsyncIterator[Runtime]:
    runtime = Runtime(make_settings(health_monitor_enabled=False), with_workers=False)
    await runtime.start()
    yield runtime
    await runtime.stop()


def client_for(runtime: Runtime) -> httpx.AsyncClient:
    app = create_app(runtime.settings, runtime)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://qd")


@pytest.fixture
async def api(rt: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(rt) as c:
        yield c


def problem(r: httpx.Response, status: int = 422) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM), r.headers
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    return body


def fields(body: dict[str, Any]) -> list[str]:
    return [e["field"] for e in body.get("errors", [])]


NUL_CASES = [
    ("POST", "/v1/runs", {"prompt": "a\x00b"}, "prompt"),
    ("POST", "/v1/runs", {"prompt": "a", "metadata": {"x": "v\x00"}}, "metadata.x"),
    ("POST", "/v1/runs", {"prompt": "a", "metadata": {"k\x00": "v"}}, "metadata.k\\u0000"),
    ("POST", "/v1/runs", {"prompt": "a", "model": "claude\x00"}, "model"),
    (
        "POST",
        "/v1/runs",
        {"prompt": "a", "workspace": {"type": "git", "value": "https://github.com/a\x00"}},
        "workspace.value",
    ),
    (
        "POST",
        "/v1/runs/batch",
        {"runs": [{"prompt": "a"}, {"prompt": "b"}, {"prompt": "c"}, {"prompt": "d\x00"}]},
        "runs.3.prompt",
    ),
    ("GET", "/v1/runs?agent_type=%00", None, "query.agent_type"),
    ("GET", "/v1/runs?cursor=run_%00", None, "query.cursor"),
    ("GET", "/v1/runs/run_%00", None, "path.run_id"),
    ("GET", "/v1/runs/run_%00/events", None, "path.run_id"),
    ("GET", "/v1/incidents?service=a%00", None, "query.service"),
    ("GET", "/v1/audit/events?actor=%00", None, "query.actor"),
    ("GET", "/v1/gateway/calls?model=claude%00", None, "query.model"),
    ("GET", "/v1/tenants/acme%00/budget", None, "path.tenant"),
    ("PUT", "/v1/tenants/acme%00/budget", {"daily_usd": 5}, "path.tenant"),
    ("POST", "/v1/approvals/apr_x/approve", {"note": "ok\x00"}, "note"),
    ("POST", "/v1/approvals/apr_x/reject", {"note": "\x00"}, "note"),
    ("POST", "/v1/incidents/inc_x/ack", {"actor": "me\x00"}, "actor"),
    ("POST", "/v1/incidents/inc_x/resolve", {"note": "done\x00"}, "note"),
]


async def test_a_nul_anywhere_is_a_422_naming_the_field(api: httpx.AsyncClient) -> None:
    for method, url, body, field in NUL_CASES:  # one app for all: each case is one request
        r = await api.request(method, url, json=body)
        got = problem(r)
        assert field in fields(got), (method, url, got)
        assert "NUL" in got["detail"]
    # Nothing was stored, and the app keeps serving.
    assert (await api.get("/v1/runs")).json()["items"] == []


async def test_nul_checks_come_after_the_key_and_cover_key_names(
    make_settings: Callable[..., Any],
) -> None:
    settings = make_settings(
        auth_enabled=True,
        admin_api_key=ADMIN,
        health_monitor_enabled=False,
        rate_limit_key_per_minute=0,
        rate_limit_tenant_per_minute=0,
    )
    runtime = Runtime(settings, with_workers=False)
    await runtime.start()
    try:
        async with client_for(runtime) as c:
            admin = {"Authorization": f"Bearer {ADMIN}"}
            # No key: 401 first, as for any other bad request; the NUL is not even looked at.
            assert (await c.get("/v1/runs?agent_type=%00")).status_code == 401
            reader = (await runtime.auth.create("r", Role.auditor, "acme")).api_key
            denied = await c.post(
                "/v1/runs",
                json={"prompt": "a\x00"},
                headers={"Authorization": f"Bearer {reader}"},
            )
            assert denied.status_code == 403, denied.text  # permission before the 422
            made = await c.post(
                "/v1/admin/keys", headers=admin, json={"name": "ci\x00", "role": "submitter"}
            )
            assert fields(problem(made)) == ["name"]
            listed = await c.get("/v1/admin/keys?tenant=%00", headers=admin)
            assert fields(problem(listed)) == ["query.tenant"]
            body = {"name": "ci", "role": "submitter", "tenant": "acme"}
            ok = await c.post("/v1/admin/keys", headers=admin, json=body)
            assert ok.status_code == 201, ok.text
            key_id = ok.json()["id"]
            renamed = await c.patch(
                f"/v1/admin/keys/{key_id}", headers=admin, json={"name": "\x00"}
            )
            assert fields(problem(renamed)) == ["name"]
    finally:
        await runtime.stop()


async def test_the_store_answers_422_for_what_it_cannot_store(rt: Runtime) -> None:
    """The last resort behind the API's checks: Postgres' and asyncpg's data errors are the
    caller's input (422), not a 500 and not "database unavailable" (an int past int64 is an
    asyncpg ``InterfaceError``, which used to read as a connection failure: 503)."""
    with pytest.raises(UnstorableValue) as nul:
        async with rt.db.acquire() as conn:
            await conn.fetchval("SELECT $1::text", "a\x00b")
    assert nul.value.status == 422 and "0x00" in nul.value.detail
    with pytest.raises(UnstorableValue) as big:
        async with rt.db.transaction() as conn:
            await conn.fetchval("SELECT $1::int8", 2**64)
    assert "int64" in big.value.detail
    with pytest.raises(UnstorableValue):
        async with rt.db.acquire() as conn:
            await conn.fetchval("SELECT $1::numeric(5,2)", 10**9)
    assert await rt.db.run(lambda conn: conn.fetchval("SELECT 1")) == 1  # the pool is fine


async def test_a_nul_in_an_alertmanager_payload_is_a_422(api: httpx.AsyncClient) -> None:
    """The receiver reads its body itself (no declared model): the store's mapping answers."""
    payload = {
        "version": "4",
        "status": "firing",
        "receiver": "quarterdeck",
        "groupKey": "g",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "Bad\x00Name", "severity": "critical"},
                "annotations": {},
                "startsAt": "2026-12-06T10:00:00Z",
                "fingerprint": "f00",
            }
        ],
    }
    r = await api.post("/v1/alerts/alertmanager", json=payload)
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"].startswith(PROBLEM)


async def test_event_cursors_past_int64_are_422_naming_them(
    api: httpx.AsyncClient,
) -> None:
    run_id = (await api.post("/v1/runs", json={"prompt": "x"})).json()["id"]
    events = f"/v1/runs/{run_id}/events"
    assert (await api.get(events, params={"after": INT64})).json() == []
    for stream in ("false", "true"):
        big = await api.get(events, params={"after": INT64 + 1, "stream": stream})
        assert fields(problem(big)) == ["query.after"]
    for bad in (str(INT64 + 1), "99999999999999999999999", "abc", "-1", "\u00b2"):
        r = await api.get(
            events, params={"stream": "true"}, headers={"Last-Event-ID": bad.encode()}
        )
        assert fields(problem(r)) == ["header.Last-Event-ID"], bad
    checkpoints = await api.get("/v1/audit/checkpoints", params={"cursor": INT64 + 1})
    assert fields(problem(checkpoints)) == ["query.cursor"]


async def test_malformed_json_names_the_body_and_where(api: httpx.AsyncClient) -> None:
    r = await api.post(
        "/v1/runs",
        content=b'{\n  "prompt": "x",,\n}',
        headers={"content-type": "application/json"},
    )
    got = problem(r)
    assert fields(got) == ["body"]
    message = got["errors"][0]["message"]
    assert message.startswith("invalid JSON at line 2 column 17"), message
    assert "line 2 column 17" in got["detail"]


async def test_a_batch_replays_only_as_the_same_batch(api: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": "batch-16"}
    runs = [{"prompt": "a"}, {"prompt": "b"}, {"prompt": "c"}]
    first = await api.post("/v1/runs/batch", json={"runs": runs}, headers=key)
    assert first.status_code == 202, first.text
    again = await api.post("/v1/runs/batch", json={"runs": runs}, headers=key)
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    for other in (
        runs[:2],
        runs[:1],
        [*runs, {"prompt": "d"}],
        runs[::-1],
        [*runs[:2], {"prompt": "z"}],
    ):
        r = await api.post("/v1/runs/batch", json={"runs": other}, headers=key)
        assert problem(r, 409)["type"].endswith("idempotency-key-reused"), other
    listed = (await api.get("/v1/runs")).json()["items"]
    assert len(listed) == 3


async def test_a_run_that_ends_ends_its_pending_approvals(
    api: httpx.AsyncClient, rt: Runtime
) -> None:
    """Cancelled (queued or running) or finished any other way, the run's pending requests end
    as ``cancelled`` in the same transaction, and deciding one afterwards is a 409."""
    from quarterdeck.runs.attempt_repository import Finish
    from quarterdeck.runs.models import RunStatus

    async def held(run_id: str, tool_use_id: str = "toolu_1") -> str:
        approval = await rt.approvals.request(
            run_id=run_id,
            tenant="default",
            tool_use_id=tool_use_id,
            tool="run_command",
            tool_input={"command": "rm -rf build"},
            rule_id="r1",
            severity="high",
            reason="destructive",
        )
        return approval.id

    queued = (await api.post("/v1/runs", json={"prompt": "a"})).json()["id"]
    waiting = await held(queued)
    assert (await api.get(f"/v1/approvals/{waiting}")).json()["status"] == "pending"
    assert (await api.post(f"/v1/runs/{queued}/cancel")).json()["status"] == "cancelled"
    ended = (await api.get(f"/v1/approvals/{waiting}")).json()
    assert ended["status"] == "cancelled" and ended["decided_by"] == "run", ended
    assert "cancelled" in ended["note"]
    late = await api.post(f"/v1/approvals/{waiting}/approve", json={"note": "too late"})
    assert "already cancelled" in problem(late, 409)["detail"]
    pending = (await api.get("/v1/approvals")).json()
    assert waiting not in [a["id"] for a in pending]

    # A running run that fails: its request ends too; a decided one is left as it was.
    running = (await api.post("/v1/runs", json={"prompt": "b"})).json()["id"]
    claimed = await rt.run_store.claim(running, "worker-test")
    assert claimed is not None
    decided, open_ = await held(running, "toolu_a"), await held(running, "toolu_b")
    await api.post(f"/v1/approvals/{decided}/reject", json={"note": "no"})
    await rt.run_store.finish(
        Finish(running, RunStatus.failed, error="boom"), epoch=claimed[0].attempts
    )
    assert (await api.get(f"/v1/approvals/{open_}")).json()["status"] == "cancelled"
    assert (await api.get(f"/v1/approvals/{decided}")).json()["status"] == "rejected"
    # Still running: a requeue (running -> queued) is no end; nothing changes.
    other = (await api.post("/v1/runs", json={"prompt": "c"})).json()["id"]
    kept = await held(other)
    await rt.run_store.claim(other, "worker-test")
    assert (await api.get(f"/v1/approvals/{kept}")).json()["status"] == "pending"


async def test_a_nul_through_the_gateway_is_never_a_500(
    make_settings: Callable[..., Any],
) -> None:
    """The gateway relays bodies as they are (the upstream may take a NUL); its recorder must
    still store the call, or drop it alone, and keep recording the calls behind it."""
    settings = make_settings(provider="simulated", health_monitor_enabled=False)
    runtime = Runtime(settings, with_workers=False)
    await runtime.start()
    try:
        recorder = runtime.gateway.recorder  # type: ignore[attr-defined]
        async with client_for(runtime) as c:
            body = {
                "model": "simulated-sonnet",
                "max_tokens": 20,
                "messages": [{"role": "user", "content": "hi \x00 there"}],
                "metadata": {"user_id": "u\x00"},
            }
            for model in ("simulated-sonnet", "simulated-sonnet\x00"):
                r = await c.post("/v1/messages", json={**body, "model": model})
                assert r.status_code < 500, r.text
                if r.status_code >= 400:
                    assert r.json()["type"] == "error"  # Anthropic's envelope, not a problem
            assert await recorder.flush()
            before = recorder.written
            clean = {**body, "messages": [{"role": "user", "content": "hi"}], "metadata": {}}
            assert (await c.post("/v1/messages", json=clean)).status_code == 200
            assert await recorder.flush()
            assert recorder.written == before + 1 and recorder.pending == 0
    finally:
        await runtime.stop()
