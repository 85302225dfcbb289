"""The errors access control raises, each carrying the HTTP headers its status requires.

``headers`` is read by the app's problem+json handler: RFC 9110 requires a
``WWW-Authenticate`` challenge on every 401, and a 429 is only useful with ``Retry-After``
(from ``retry_after`` in ``extra``) and the ``RateLimit-*`` fields telling clients how to pace.
"""

from __future__ import annotations

from collections.abc import Mapping

from quarterdeck.exceptions import QuarterdeckError

REALM = "quarterdeck"


class AuthError(QuarterdeckError):
    """Base of access-control errors; ``headers`` go on the HTTP response."""

    headers: Mapping[str, str] = {}


class Unauthenticated(AuthError):
    """401: no key, or a key that is unknown, wrong, revoked or expired."""

    status = 401
    type_slug = "unauthenticated"
    title = "Authentication required"

    def __init__(self, detail: str, *, invalid_token: bool = True) -> None:
        super().__init__(detail)
        # RFC 6750 section 3: no error code when no credentials were sent at all.
        challenge = f'Bearer realm="{REALM}"'
        if invalid_token:
            challenge += ', error="invalid_token"'
        self.headers = {"WWW-Authenticate": challenge}


class Forbidden(AuthError):
    """403: a valid key whose role (or reach) does not include the permission."""

    status = 403
    type_slug = "forbidden"
    title = "Permission denied"

    def __init__(self, detail: str, *, permission: str) -> None:
        super().__init__(detail, extra={"permission": permission})
        self.permission = permission


class RateLimited(AuthError):
    """429: the key's or its tenant's request budget is spent for now."""

    status = 429
    type_slug = "rate-limited"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int, headers: Mapping[str, str]) -> None:
        super().__init__(detail, extra={"retry_after": retry_after})
        self.retry_after = retry_after
        self.headers = dict(headers)


class AuthOff(AuthError):
    """409: key management over HTTP while authentication is off (see ``auth/api.py``)."""

    status = 409
    type_slug = "auth-off"
    title = "Authentication is off"
