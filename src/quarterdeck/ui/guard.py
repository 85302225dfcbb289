"""Who may see a page or press a button: ``page(permission)`` and ``action(permission)``.

The same rules as the API's ``require(permission)``, in the same order (session instead of key:
401, request limits: 429, role and reach: 403), with the principal a session stands for now
(``security/auth/sessions.py``). An ``action`` also needs the session's CSRF token, from the
form's ``csrf`` field or the ``X-CSRF-Token`` header htmx sends: the session cookie alone,
which a browser attaches to a forged cross-site form too, is never enough to change anything.

Tenant reach is the services' business, as in the API: a route passes
``viewer.tenant`` (``Principal.tenant_filter``) and another tenant's object is *not found*.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from quarterdeck.exceptions import Unavailable
from quarterdeck.kit.wiring import services
from quarterdeck.security.auth import Forbidden, Permission, RateLimited
from quarterdeck.security.auth.dependencies import PRINCIPAL_STATE, RATELIMIT_STATE
from quarterdeck.security.auth.sessions import SESSION_COOKIE, SessionService, same_token
from quarterdeck.ui.web import Viewer

CSRF_FIELD = "csrf"
VIEWER_STATE = "ui_viewer"
CSRF_HEADER = "x-csrf-token"


def session_service(request: Request) -> SessionService:
    service = services(request.app).get(SessionService)
    if service is None:
        raise Unavailable("the dashboard is not ready yet")
    return service


class UiRequirement:
    """The dependency ``page``/``action`` return; the UI route walk finds it by type."""

    def __init__(self, permission: Permission, *, mutation: bool) -> None:
        self.permission = Permission(permission)
        self.mutation = mutation

    def __repr__(self) -> str:
        kind = "action" if self.mutation else "page"
        return f"{kind}({self.permission.value!r})"

    async def __call__(self, request: Request) -> Viewer:
        sessions = session_service(request)
        session = await sessions.resolve(request.cookies.get(SESSION_COOKIE))
        principal = session.principal
        setattr(request.state, PRINCIPAL_STATE, principal)
        if sessions.auth_required:
            decision = await sessions.auth.limiter.hit(principal)
            if decision is not None:
                setattr(request.state, RATELIMIT_STATE, decision)
                if not decision.allowed:
                    raise RateLimited(
                        f"rate limit reached; retry in {decision.retry_after_s} s",
                        retry_after=decision.retry_after_s,
                        headers=decision.headers(),
                    )
        if self.mutation:
            presented = request.headers.get(CSRF_HEADER)
            if presented is None and _is_form(request):
                value = (await request.form()).get(CSRF_FIELD)
                presented = value if isinstance(value, str) else None
            if not same_token(presented, session.csrf):
                raise Forbidden(
                    "this form's CSRF token does not match your session (it is stale or was "
                    "sent from another site); reload the page and try again",
                    permission=self.permission.value,
                )
        if not principal.can(self.permission):
            raise Forbidden(
                f"{principal.role.value} key {principal.key_id!r} (tenant {principal.tenant!r})"
                f" does not have permission {self.permission.value}",
                permission=self.permission.value,
            )
        viewer = Viewer(principal, session.csrf, auth_off=not sessions.auth_required)
        setattr(request.state, VIEWER_STATE, viewer)  # an error page still shows who is in
        return viewer


def _is_form(request: Request) -> bool:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind in ("application/x-www-form-urlencoded", "multipart/form-data")


def page(permission: Permission) -> UiRequirement:
    """A page or fragment that reads with ``permission``."""
    return UiRequirement(permission, mutation=False)


def action(permission: Permission) -> UiRequirement:
    """A form post that changes something with ``permission`` (CSRF checked)."""
    return UiRequirement(permission, mutation=True)


# The common ones, declared once as the API's routers declare theirs.
SignedIn = Annotated[Viewer, Depends(page(Permission.SELF_READ))]
SigningOut = Annotated[Viewer, Depends(action(Permission.SELF_READ))]
RunsReader = Annotated[Viewer, Depends(page(Permission.RUNS_READ))]
RunsWriter = Annotated[Viewer, Depends(action(Permission.RUNS_WRITE))]
Approver = Annotated[Viewer, Depends(action(Permission.APPROVALS_WRITE))]
GatewayReader = Annotated[Viewer, Depends(page(Permission.GATEWAY_READ))]
IncidentsReader = Annotated[Viewer, Depends(page(Permission.INCIDENTS_READ))]
IncidentsWriter = Annotated[Viewer, Depends(action(Permission.INCIDENTS_WRITE))]
AuditReader = Annotated[Viewer, Depends(page(Permission.AUDIT_READ))]
BudgetsReader = Annotated[Viewer, Depends(page(Permission.BUDGETS_READ))]
BudgetsWriter = Annotated[Viewer, Depends(action(Permission.BUDGETS_WRITE))]
KeysReader = Annotated[Viewer, Depends(page(Permission.KEYS_READ))]
KeysWriter = Annotated[Viewer, Depends(action(Permission.KEYS_WRITE))]
