"""The role -> permission matrix, tenant reach, key assignment rules and Principal helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

from quarterdeck.exceptions import NotFound
from quarterdeck.security.auth.permissions import (
    ALL_TENANTS,
    ROLE_PERMISSIONS,
    Permission,
    Role,
    allows,
    assignment_problem,
    matrix_markdown,
)
from quarterdeck.security.auth.principal import DEV_PRINCIPAL, DEV_TENANT, Principal

P = Permission
README = Path(__file__).parents[2] / "src/quarterdeck/security/auth/README.md"

EXPECTED = {
    Role.operator: {
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
    },
    Role.submitter: {
        P.RUNS_READ,
        P.RUNS_WRITE,
        P.AGENTS_READ,
        P.BUDGETS_READ,
        P.SELF_READ,
        P.GATEWAY_USE,
        P.GATEWAY_READ,
    },
    Role.auditor: {P.AUDIT_READ, P.REPORTS_READ, P.BUDGETS_READ, P.SELF_READ, P.GATEWAY_READ},
}


def test_admin_has_every_permission():
    assert ROLE_PERMISSIONS[Role.admin] == frozenset(Permission)


@pytest.mark.parametrize("role", [Role.operator, Role.submitter, Role.auditor])
def test_other_roles_have_exactly_their_permissions(role: Role):
    assert set(ROLE_PERMISSIONS[role]) == EXPECTED[role]


def test_only_admin_manages_keys_and_only_auditors_and_admins_read_the_audit_log():
    for role in Role:
        assert (P.KEYS_WRITE in ROLE_PERMISSIONS[role]) == (role is Role.admin)
        assert (P.AUDIT_READ in ROLE_PERMISSIONS[role]) == (role in {Role.admin, Role.auditor})


def test_only_who_am_i_the_own_budget_and_gateway_spend_are_open_to_every_role():
    everyones = {p for p in Permission if all(p in ROLE_PERMISSIONS[r] for r in Role)}
    assert everyones == {P.SELF_READ, P.BUDGETS_READ, P.GATEWAY_READ}


def test_only_submitters_and_admins_call_models_through_the_gateway():
    for role in Role:
        assert (P.GATEWAY_USE in ROLE_PERMISSIONS[role]) == (role in {Role.admin, Role.submitter})


def test_platform_only_permissions_need_an_all_tenant_principal():
    assert allows(Role.operator, ALL_TENANTS, P.INCIDENTS_READ)
    assert not allows(Role.operator, "acme", P.INCIDENTS_READ)
    assert not allows(Role.operator, "acme", P.BUDGETS_WRITE)
    assert allows(Role.operator, "acme", P.RUNS_READ)
    assert allows(Role.submitter, "acme", P.RUNS_WRITE)
    assert not allows(Role.submitter, "acme", P.HEALTH_READ)
    assert not allows(Role.auditor, ALL_TENANTS, P.RUNS_READ)


@pytest.mark.parametrize(
    ("role", "tenant", "ok"),
    [
        (Role.admin, "*", True),
        (Role.admin, "acme", False),
        (Role.operator, "*", True),
        (Role.operator, "acme", True),
        (Role.auditor, "*", True),
        (Role.auditor, "acme", True),
        (Role.submitter, "acme", True),
        (Role.submitter, "*", False),
        (Role.submitter, "bad tenant", False),
        (Role.submitter, "-leading-dash", False),
        (Role.submitter, "a" * 65, False),
        (Role.submitter, "team-1.eu:prod_2", True),
    ],
)
def test_which_roles_may_have_which_tenants(role: Role, tenant: str, ok: bool):
    assert (assignment_problem(role, tenant) is None) == ok


def test_the_readme_shows_the_matrix_as_it_is():
    assert matrix_markdown() in README.read_text()


def test_a_tenant_principal_sees_only_its_tenant():
    p = Principal("abcdefgh", "ci", Role.submitter, "acme")
    assert p.tenant_filter() == "acme"
    assert p.owns("acme") and not p.owns("globex")
    p.ensure_tenant("acme", "run", "run_1")
    with pytest.raises(NotFound) as err:
        p.ensure_tenant("globex", "run", "run_1")
    assert err.value.status == 404 and "run run_1" in err.value.detail
    assert p.tenant_for_new("globex") == "acme"


def test_an_all_tenant_principal_sees_every_tenant_and_creates_where_asked():
    p = Principal("abcdefgh", "ops", Role.operator, ALL_TENANTS)
    assert p.tenant_filter() is None
    p.ensure_tenant("globex", "run", "run_1")
    assert p.tenant_for_new("globex") == "globex"
    assert p.tenant_for_new() == DEV_TENANT


def test_effective_permissions_leave_out_what_the_tenant_cannot_reach():
    local = Principal("abcdefgh", "ops", Role.operator, "acme")
    assert local.permissions == {
        P.RUNS_READ,
        P.APPROVALS_WRITE,
        P.AGENTS_READ,
        P.BUDGETS_READ,
        P.REPORTS_READ,
        P.SELF_READ,
        P.GATEWAY_READ,
    }
    assert Principal("x", "ops", Role.operator, "*").permissions == EXPECTED[Role.operator]


def test_the_development_principal_is_an_admin_creating_in_default():
    assert DEV_PRINCIPAL.role is Role.admin
    assert DEV_PRINCIPAL.permissions == frozenset(Permission)
    assert DEV_PRINCIPAL.tenant_for_new() == "default"
