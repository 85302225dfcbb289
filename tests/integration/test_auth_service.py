"""The keys service against a real Postgres: create, list, revoke, expire, authenticate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from quarterdeck.exceptions import NotFound, ValidationFailed
from quarterdeck.kit.clock import FakeClock
from quarterdeck.security.auth import keys
from quarterdeck.security.auth.cache import KeyCache
from quarterdeck.security.auth.errors import Unauthenticated
from quarterdeck.security.auth.permissions import Role
from quarterdeck.security.auth.principal import AuthMethod
from quarterdeck.security.auth.service import AuthService
from quarterdeck.store.pool import Database

BOOTSTRAP = "b" * 40


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(wall=datetime(2030, 1, 1, tzinfo=UTC))


@pytest.fixture
def service(db: Database, clock: FakeClock) -> AuthService:
    return AuthService(db, required=True, bootstrap_key=BOOTSTRAP, clock=clock.wall)


async def test_create_returns_the_key_once_and_stores_only_its_digest(
    service: AuthService, db: Database
):
    created = await service.create("ci", Role.submitter, "acme", actor="key:bootstrap")
    assert created.api_key.startswith(f"qd_dev_{created.id}_")
    assert created.prefix == f"qd_dev_{created.id}" and created.status == "active"
    assert created.created_by == "key:bootstrap"
    async with db.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM api_keys WHERE id = $1", created.id)
    assert row is not None
    assert bytes(row["digest"]) == keys.digest(created.api_key)
    assert created.api_key not in str(dict(row))
    principal = await service.authenticate(created.api_key)
    assert (principal.key_id, principal.role, principal.tenant) == (
        created.id,
        Role.submitter,
        "acme",
    )
    assert principal.method is AuthMethod.api_key


async def test_production_keys_are_live_keys(db: Database):
    live = AuthService(db, required=True, env="production")
    created = await live.create("prod", Role.operator, "*")
    assert created.api_key.startswith("qd_live_")
    assert (await live.authenticate(created.api_key)).tenant == "*"


@pytest.mark.parametrize(
    ("role", "tenant", "field"),
    [
        (Role.admin, "acme", "tenant"),
        (Role.submitter, "*", "tenant"),
        (Role.submitter, "not a tenant", "tenant"),
    ],
)
async def test_create_rejects_impossible_keys(
    service: AuthService, role: Role, tenant: str, field: str
):
    with pytest.raises(ValidationFailed) as err:
        await service.create("x", role, tenant)
    assert err.value.extra["errors"][0]["field"] == field


async def test_create_rejects_an_expiry_in_the_past(service: AuthService, clock: FakeClock):
    with pytest.raises(ValidationFailed) as err:
        await service.create("x", Role.submitter, "acme", expires_at=clock.wall())
    assert err.value.extra["errors"][0]["field"] == "expires_at"


async def test_the_database_refuses_impossible_keys_even_around_the_service(db: Database):
    async with db.acquire() as conn:
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO api_keys (id, prefix, digest, name, tenant, role)"
                " VALUES ('abcdefgh', 'qd_dev_', $1, 'x', 'acme', 'admin')",
                b"\0" * 32,
            )


async def test_list_filters_by_tenant_and_hides_inactive_keys_unless_asked(
    service: AuthService, clock: FakeClock
):
    a = await service.create("a", Role.submitter, "acme")
    b = await service.create("b", Role.auditor, "globex")
    c = await service.create(
        "c", Role.submitter, "acme", expires_at=clock.wall() + timedelta(hours=1)
    )
    d = await service.create("d", Role.operator, "*")
    await service.revoke(a.id, actor="cli:alice")
    clock.advance(timedelta(hours=2))  # c expires
    active = await service.list_keys()
    assert {k.id for k in active} == {b.id, d.id}
    everything = {k.id: k for k in await service.list_keys(include_inactive=True)}
    assert set(everything) == {a.id, b.id, c.id, d.id}
    assert everything[a.id].status == "revoked" and everything[a.id].revoked_by == "cli:alice"
    assert everything[c.id].status == "expired"
    acme = await service.list_keys("acme", include_inactive=True)
    assert {k.id for k in acme} == {a.id, c.id}
    assert all(not hasattr(k, "api_key") for k in everything.values())


async def test_revoke_stops_the_key_at_once_and_repeating_it_changes_nothing(
    service: AuthService,
):
    created = await service.create("ci", Role.submitter, "acme")
    await service.authenticate(created.api_key)  # now cached
    revoked = await service.revoke(created.id, actor="key:bootstrap")
    assert revoked.status == "revoked"
    with pytest.raises(Unauthenticated, match="revoked"):
        await service.authenticate(created.api_key)
    again = await service.revoke(created.id, actor="key:someone-else")
    assert again.revoked_by == "key:bootstrap" and again.revoked_at == revoked.revoked_at
    with pytest.raises(NotFound):
        await service.revoke("zzzzzzzz")


async def test_a_revocation_elsewhere_takes_effect_within_the_cache_ttl(db: Database):
    mono = FakeClock()
    here = AuthService(db, required=True, cache=KeyCache(ttl_s=5, clock=mono.now))
    elsewhere = AuthService(db, required=True)
    created = await elsewhere.create("ci", Role.submitter, "acme")
    await here.authenticate(created.api_key)
    await elsewhere.revoke(created.id)
    mono.advance(4.0)
    assert (await here.authenticate(created.api_key)).key_id == created.id  # stale, as allowed
    mono.advance(1.0)  # t = 5.0
    with pytest.raises(Unauthenticated, match="revoked"):
        await here.authenticate(created.api_key)


async def test_a_key_stops_working_exactly_when_it_expires(service: AuthService, clock: FakeClock):
    created = await service.create(
        "temp", Role.submitter, "acme", expires_at=clock.wall() + timedelta(minutes=10)
    )
    clock.advance(timedelta(minutes=9, seconds=59))
    await service.authenticate(created.api_key)
    clock.advance(timedelta(seconds=1))
    with pytest.raises(Unauthenticated, match="expired"):
        await service.authenticate(created.api_key)


async def test_wrong_unknown_and_malformed_keys_are_rejected_alike(service: AuthService):
    created = await service.create("ci", Role.submitter, "acme")
    secret = created.api_key.rsplit("_", 1)[1]
    wrong = created.api_key.replace(secret, secret[::-1] if secret != secret[::-1] else "A" * 40)
    unknown = keys.generate("development").token
    for token in (wrong, unknown):
        with pytest.raises(Unauthenticated, match="not valid") as err:
            await service.authenticate(token)
        assert err.value.headers["WWW-Authenticate"].endswith('error="invalid_token"')
    with pytest.raises(Unauthenticated, match="malformed"):
        await service.authenticate("hunter2")
    with pytest.raises(Unauthenticated, match="required") as missing:
        await service.authenticate(None)
    assert missing.value.headers["WWW-Authenticate"] == 'Bearer realm="quarterdeck"'


async def test_a_revoked_key_with_a_wrong_secret_does_not_learn_it_was_revoked(
    service: AuthService,
):
    created = await service.create("ci", Role.submitter, "acme")
    await service.revoke(created.id)
    guessed = f"qd_dev_{created.id}_" + "Z" * 40
    with pytest.raises(Unauthenticated, match="not valid"):
        await service.authenticate(guessed)


async def test_the_bootstrap_key_is_an_admin_of_all_tenants(service: AuthService):
    principal = await service.authenticate(BOOTSTRAP)
    assert principal.role is Role.admin and principal.tenant == "*"
    assert principal.key_id == "bootstrap" and principal.method is AuthMethod.bootstrap
    with pytest.raises(Unauthenticated):
        await service.authenticate(BOOTSTRAP + "x")


async def test_changes_are_reported_to_the_hook_without_secrets(service: AuthService):
    seen: list[tuple[str, dict[str, Any]]] = []

    async def hook(action: str, details: dict[str, Any]) -> None:
        seen.append((action, details))

    service.on_change = hook
    created = await service.create("ci", Role.submitter, "acme", actor="key:bootstrap")
    await service.revoke(created.id, actor="cli:alice")
    await service.revoke(created.id, actor="cli:alice")  # no change, no report
    assert [a for a, _ in seen] == ["key.created", "key.revoked"]
    assert seen[0][1] == {
        "key_id": created.id,
        "name": "ci",
        "tenant": "acme",
        "role": "submitter",
        "expires_at": None,
        "actor": "key:bootstrap",
    }
    assert seen[1][1]["actor"] == "cli:alice"
    assert all(created.api_key not in str(d) for _, d in seen)


async def test_a_change_the_hook_cannot_record_is_rolled_back(service: AuthService):
    async def broken(action: str, details: dict[str, Any]) -> None:
        raise RuntimeError("audit log unavailable")

    kept = await service.create("kept", Role.submitter, "acme")
    service.on_change = broken
    with pytest.raises(RuntimeError):
        await service.create("lost", Role.submitter, "acme")
    with pytest.raises(RuntimeError):
        await service.revoke(kept.id)
    service.on_change = None
    listed = await service.list_keys(include_inactive=True)
    assert [(k.name, k.status) for k in listed] == [("kept", "active")]
