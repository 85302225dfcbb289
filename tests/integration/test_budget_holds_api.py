"""``GET``/``PUT /v1/keys/{key_id}/budget`` with authentication on (real Postgres, real keys):
who may read and set a key's budget, what the spend includes, and bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI

from quarterdeck.app import install_error_handlers
from quarterdeck.budgets import api as budgets_api
from quarterdeck.budgets.holds import BudgetHolds
from quarterdeck.budgets.models import BudgetExceeded
from quarterdeck.budgets.service import BudgetService
from quarterdeck.kit.wiring import services
from quarterdeck.security.auth import AuthService, Role
from quarterdeck.store.pool import Database


class Api:
    def __init__(self, client: httpx.AsyncClient, auth: AuthService) -> None:
        self.client = client
        self.auth = auth

    async def key(self, role: Role, tenant: str) -> tuple[str, str]:
        """(key id, the key itself)."""
        created = await self.auth.create(f"{role}-{tenant}", role, tenant)
        return created.id, created.api_key

    async def get(self, key_id: str, key: str) -> httpx.Response:
        return await self.client.get(f"/v1/keys/{key_id}/budget", headers={"x-api-key": key})

    async def put(self, key_id: str, key: str, body: object) -> httpx.Response:
        return await self.client.put(
            f"/v1/keys/{key_id}/budget", headers={"Authorization": f"Bearer {key}"}, json=body
        )


@pytest.fixture
async def api(db: Database) -> AsyncIterator[Api]:
    auth = AuthService(db, required=True)
    app = FastAPI()
    install_error_handlers(app)
    services(app).add(BudgetService, BudgetService(db))
    services(app).add(AuthService, auth)
    app.include_router(budgets_api.router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://qd") as client:
        yield Api(client, auth)


async def test_operator_sets_a_key_budget_and_the_gateway_enforces_it(
    api: Api, db: Database
) -> None:
    _, operator = await api.key(Role.operator, "*")
    key_id, submitter = await api.key(Role.submitter, "acme")
    now = datetime.now(UTC)
    async with db.acquire() as conn:
        await conn.execute(
            "INSERT INTO gateway_calls (id, created_at, tenant, key_id, model, stream, status,"
            " cost_usd) VALUES ('c1', $1, 'acme', $2, 'm', true, 200, 0.25)",
            now,
            key_id,
        )
    put = await api.put(key_id, operator, {"daily_usd": 1, "monthly_usd": 10})
    assert put.status_code == 200, put.text
    body = put.json()
    assert body["key_id"] == key_id and body["tenant"] == "acme"
    assert body["daily_limit_usd"] == 1 and body["daily_spent_usd"] == 0.25
    assert body["daily_remaining_usd"] == 0.75 and body["monthly_remaining_usd"] == 9.75

    holds = BudgetHolds(db)
    hold = await holds.reserve(tenant="acme", key_id=key_id, run_id=None, amount=Decimal("0.5"))
    assert hold is not None
    got = await api.get(key_id, submitter)  # a key of the same tenant may read it
    assert got.status_code == 200, got.text
    assert got.json()["daily_spent_usd"] == 0.75, "a hold in flight counts as spent"
    with pytest.raises(BudgetExceeded) as exc:
        await holds.reserve(tenant="acme", key_id=key_id, run_id=None, amount=Decimal("0.5"))
    assert exc.value.scope == "key" and exc.value.retry_after_s is not None

    cleared = await api.put(key_id, operator, {"daily_usd": None, "monthly_usd": None})
    assert cleared.json()["daily_limit_usd"] is None
    assert cleared.json()["daily_remaining_usd"] is None
    assert await holds.reserve(tenant="acme", key_id=key_id, run_id=None, amount=Decimal(5)) is None


async def test_other_tenants_keys_are_not_found_and_writing_is_platform_only(api: Api) -> None:
    _, admin = await api.key(Role.admin, "*")
    key_id, submitter = await api.key(Role.submitter, "acme")
    _, stranger = await api.key(Role.submitter, "other")
    _, auditor_other = await api.key(Role.auditor, "other")
    _, tenant_operator = await api.key(Role.operator, "acme")
    assert (await api.put(key_id, admin, {"daily_usd": 3})).status_code == 200

    for key in (stranger, auditor_other):
        r = await api.get(key_id, key)
        assert r.status_code == 404, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert "daily_limit_usd" not in r.text
    unknown = await api.get("zzzzzzzz", admin)
    assert unknown.status_code == 404 and unknown.json()["detail"] == "API key zzzzzzzz not found"
    # the key's own tenant reads it; nobody but a platform key sets it
    assert (await api.get(key_id, submitter)).json()["daily_limit_usd"] == 3
    for key in (submitter, tenant_operator, stranger):
        assert (await api.put(key_id, key, {"daily_usd": 100})).status_code == 403
    assert (await api.put("zzzzzzzz", admin, {"daily_usd": 1})).status_code == 404
    assert (await api.get(key_id, submitter)).json()["daily_limit_usd"] == 3
    assert (await api.client.get(f"/v1/keys/{key_id}/budget")).status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"daily_usd": -1},
        {"monthly_usd": -0.01},
        {"daily_usd": "lots"},
        {"daily_usd": 1e12},
        {"weekly_usd": 1},
        [],
    ],
)
async def test_bad_amounts_are_422(api: Api, body: object) -> None:
    _, admin = await api.key(Role.admin, "*")
    key_id, _ = await api.key(Role.submitter, "acme")
    r = await api.put(key_id, admin, body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"


async def test_bad_key_ids_are_422(api: Api) -> None:
    _, admin = await api.key(Role.admin, "*")
    for bad in ("short", "UPPERCAS", "abcdefghi", "abcdefgi"):  # i is not in the alphabet
        assert (await api.get(bad, admin)).status_code == 422, bad
        assert (await api.put(bad, admin, {"daily_usd": 1})).status_code == 422, bad
