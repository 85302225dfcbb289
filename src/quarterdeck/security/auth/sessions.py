"""Web dashboard sessions: sign in once with an API key, then carry an HttpOnly cookie.

Why sessions in Postgres rather than a signed cookie: a session must end when its key is revoked
and when its holder signs out, on every replica and across restarts (Flower kept its state in
memory and lost it on restart). The cookie holds a random token; the table holds its SHA-256,
the key it stands for and the session's CSRF token. Every request re-checks the key through
:meth:`AuthService.principal_for`, so a session is never worth more than its key is now.

The API itself never reads the cookie: a cookie is sent by the browser on its own, which is what
cross-site request forgery abuses, so only ``/ui`` routes accept it and every mutation there must
also carry the session's CSRF token (``ui/guard.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from quarterdeck.kit.clock import utcnow
from quarterdeck.security.auth import session_repository as repo
from quarterdeck.security.auth.errors import Unauthenticated
from quarterdeck.security.auth.principal import DEV_PRINCIPAL, Principal
from quarterdeck.security.auth.run_tokens import is_run_token
from quarterdeck.security.auth.service import AuthService
from quarterdeck.store.pool import Database

SESSION_COOKIE = "qd_session"
DEFAULT_LIFETIME = timedelta(hours=12)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_token(presented: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented CSRF token with the session's."""
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())


@dataclass(frozen=True, slots=True)
class Session:
    """A live session and who it acts as."""

    principal: Principal
    csrf: str
    expires_at: datetime


class SessionService:
    def __init__(
        self,
        db: Database,
        auth: AuthService,
        *,
        lifetime: timedelta = DEFAULT_LIFETIME,
        secure_cookies: bool = False,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.auth = auth
        self.lifetime = lifetime
        self.secure_cookies = secure_cookies
        """Mark cookies Secure even on a request that arrived over plain HTTP (production,
        behind a proxy that ends TLS); a request over HTTPS always gets them Secure."""
        self.clock = clock

    @property
    def auth_required(self) -> bool:
        return self.auth.required

    async def sign_in(self, api_key: str | None) -> tuple[str, Session]:
        """A new session for ``api_key`` (with auth off, none is needed: the dev principal).

        Returns the cookie's token and the session; :class:`Unauthenticated` for a key the API
        would refuse. A run token cannot sign in: it may call the gateway and nothing else.
        """
        key = (api_key or "").strip()
        if not self.auth.required and not key:
            principal = DEV_PRINCIPAL
        else:
            if is_run_token(key):
                raise Unauthenticated("a run token cannot sign in; use an API key")
            principal = await self.auth.authenticate(key or None)
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(24)
        now = self.clock()
        async with self.db.acquire() as conn:
            # Expired rows already count for nothing (``get_session`` reads live ones only):
            # sweeping them when a session is made keeps the table small with no timer.
            await repo.delete_expired(conn, now)
            row = await repo.insert_session(
                conn,
                digest=_digest(token),
                key_id=principal.key_id,
                csrf=csrf,
                expires_at=now + self.lifetime,
            )
        return token, Session(principal, row.csrf, row.expires_at)

    async def resolve(self, token: str | None) -> Session:
        """The session a cookie's token stands for, its key checked now; else
        :class:`Unauthenticated`."""
        if not token:
            raise Unauthenticated("sign in to use the dashboard", invalid_token=False)
        async with self.db.acquire() as conn:
            row = await repo.get_session(conn, _digest(token), self.clock())
        if row is None:
            raise Unauthenticated("the session has ended; sign in again")
        principal = await self.auth.principal_for(row.key_id)
        return Session(principal, row.csrf, row.expires_at)

    async def sign_out(self, token: str | None) -> None:
        if token:
            async with self.db.acquire() as conn:
                await repo.delete_session(conn, _digest(token))
