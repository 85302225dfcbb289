"""API key use-cases: create, list, show, revoke, and authenticate a presented key.

Every change (``key.created``, ``key.revoked``) is reported to the optional ``on_change``
hook *inside* the transaction that makes it, before the commit: if recording it fails, the
change is rolled back. A change that was recorded but then failed to commit is the lesser
evil next to a key that exists but was never recorded.

:meth:`AuthService.authenticate` is on every request's path, so it reads key records through
:class:`~quarterdeck.security.auth.cache.KeyCache` (see there for how fresh they are).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import structlog

from quarterdeck.config import Settings
from quarterdeck.exceptions import NotFound, ValidationFailed
from quarterdeck.kit.clock import utcnow
from quarterdeck.security.auth import keys
from quarterdeck.security.auth import repository as repo
from quarterdeck.security.auth.cache import KeyCache
from quarterdeck.security.auth.errors import Unauthenticated
from quarterdeck.security.auth.limiter import RequestLimiter
from quarterdeck.security.auth.models import (
    ApiKey,
    CreatedKey,
    KeyRecord,
    KeyStatus,
    check_gateway_fallback,
)
from quarterdeck.security.auth.permissions import ALL_TENANTS, Role, assignment_problem
from quarterdeck.security.auth.principal import DEV_PRINCIPAL, AuthMethod, Principal
from quarterdeck.security.auth.run_tokens import RunTokens, is_run_token
from quarterdeck.security.auth.usage import KeyUsage
from quarterdeck.store.pool import Database

log = structlog.get_logger(__name__)

OnChange = Callable[[str, dict[str, Any]], Awaitable[None]]
BOOTSTRAP_KEY_ID = "bootstrap"
MADE_WHILE_AUTH_OFF = f"key:{DEV_PRINCIPAL.key_id}"
"""``created_by`` of a key made over HTTP while authentication was off (no longer possible)."""
AUTH_OFF_RETIRER = "system:auth-on"
_ID_ATTEMPTS = 5


class AuthService:
    def __init__(
        self,
        db: Database,
        *,
        required: bool,
        env: str = "development",
        bootstrap_key: str | None = None,
        limiter: RequestLimiter | None = None,
        cache: KeyCache | None = None,
        on_change: OnChange | None = None,
        clock: Callable[[], datetime] = utcnow,
        usage: KeyUsage | None = None,
    ) -> None:
        self.db = db
        self.required = required
        """False only in development with auth off: every request is the dev principal."""
        self.env = env
        self._bootstrap = bootstrap_key or None
        self.limiter = limiter if limiter is not None else RequestLimiter(0, 0)
        self.cache = cache if cache is not None else KeyCache()  # (an empty one is falsy)
        self.on_change = on_change
        """Async ``(action, details)``, given to feed the audit log. Never given secrets."""
        self.clock = clock
        self.run_tokens = RunTokens(db, clock=clock)
        self.usage = usage if usage is not None else KeyUsage(db, clock=clock)
        """Each key's last use, noted per request and written in batches (:mod:`.usage`)."""
        """Gateway tokens minted for one run (``qd_run_...``); see :mod:`.run_tokens`."""

    # -- managing keys ---------------------------------------------------------------------
    async def create(
        self,
        name: str,
        role: Role | str,
        tenant: str,
        *,
        expires_at: datetime | None = None,
        actor: str | None = None,
        gateway_fallback: list[str] | None = None,
    ) -> CreatedKey:
        """Make a key; the returned ``api_key`` is the only time the key itself is seen."""
        role = Role(role)
        now = self.clock()
        errors = []
        problem = assignment_problem(role, tenant)
        if problem is not None:
            errors.append({"field": "tenant", "message": problem})
        if expires_at is not None and expires_at <= now:
            errors.append({"field": "expires_at", "message": "must be in the future"})
        try:
            gateway_fallback = check_gateway_fallback(gateway_fallback)
        except ValueError as exc:
            errors.append({"field": "gateway_fallback", "message": str(exc)})
        if errors:
            detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
            raise ValidationFailed(detail, errors=errors)
        for _ in range(_ID_ATTEMPTS):
            new = keys.generate(self.env)
            async with self.db.transaction() as conn:
                record = await repo.insert_key(
                    conn,
                    key_id=new.parsed.key_id,
                    prefix=new.parsed.prefix,
                    digest=new.digest,
                    name=name,
                    tenant=tenant,
                    role=role,
                    created_by=actor,
                    expires_at=expires_at,
                    gateway_fallback=gateway_fallback,
                )
                if record is None:
                    continue  # 40-bit id collision: draw again
                await self._changed("key.created", record, actor)
            self.cache.invalidate(record.id)  # drop a cached "no such key" for this id
            log.info("auth.key_created", key_id=record.id, tenant=tenant, role=role.value)
            return CreatedKey(**record.public(now).model_dump(), api_key=new.token)
        raise RuntimeError(f"no free key id after {_ID_ATTEMPTS} attempts")  # pragma: no cover

    async def list_keys(
        self,
        tenant: str | None = None,
        *,
        include_inactive: bool = False,
        limit: int = 1000,
    ) -> list[ApiKey]:
        """Keys newest first; ``tenant`` None lists every tenant's (``*`` keys included)."""
        now = self.clock()
        async with self.db.acquire() as conn:
            records = await repo.list_keys(
                conn, tenant=tenant, include_inactive=include_inactive, now=now, limit=limit
            )
        return [r.public(now) for r in records]

    async def get(self, key_id: str) -> ApiKey:
        async with self.db.acquire() as conn:
            record = await repo.get_key(conn, key_id)
        if record is None:
            raise NotFound(f"API key {key_id} not found")
        return record.public(self.clock())

    async def revoke(self, key_id: str, *, actor: str | None = None) -> ApiKey:
        """Revoke a key; it stops working at once here and within the cache TTL elsewhere.

        Revoking a revoked key returns it unchanged (and reports nothing new).
        """
        now = self.clock()
        async with self.db.transaction() as conn:
            record = await repo.revoke_key(conn, key_id, actor, now)
            if record is None:
                existing = await repo.get_key(conn, key_id)
                if existing is None:
                    raise NotFound(f"API key {key_id} not found")
                return existing.public(now)
            await self._changed("key.revoked", record, actor)
        self.cache.invalidate(key_id)
        log.info("auth.key_revoked", key_id=key_id, tenant=record.tenant, by=actor)
        return record.public(now)

    async def set_gateway_fallback(
        self, key_id: str, gateway_fallback: list[str] | None, *, actor: str | None = None
    ) -> ApiKey:
        """Change which models a key's gateway calls may fail over to (audited as
        ``config.changed``); it applies at once here and within the cache TTL elsewhere."""
        try:
            value = check_gateway_fallback(gateway_fallback)
        except ValueError as exc:
            raise ValidationFailed(
                f"gateway_fallback: {exc}",
                errors=[{"field": "gateway_fallback", "message": str(exc)}],
            ) from exc
        async with self.db.transaction() as conn:
            record = await repo.set_gateway_fallback(conn, key_id, value)
            if record is None:
                raise NotFound(f"API key {key_id} not found")
            await self._changed("config.changed", record, actor)
        self.cache.invalidate(key_id)
        log.info("auth.key_updated", key_id=key_id, gateway_fallback=value, by=actor)
        return record.public(self.clock())

    async def retire_keys_made_while_auth_off(self) -> list[str]:
        """Revoke the keys an anonymous HTTP caller made while authentication was off (before
        that was refused: ``created_by`` is the development principal's); the ids revoked.

        Run at start-up with authentication on, so such keys show as revoked and the log says
        which; :meth:`authenticate` refuses them in any case, even before this has run.
        """
        now = self.clock()
        async with self.db.transaction() as conn:
            records = await repo.revoke_created_by(conn, MADE_WHILE_AUTH_OFF, AUTH_OFF_RETIRER, now)
            for record in records:
                await self._changed("key.revoked", record, AUTH_OFF_RETIRER)
        for record in records:
            self.cache.invalidate(record.id)
        if records:
            log.warning(
                "auth.keys_made_while_auth_off_revoked",
                key_ids=[r.id for r in records],
                detail="these keys were created over HTTP while authentication was off, by "
                "whoever could reach the port; they are revoked. Make new ones with an admin key "
                "or `quarterdeck keys create`.",
            )
        return [r.id for r in records]

    async def _changed(self, action: str, record: KeyRecord, actor: str | None) -> None:
        if self.on_change is None:
            return
        details: dict[str, Any] = {
            "key_id": record.id,
            "name": record.name,
            "tenant": record.tenant,
            "role": record.role.value,
            "expires_at": record.expires_at.isoformat() if record.expires_at else None,
            "actor": actor,
        }
        if record.gateway_fallback is not None or action == "config.changed":
            fallback = record.gateway_fallback
            details["gateway_fallback"] = list(fallback) if fallback is not None else None
        await self.on_change(action, details)

    # -- authenticating ----------------------------------------------------------------------
    async def authenticate(self, token: str | None) -> Principal:
        """The principal a presented key (or run token) stands for, or :class:`Unauthenticated`.

        A run token (``qd_run_...``) is resolved on every use, never cached: it dies the moment
        its run stops running at the attempt that minted it (see :mod:`.run_tokens`).
        """
        if not token:
            raise Unauthenticated(
                "an API key is required: send 'Authorization: Bearer <key>' (or 'x-api-key')",
                invalid_token=False,
            )
        if self._bootstrap is not None and keys.same_secret(token, self._bootstrap):
            return Principal(
                BOOTSTRAP_KEY_ID,
                "bootstrap admin key",
                Role.admin,
                ALL_TENANTS,
                AuthMethod.bootstrap,
            )
        if is_run_token(token):
            return await self.run_tokens.resolve(token)
        parsed = keys.parse(token)
        if parsed is None:
            raise Unauthenticated("the API key is malformed")
        record = await self.cache.get(parsed.key_id, self._load)
        if record is None or not keys.verify(token, record.digest):
            log.info("auth.rejected", key_id=parsed.key_id, reason="unknown key or wrong secret")
            raise Unauthenticated("the API key is not valid")
        # Only a caller holding the real key learns that it was revoked or expired.
        principal = self._active(record)
        self.usage.touch(record.id)
        return principal

    def _active(self, record: KeyRecord) -> Principal:
        """The principal of a key record that may act now, or :class:`Unauthenticated`."""
        if record.created_by == MADE_WHILE_AUTH_OFF and record.revoked_at is None:
            log.warning("auth.rejected", key_id=record.id, reason="made while auth was off")
            raise Unauthenticated(
                "the API key was created while authentication was off, so it is not trusted; "
                "create a new one"
            )
        status = record.status(self.clock())
        if status is not KeyStatus.active:
            log.info("auth.rejected", key_id=record.id, reason=status.value)
            raise Unauthenticated(f"the API key is {status.value}")
        return Principal(
            record.id,
            record.name,
            record.role,
            record.tenant,
            gateway_fallback=record.gateway_fallback,
        )

    async def principal_for(self, key_id: str) -> Principal:
        """The principal key ``key_id`` stands for now, without its secret: what a web session
        (``sessions.py``) acts as. It is checked on every request exactly as a presented key
        is (revoked, expired, made while auth was off: :class:`Unauthenticated`), so revoking a
        key ends its sessions within the key cache's lifetime, as it does its API calls."""
        if key_id == BOOTSTRAP_KEY_ID:
            if self._bootstrap is None:
                raise Unauthenticated("the bootstrap admin key is no longer configured")
            return Principal(
                BOOTSTRAP_KEY_ID,
                "bootstrap admin key",
                Role.admin,
                ALL_TENANTS,
                AuthMethod.bootstrap,
            )
        if key_id == DEV_PRINCIPAL.key_id:
            if self.required:
                raise Unauthenticated("authentication is on: sign in with an API key")
            return DEV_PRINCIPAL
        record = await self.cache.get(key_id, self._load)
        if record is None:
            raise Unauthenticated("the API key no longer exists")
        principal = self._active(record)
        self.usage.touch(record.id)  # a web session acting is its key in use
        return principal

    async def _load(self, key_id: str) -> KeyRecord | None:
        async with self.db.acquire() as conn:
            return await repo.get_key(conn, key_id)

    async def aclose(self) -> None:
        await self.usage.aclose()
        await self.limiter.aclose()


def build_auth_service(
    settings: Settings,
    db: Database,
    *,
    on_change: OnChange | None = None,
    warn_if_disabled: bool = True,
) -> AuthService:
    """The service a process runs, from settings: the bootstrap key, limits shared through
    ``REDIS_URL`` when set, and a loud warning when a server runs with authentication off."""
    store = None
    if settings.redis_url is not None:
        from quarterdeck.security.auth.shared_quota import SharedQuotaStore

        store = SharedQuotaStore(settings.redis_url.get_secret_value())
    limiter = RequestLimiter(
        settings.rate_limit_key_per_minute, settings.rate_limit_tenant_per_minute, store=store
    )
    bootstrap = settings.admin_api_key.get_secret_value() if settings.admin_api_key else None
    if warn_if_disabled and not settings.auth_required:
        log.warning(
            "auth.disabled",
            detail="authentication is OFF: every request acts as an admin. Development only; "
            "set QUARTERDECK_AUTH_ENABLED=true to require API keys.",
        )
    return AuthService(
        db,
        required=settings.auth_required,
        env=settings.env,
        bootstrap_key=bootstrap,
        limiter=limiter,
        on_change=on_change,
    )
