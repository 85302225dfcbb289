"""When each key was last used (security/auth/usage.py), against a real Postgres: noted per
successful authentication only, written in one batch, never moved backwards, written at close."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from quarterdeck.kit.clock import FakeClock
from quarterdeck.security.auth import repository as repo
from quarterdeck.security.auth.errors import Unauthenticated
from quarterdeck.security.auth.permissions import Role
from quarterdeck.security.auth.service import AuthService
from quarterdeck.store.pool import Database

T0 = datetime(2030, 1, 1, tzinfo=UTC)


async def _last_used(db: Database, key_id: str) -> datetime | None:
    async with db.acquire() as conn:
        record = await repo.get_key(conn, key_id)
    assert record is not None
    return record.last_used_at


async def test_only_a_successful_authentication_is_a_use_and_writes_keep_the_newest(db: Database):
    clock = FakeClock(wall=T0)
    service = AuthService(db, required=True, clock=clock.wall)
    used = await service.create("used", Role.submitter, "acme")
    wrong = await service.create("wrong secret", Role.submitter, "acme")
    revoked = await service.create("revoked", Role.submitter, "acme")
    await service.revoke(revoked.id)

    await service.authenticate(used.api_key)
    with pytest.raises(Unauthenticated):
        await service.authenticate(wrong.api_key[:-4] + "AAAA")
    with pytest.raises(Unauthenticated):
        await service.authenticate(revoked.api_key)
    assert await _last_used(db, used.id) is None  # nothing written per request
    assert await service.usage.flush() == 1
    assert await _last_used(db, used.id) == T0
    assert await _last_used(db, wrong.id) is None
    assert await _last_used(db, revoked.id) is None

    clock.advance(timedelta(hours=1))
    await service.authenticate(used.api_key)
    await service.authenticate(used.api_key)
    assert await service.usage.flush() == 1  # one row per key, however many requests
    assert await _last_used(db, used.id) == T0 + timedelta(hours=1)

    # Another replica's older note, written late, does not move the time backwards.
    async with db.acquire() as conn:
        await repo.note_key_use(conn, [used.id], [T0])
    assert await _last_used(db, used.id) == T0 + timedelta(hours=1)

    clock.advance(timedelta(hours=1))
    await service.authenticate(used.api_key)
    await service.aclose()  # stopping writes what is left
    assert await _last_used(db, used.id) == T0 + timedelta(hours=2)
    listed = await AuthService(db, required=True).list_keys("acme", include_inactive=True)
    assert {k.id: k.last_used_at for k in listed}[used.id] == T0 + timedelta(hours=2)


async def test_a_failed_write_keeps_the_uses_for_the_next_round(db: Database):
    clock = FakeClock(wall=T0)
    service = AuthService(db, required=True, clock=clock.wall)
    key = await service.create("k", Role.auditor, "acme")
    await service.authenticate(key.api_key)
    async with db.acquire() as conn:
        await conn.execute("ALTER TABLE api_keys RENAME COLUMN last_used_at TO lu")
    try:
        with pytest.raises(Exception, match="last_used_at"):
            await service.usage.flush()
    finally:
        async with db.acquire() as conn:
            await conn.execute("ALTER TABLE api_keys RENAME COLUMN lu TO last_used_at")
    assert await service.usage.flush() == 1
    assert await _last_used(db, key.id) == T0
