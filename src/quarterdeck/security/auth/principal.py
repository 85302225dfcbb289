"""Who is calling: the principal an authenticated request acts as, and its tenant checks.

Every tenant check in the code base should go through :meth:`Principal.tenant_filter` (pass it
to the repository, which adds ``AND tenant = $n``) or :meth:`Principal.ensure_tenant` (after
loading an object). Both turn "another tenant's object" into *not found*, never *forbidden*:
a 403 would confirm the object exists, which is itself a leak between tenants.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from quarterdeck.exceptions import NotFound
from quarterdeck.security.auth.permissions import (
    ALL_TENANTS,
    ROLE_PERMISSIONS,
    Permission,
    Role,
    allows,
)

DEV_TENANT = "default"
"""The tenant of every request while authentication is off (what runs default to)."""


class AuthMethod(StrEnum):
    api_key = "api_key"
    bootstrap = "bootstrap"
    disabled = "disabled"
    run_token = "run_token"
    """A gateway token minted for one run's agent process (``security/auth/run_tokens.py``)."""


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    """The public key id (safe to log); ``bootstrap`` or ``dev`` for the two built-in ones."""
    name: str
    role: Role
    tenant: str
    method: AuthMethod = AuthMethod.api_key
    gateway_fallback: tuple[str, ...] | None = None
    """The key's gateway fallback config (``api_keys.gateway_fallback``; None: the default)."""
    run_id: str | None = None
    """Set for a run token: the one run this principal acts for. Its agent process (a CLI in
    the run's sandbox, whatever it was told to do) may call the gateway for that run and
    nothing else, so :meth:`can` allows only ``gateway:use``, whatever the role says."""

    @property
    def all_tenants(self) -> bool:
        return self.tenant == ALL_TENANTS

    @property
    def permissions(self) -> frozenset[Permission]:
        """What this principal may actually use (role permissions within its reach)."""
        return frozenset(p for p in ROLE_PERMISSIONS[self.role] if self.can(p))

    def can(self, permission: Permission) -> bool:
        if self.run_id is not None and permission is not Permission.GATEWAY_USE:
            return False
        return allows(self.role, self.tenant, permission)

    def tenant_filter(self) -> str | None:
        """The tenant to restrict queries to; None means every tenant (a ``*`` principal).

        This is the value to pass as ``tenant`` to services and repositories that take
        ``tenant: str | None`` (None = unrestricted), e.g. ``RunService.get(run_id, tenant)``.
        """
        return None if self.all_tenants else self.tenant

    def reach(self, tenant: str | None, permission: Permission) -> str | None:
        """The tenant a read covers: a tenant key's own (naming another is refused, 403, not
        silently ignored), else the one a ``*`` key names, else None (every tenant)."""
        from quarterdeck.security.auth.errors import Forbidden

        own = self.tenant_filter()
        if own is None:
            return tenant
        if tenant is not None and tenant != own:
            raise Forbidden(
                f"a key of tenant {own!r} cannot read tenant {tenant!r}",
                permission=permission.value,
            )
        return own

    def owns(self, tenant: str) -> bool:
        return self.all_tenants or tenant == self.tenant

    def ensure_tenant(self, tenant: str, what: str, ident: str) -> None:
        """Raise 404 for ``what`` ``ident`` unless this principal may see ``tenant``'s objects."""
        if not self.owns(tenant):
            raise NotFound(f"{what} {ident} not found")

    def tenant_for_new(self, requested: str | None = None) -> str:
        """The tenant a new object is created in: the principal's own, or for a ``*`` principal
        the one it names (``DEV_TENANT`` when it names none)."""
        if not self.all_tenants:
            return self.tenant
        return requested or DEV_TENANT


DEV_PRINCIPAL = Principal(
    key_id="dev",
    name="development (auth off)",
    role=Role.admin,
    tenant=ALL_TENANTS,
    method=AuthMethod.disabled,
)
"""Every request while authentication is off: an admin, as the bootstrap key would be.

It reads every tenant's objects (so nothing that worked before keys existed stops working) and
creates objects in ``DEV_TENANT`` (``default``), which is where runs always went.
"""
