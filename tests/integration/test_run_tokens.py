"""Run tokens (``qd_run_...``) on a real Postgres, through the app a server runs (``create_app``,
its fast gateway path included) with authentication on and off: a token calls the gateway for
its run and nothing else, its calls are the run's (tenant, submitting key, run budget), and it
dies with the run (finished, cancelled, requeued, re-minted, erased)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest

from quarterdeck.app import create_app
from quarterdeck.chaos.messages_api import MessagesAPIServer, make_usage, message, text
from quarterdeck.exceptions import Fenced, ValidationFailed
from quarterdeck.kit.ids import new_id
from quarterdeck.runs.models import RunStatus
from quarterdeck.runs.store import Finish, PostgresRunStore, Requeue
from quarterdeck.runtime import Runtime
from quarterdeck.security.auth import Permission, Role, Unauthenticated
from quarterdeck.security.auth.principal import AuthMethod
from quarterdeck.security.auth.run_tokens import RUN_TOKEN_PREFIX, RunTokens, parse_run_token
from quarterdeck.store.pool import Database
from tests.conftest import eventually
from tests.unit.test_run_store import row

pytest_plugins = ["tests.support.fixtures"]

ADMIN = "bootstrap-admin-key-for-run-tokens-0123456789"
MODEL = "claude-sonnet-4-5"
BODY = {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Stack:
    rt: Runtime
    client: httpx.AsyncClient
    store: PostgresRunStore
    tokens: RunTokens
    db: Database
    upstream: MessagesAPIServer

    async def running_run(self, *, key_id: str | None, budget: Decimal | None = None) -> str:
        """A run of tenant ``acme`` claimed by a worker (``running``, attempt 1)."""
        run_id = new_id("run")
        await self.store.create(
            [(row(run_id, tenant="acme", key_id=key_id, budget_usd=budget), None)]
        )
        claimed = await self.store.claim(run_id, "w1")
        assert claimed is not None and claimed[0].attempts == 1
        return run_id

    async def messages(self, token: str, **headers: str) -> httpx.Response:
        return await self.client.post(
            "/v1/messages", json=BODY, headers={"Authorization": f"Bearer {token}", **headers}
        )

    async def calls(self, n: int) -> list[dict[str, Any]]:
        """The gateway calls recorded, once there are ``n`` of them (the recorder batches)."""
        found: list[dict[str, Any]] = []

        async def written() -> bool:
            nonlocal found
            async with self.db.acquire() as conn:
                rows = await conn.fetch("SELECT * FROM gateway_calls ORDER BY created_at")
            found = [dict(r) for r in rows]
            return len(found) >= n

        await eventually(written, timeout=10)
        return found


async def _stack(
    make_settings: Any, db: Database, upstream: MessagesAPIServer, *, auth: bool
) -> AsyncIterator[Stack]:
    settings = make_settings(
        auth_enabled=auth,
        admin_api_key=ADMIN if auth else None,
        health_monitor_enabled=False,
        provider="anthropic",
        anthropic_api_key="sk-ant-upstream-for-run-tokens",
        anthropic_base_url=upstream.base_url,
    )
    rt = Runtime(settings, with_workers=False)
    await rt.start()
    store = PostgresRunStore(db)
    try:
        transport = httpx.ASGITransport(app=create_app(settings, rt))
        async with httpx.AsyncClient(transport=transport, base_url="http://qd") as client:
            yield Stack(rt, client, store, RunTokens(db), db, upstream)
    finally:
        await store.aclose()
        await rt.stop()


@pytest.fixture
async def auth_on(
    make_settings: Any, db: Database, messages_api: MessagesAPIServer
) -> AsyncIterator[Stack]:
    async for stack in _stack(make_settings, db, messages_api, auth=True):
        yield stack


@pytest.fixture
async def auth_off(
    make_settings: Any, db: Database, messages_api: MessagesAPIServer
) -> AsyncIterator[Stack]:
    async for stack in _stack(make_settings, db, messages_api, auth=False):
        yield stack


def _anthropic_401(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"]["type"] == "authentication_error"


# -- auth on ----------------------------------------------------------------------------------
async def test_a_run_token_calls_the_gateway_as_its_run_and_nothing_else(auth_on: Stack) -> None:
    s = auth_on
    submitter = await s.rt.auth.create("ci", Role.submitter, "acme")
    run_id = await s.running_run(key_id=submitter.id)
    token = await s.tokens.mint(run_id, 1)
    assert token.startswith(RUN_TOKEN_PREFIX) and parse_run_token(token) == run_id

    ok = await s.messages(token)
    assert ok.status_code == 200, ok.text
    upstream_headers = s.upstream.requests[-1].headers
    assert all(token not in v for v in upstream_headers.values()), "the token stays home"
    same = await s.messages(token, **{"x-quarterdeck-run": run_id})  # repeating it is fine
    assert same.status_code == 200, same.text
    other = await s.messages(token, **{"x-quarterdeck-run": new_id("run")})
    assert other.status_code == 400 and "belongs to run" in other.json()["error"]["message"]
    calls = await s.calls(2)
    assert [(c["run_id"], c["tenant"], c["key_id"]) for c in calls] == [
        (run_id, "acme", submitter.id)
    ] * 2, "the run's, in its tenant, as its submitting key (that key's budget and tokens)"

    auth = {"Authorization": f"Bearer {token}"}
    assert (await s.client.get("/v1/models", headers=auth)).status_code == 200
    assert (await s.client.head("/")).status_code == 200
    refused = {
        ("GET", "/v1/runs"): None,
        ("GET", f"/v1/runs/{run_id}"): None,
        ("POST", "/v1/runs"): {"prompt": "spend more", "agent_type": "coder"},
        ("GET", "/v1/me"): None,
        ("GET", "/v1/admin/keys"): None,
        ("POST", "/v1/admin/keys"): {"name": "x", "role": "submitter", "tenant": "acme"},
        ("GET", f"/v1/keys/{submitter.id}/budget"): None,
        ("GET", "/v1/gateway/calls"): None,
        ("GET", "/v1/audit/events"): None,
    }
    for (method, path), body in refused.items():
        r = await s.client.request(method, path, headers=auth, json=body)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        assert "run token can only call the gateway" in r.text
    # The submitting key itself still reaches what it may (the token did not change it).
    key_auth = {"Authorization": f"Bearer {submitter.api_key}"}
    assert (await s.client.get(f"/v1/runs/{run_id}", headers=key_auth)).status_code == 200


async def test_the_token_dies_with_its_run_and_with_its_attempt(auth_on: Stack) -> None:
    s = auth_on
    finished = await s.running_run(key_id=None)
    token = await s.tokens.mint(finished, 1)
    assert (await s.messages(token)).status_code == 200
    await s.store.finish(Finish(finished, RunStatus.succeeded, result="ok"), epoch=1)
    _anthropic_401(await s.messages(token))

    cancelled = await s.running_run(key_id=None)
    token = await s.tokens.mint(cancelled, 1)
    principal = await s.rt.auth.authenticate(token)
    assert principal.key_id == f"run:{cancelled}" and principal.method is AuthMethod.run_token
    assert principal.permissions == frozenset({Permission.GATEWAY_USE})
    await s.store.cancel(cancelled, None)
    _anthropic_401(await s.messages(token))

    # Requeued (its worker lost it): dead at once, before any new attempt mints.
    requeued = await s.running_run(key_id=None)
    first = await s.tokens.mint(requeued, 1)
    assert await s.store.requeue([Requeue(requeued, "drain")], expect=None) == [requeued]
    _anthropic_401(await s.messages(first))
    again = await s.store.claim(requeued, "w2")
    assert again is not None and again[0].attempts == 2
    _anthropic_401(await s.messages(first))  # attempt 2 holds the run, not attempt 1
    with pytest.raises(Fenced):
        await s.tokens.mint(requeued, 1)  # a stalled attempt-1 worker cannot mint any more
    second = await s.tokens.mint(requeued, 2)
    assert (await s.messages(second)).status_code == 200
    _anthropic_401(await s.messages(first))
    rotated = await s.tokens.mint(requeued, 2)  # a re-mint replaces the attempt's own token too
    _anthropic_401(await s.messages(second))
    assert (await s.messages(rotated)).status_code == 200


async def test_bad_and_forged_tokens_are_401(auth_on: Stack) -> None:
    s = auth_on
    run_a = await s.running_run(key_id=None)
    run_b = await s.running_run(key_id=None)
    token_a = await s.tokens.mint(run_a, 1)
    secret_a = token_a.rsplit("_", 1)[1]
    forged = [
        f"qd_{run_b}_{secret_a}",  # a's secret under b's id: the digest binds the id
        f"qd_{run_a}_{'A' * 40}",
        token_a[:-1],
        token_a + "x",
        "qd_run_garbage",
        f"qd_run_{run_a}_{secret_a}",  # run id doubled
        f"qd_{new_id('run')}_{secret_a}",  # a run with no token (no such run)
    ]
    for bad in forged:
        _anthropic_401(await s.messages(bad))
        r = await s.client.get("/v1/runs", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    assert (await s.messages(token_a)).status_code == 200
    with pytest.raises(Unauthenticated, match="malformed"):
        await s.tokens.resolve("qd_run_garbage")
    with pytest.raises(ValidationFailed):
        await s.tokens.mint("run-9", 1)
    with pytest.raises(ValidationFailed):
        await s.tokens.mint(run_a, 0)
    with pytest.raises(Fenced):
        await s.tokens.mint(new_id("run"), 1)  # no such run


async def test_a_spent_run_budget_stops_the_token_with_429_no_retry(auth_on: Stack) -> None:
    s = auth_on
    run_id = await s.running_run(key_id=None, budget=Decimal("0.05"))
    token = await s.tokens.mint(run_id, 1)
    # 20k input tokens of Sonnet: $0.06 (+ output), over the run's $0.05 after one call.
    s.upstream.script([message(text("done"), usage=make_usage(20_000, 10))])
    first = await s.messages(token)
    assert first.status_code == 200, first.text
    (call,) = await s.calls(1)
    assert call["run_id"] == run_id and call["cost_usd"] > Decimal("0.05")
    refused = await s.messages(token)
    assert refused.status_code == 429, refused.text
    assert refused.headers["x-should-retry"] == "false"
    assert refused.json()["error"]["type"] == "billing_error"
    assert "run" in refused.json()["error"]["message"]
    assert len(s.upstream.requests) == 1, "the refused call never went upstream"


async def test_erasing_the_run_deletes_its_token(auth_on: Stack) -> None:
    s = auth_on
    run_id = await s.running_run(key_id=None)
    token = await s.tokens.mint(run_id, 1)
    await s.store.finish(Finish(run_id, RunStatus.failed, error="x"), epoch=1)
    erased = await s.store.erase_tenant("acme")
    assert run_id in erased.run_ids
    async with s.db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM run_tokens") == 0
    _anthropic_401(await s.messages(token))


# -- auth off ---------------------------------------------------------------------------------
async def test_with_auth_off_a_run_token_is_still_resolved_and_attributes_the_call(
    auth_off: Stack,
) -> None:
    s = auth_off
    run_id = await s.running_run(key_id=None)
    token = await s.tokens.mint(run_id, 1)
    assert (await s.client.post("/v1/messages", json=BODY)).status_code == 200  # dev: no key
    ok = await s.messages(token)
    assert ok.status_code == 200, ok.text
    dev, run = await s.calls(2)
    assert (dev["run_id"], dev["key_id"]) == (None, "dev")
    assert (run["run_id"], run["tenant"], run["key_id"]) == (run_id, "acme", f"run:{run_id}")
    auth = {"Authorization": f"Bearer {token}"}
    for method, path in (("GET", "/v1/runs"), ("GET", "/v1/me"), ("POST", "/v1/runs")):
        body = {"prompt": "p", "agent_type": "coder"} if method == "POST" else None
        r = await s.client.request(method, path, headers=auth, json=body)
        assert r.status_code == 403, (path, r.text)
    assert (await s.client.get("/v1/runs")).status_code == 200  # without it: the dev principal

    _anthropic_401(await s.messages("qd_run_garbage"))
    _anthropic_401(await s.messages(f"qd_{run_id}_{'b' * 40}"))
    # The body gate resolves it too, before the body: a dead token's oversized upload is a 401
    # (without the token it is the dev principal's, refused for its size: 413).
    upload = b"x" * (s.rt.settings.max_body_bytes + 1)
    r = await s.client.post("/v1/budgets", content=upload, headers={"x-api-key": "qd_run_x"})
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    assert (await s.client.post("/v1/budgets", content=upload)).status_code == 413
    await s.store.cancel(run_id, None)
    _anthropic_401(await s.messages(token))
