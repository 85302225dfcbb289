"""Access control: API keys, roles and permissions, tenant checks and request rate limits.

- :mod:`.permissions`: roles, permissions and the matrix between them (see ``README.md``).
- :mod:`.principal`: who is calling, and the tenant checks every service should use.
- :mod:`.keys`: the key format; hashing and constant-time comparison.
- :mod:`.service`: create/list/revoke keys and authenticate a presented key (cached).
- :mod:`.dependencies`: ``require(Permission.X)`` for routes; ``served_routes`` reads them back.
- :mod:`.limiter`, :mod:`.quota`, :mod:`.shared_quota`: per-key and per-tenant limits.
- :mod:`.api`, :mod:`.cli`: ``/v1/admin/keys``, ``/v1/me`` and ``quarterdeck keys``.

The names below are imported on first use (:mod:`quarterdeck.kit.lazy`): every ``quarterdeck``
command goes through this package for ``auth.cli``, and :mod:`.dependencies` brings FastAPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quarterdeck.kit.lazy import lazy_exports

if TYPE_CHECKING:
    from quarterdeck.security.auth.dependencies import (
        Requirement,
        require,
        route_permissions,
        served_routes,
    )
    from quarterdeck.security.auth.errors import Forbidden, RateLimited, Unauthenticated
    from quarterdeck.security.auth.permissions import (
        ALL_TENANTS,
        ROLE_PERMISSIONS,
        Permission,
        Role,
    )
    from quarterdeck.security.auth.principal import DEV_PRINCIPAL, DEV_TENANT, Principal
    from quarterdeck.security.auth.service import AuthService, build_auth_service

__all__ = [
    "ALL_TENANTS",
    "DEV_PRINCIPAL",
    "DEV_TENANT",
    "ROLE_PERMISSIONS",
    "AuthService",
    "Forbidden",
    "Permission",
    "Principal",
    "RateLimited",
    "Requirement",
    "Role",
    "Unauthenticated",
    "build_auth_service",
    "require",
    "route_permissions",
    "served_routes",
]
__getattr__ = lazy_exports(
    __name__,
    {
        "quarterdeck.security.auth.dependencies": (
            "Requirement",
            "require",
            "route_permissions",
            "served_routes",
        ),
        "quarterdeck.security.auth.errors": ("Forbidden", "RateLimited", "Unauthenticated"),
        "quarterdeck.security.auth.permissions": (
            "ALL_TENANTS",
            "ROLE_PERMISSIONS",
            "Permission",
            "Role",
        ),
        "quarterdeck.security.auth.principal": ("DEV_PRINCIPAL", "DEV_TENANT", "Principal"),
        "quarterdeck.security.auth.service": ("AuthService", "build_auth_service"),
    },
)
