"""Roles, permissions and the matrix between them: the one place access rules are decided.

A permission is either *tenant-scoped* (a principal of tenant ``acme`` may use it, on acme's
objects only) or *platform-only* (it acts on things that belong to no tenant, or that a tenant
must not change about itself, such as its own budget; only an all-tenant principal, tenant
``*``, may use it). Checking both the role and that reach in one place is what lets a route
declare a single permission and be safe.

The matrix is data, not code, so ``README.md`` and the tests can print and check it.
"""

from __future__ import annotations

import re
from enum import StrEnum

ALL_TENANTS = "*"
"""The tenant of a principal that may act for every tenant."""
TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")
"""Same rule as budgets' tenants, so every tenant a key names can also have a budget."""


class Role(StrEnum):
    admin = "admin"
    operator = "operator"
    submitter = "submitter"
    auditor = "auditor"


class Permission(StrEnum):
    RUNS_READ = "runs:read"
    RUNS_WRITE = "runs:write"
    APPROVALS_WRITE = "approvals:write"
    AGENTS_READ = "agents:read"
    BUDGETS_READ = "budgets:read"
    BUDGETS_WRITE = "budgets:write"
    INCIDENTS_READ = "incidents:read"
    INCIDENTS_WRITE = "incidents:write"
    ALERTS_WRITE = "alerts:write"
    HEALTH_READ = "health:read"
    SCALING_READ = "scaling:read"
    SCALING_WRITE = "scaling:write"
    ROLLOUTS_READ = "rollouts:read"
    ROLLOUTS_WRITE = "rollouts:write"
    AUDIT_READ = "audit:read"
    AUDIT_MANAGE = "audit:manage"
    REPORTS_READ = "reports:read"
    KEYS_READ = "keys:read"
    KEYS_WRITE = "keys:write"
    SELF_READ = "self:read"
    GATEWAY_USE = "gateway:use"
    GATEWAY_READ = "gateway:read"

    @property
    def platform_only(self) -> bool:
        """True when only a principal of tenant ``*`` may use it."""
        return self in PLATFORM_ONLY


PLATFORM_ONLY: frozenset[Permission] = frozenset(
    {
        Permission.BUDGETS_WRITE,
        Permission.INCIDENTS_READ,
        Permission.INCIDENTS_WRITE,
        Permission.ALERTS_WRITE,
        Permission.HEALTH_READ,
        Permission.SCALING_READ,
        Permission.SCALING_WRITE,
        Permission.ROLLOUTS_READ,
        Permission.ROLLOUTS_WRITE,
        Permission.AUDIT_MANAGE,
        Permission.KEYS_READ,
        Permission.KEYS_WRITE,
    }
)

P = Permission
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.admin: frozenset(Permission),
    Role.operator: frozenset(
        {
            P.RUNS_READ,
            P.APPROVALS_WRITE,
            P.AGENTS_READ,
            P.BUDGETS_READ,
            P.BUDGETS_WRITE,
            P.INCIDENTS_READ,
            P.INCIDENTS_WRITE,
            P.ALERTS_WRITE,
            P.HEALTH_READ,
            P.SCALING_READ,
            P.SCALING_WRITE,
            P.ROLLOUTS_READ,
            P.ROLLOUTS_WRITE,
            P.REPORTS_READ,
            P.SELF_READ,
            P.GATEWAY_READ,
        }
    ),
    Role.submitter: frozenset(
        {
            P.RUNS_READ,
            P.RUNS_WRITE,
            P.AGENTS_READ,
            P.BUDGETS_READ,
            P.SELF_READ,
            P.GATEWAY_USE,
            P.GATEWAY_READ,
        }
    ),
    Role.auditor: frozenset(
        {P.AUDIT_READ, P.REPORTS_READ, P.BUDGETS_READ, P.SELF_READ, P.GATEWAY_READ}
    ),
}

ALL_TENANT_ROLES = frozenset({Role.admin, Role.operator, Role.auditor})
"""Roles a key of tenant ``*`` may have. A submitter must belong to one tenant (its runs are
billed to it), and an admin always acts for all tenants (so ``admin`` means one thing)."""


def allows(role: Role, tenant: str, permission: Permission) -> bool:
    """Whether a principal with ``role`` in ``tenant`` may use ``permission`` at all.

    Whether it may use it on a particular object is the tenant check, done where the object is
    loaded (see :meth:`~quarterdeck.security.auth.principal.Principal.tenant_filter`).
    """
    if permission not in ROLE_PERMISSIONS[role]:
        return False
    return tenant == ALL_TENANTS or not permission.platform_only


def assignment_problem(role: Role, tenant: str) -> str | None:
    """Why a key may not have this role and tenant, or None when it may."""
    if tenant == ALL_TENANTS:
        if role not in ALL_TENANT_ROLES:
            return f"a {role.value} key must belong to one tenant, not {ALL_TENANTS!r}"
        return None
    if role is Role.admin:
        return f"an admin key acts for all tenants: its tenant must be {ALL_TENANTS!r}"
    if not TENANT_RE.fullmatch(tenant):
        return (
            "tenant must be '*' or 1-64 characters of letters, digits, '_', '.', ':' or '-', "
            "starting with a letter or digit"
        )
    return None


def matrix_markdown() -> str:
    """The matrix as a Markdown table (the README's copy is checked against this)."""
    roles = list(Role)
    lines = [
        "| permission | platform-only | " + " | ".join(r.value for r in roles) + " |",
        "| --- | --- | " + " | ".join("---" for _ in roles) + " |",
    ]
    for perm in Permission:
        cells = ["yes" if perm in ROLE_PERMISSIONS[r] else "" for r in roles]
        only = "yes" if perm.platform_only else ""
        lines.append(f"| `{perm.value}` | {only} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
