"""FastAPI dependencies that enforce access control, and how to read them back from routes.

A route declares the one permission it needs::

    @router.get("/v1/things/{thing_id}")
    async def get_thing(
        thing_id: str, principal: Annotated[Principal, Depends(require(Permission.THINGS_READ))]
    ) -> Thing:
        return await service.get(thing_id, tenant=principal.tenant_filter())

(or ``dependencies=[Depends(require(...))]`` when the handler does not need the principal).
:func:`require` returns a :class:`Requirement`, an object rather than a closure, so that
:func:`route_permissions` can find it in a route's dependency tree, and :func:`served_routes`
lists every route with its permissions: the route-walk test uses it to prove every route is
guarded.

One dependency call does, in order: authenticate (401), count the request against the key's and
tenant's limits (429), check the role and its reach (403). It stores the principal and the
rate-limit decision on ``request.state`` for the response headers and for logging.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Protocol

import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from quarterdeck.exceptions import Unavailable
from quarterdeck.kit.wiring import services
from quarterdeck.security.auth.errors import Forbidden, RateLimited
from quarterdeck.security.auth.permissions import Permission
from quarterdeck.security.auth.principal import DEV_PRINCIPAL, Principal
from quarterdeck.security.auth.run_tokens import is_run_token
from quarterdeck.security.auth.service import AuthService

log = structlog.get_logger(__name__)

PRINCIPAL_STATE = "principal"
RATELIMIT_STATE = "ratelimit"
AUTH_REQUIRED_STATE = "auth_required"
"""Set on ``app.state`` by ``create_app``: with it True, a missing service fails closed."""

_bearer = HTTPBearer(auto_error=False, scheme_name="bearer", description="An API key.")
_api_key = APIKeyHeader(
    name="x-api-key",
    auto_error=False,
    scheme_name="x-api-key",
    description="An API key, as Anthropic SDK clients send it.",
)
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
ApiKeyHeader = Annotated[str | None, Depends(_api_key)]


def auth_service(request: Request) -> AuthService | None:
    """The app's registered :class:`AuthService`, or None for an app built without one.

    Routers are also mounted on bare test apps with only the services they test; those have no
    auth service and no ``auth_required`` flag and run as in development. An app from
    ``create_app`` with authentication required but no service (not started) refuses with 503
    instead of opening. Not ``provide(AuthService)``: that could only refuse, never open.
    """
    service = services(request.app).get(AuthService)
    if service is not None:
        return service
    if getattr(request.app.state, AUTH_REQUIRED_STATE, False):
        raise Unavailable("authentication is not ready yet")
    return None


MaybeAuth = Annotated[AuthService | None, Depends(auth_service)]


class Requirement:
    """The dependency ``require(permission)`` returns; see the module docstring."""

    def __init__(self, permission: Permission) -> None:
        self.permission = Permission(permission)

    def __repr__(self) -> str:
        return f"require({self.permission.value!r})"

    async def __call__(
        self, request: Request, service: MaybeAuth, bearer: Bearer, api_key: ApiKeyHeader
    ) -> Principal:
        token = bearer.credentials if bearer is not None else api_key
        if service is None or not service.required:
            # Auth off: every caller is the dev principal, except a run token, which is still
            # resolved (401 when dead): the gateway attributes the call to its run by it.
            if service is not None and is_run_token(token):
                principal = await service.authenticate(token)
            else:
                principal = DEV_PRINCIPAL
            setattr(request.state, PRINCIPAL_STATE, principal)
        else:
            principal = await service.authenticate(token)
            setattr(request.state, PRINCIPAL_STATE, principal)  # for audit and request logs
            decision = await service.limiter.hit(principal)
            if decision is not None:
                setattr(request.state, RATELIMIT_STATE, decision)
                if not decision.allowed:
                    raise RateLimited(
                        f"rate limit of this {' and '.join(decision.limited_by)} reached; retry "
                        f"in {decision.retry_after_s} s",
                        retry_after=decision.retry_after_s,
                        headers=decision.headers(),
                    )
        if not principal.can(self.permission):
            log.info(
                "auth.forbidden",
                key_id=principal.key_id,
                tenant=principal.tenant,
                role=principal.role.value,
                permission=self.permission.value,
            )
            raise Forbidden(_why_not(principal, self.permission), permission=self.permission)
        return principal


def _why_not(principal: Principal, permission: Permission) -> str:
    if principal.run_id is not None:
        return f"a run token can only call the gateway ({Permission.GATEWAY_USE.value})"
    if permission.platform_only and not principal.all_tenants:
        return (
            f"{permission.value} acts across tenants; a key of tenant {principal.tenant!r} "
            "cannot use it"
        )
    return f"role {principal.role.value} does not have permission {permission.value}"


async def authorize(requirement: Requirement, request: Request) -> Principal:
    """Exactly what FastAPI does for ``Depends(requirement)``, in the same order, without its
    dependency resolution (~0.6 ms CPU a call, measured): for a hot route that calls it directly
    (the gateway's ``/v1/messages``) while still declaring the dependency for the route walk."""
    service = auth_service(request)
    return await requirement(request, service, await _bearer(request), await _api_key(request))


def require(permission: Permission) -> Requirement:
    """The dependency guarding a route with ``permission``; returns the :class:`Principal`."""
    return Requirement(permission)


class Routed(Protocol):
    """A route as declared (``APIRoute``) or as included (FastAPI's route context)."""

    @property
    def dependant(self) -> Dependant: ...


def route_requirements(route: Routed) -> list[Requirement]:
    """Every ``require(...)`` in a route's dependency tree, in no particular order.

    ``route`` is anything with a ``dependant`` (an ``APIRoute``, or a route as included).
    FastAPI runs each distinct requirement, so two would count one request twice.
    """
    found: list[Requirement] = []
    stack: list[Dependant] = [route.dependant]
    while stack:
        dependant = stack.pop()
        if isinstance(dependant.call, Requirement):
            found.append(dependant.call)
        stack.extend(dependant.dependencies)
    return found


def route_permissions(route: Routed) -> frozenset[Permission]:
    """Every permission a route requires (empty: the route is open)."""
    return frozenset(r.permission for r in route_requirements(route))


@dataclass(frozen=True)
class ServedRoute:
    """An API route as the app serves it: full path, methods and required permissions."""

    path: str
    methods: frozenset[str]
    requirements: tuple[Requirement, ...]

    @property
    def permissions(self) -> frozenset[Permission]:
        return frozenset(r.permission for r in self.requirements)


def served_routes(app: FastAPI) -> list[ServedRoute]:
    """Every API route of ``app``, with router prefixes and include-level dependencies applied.

    Recent FastAPI includes routers lazily (``app.routes`` holds the routers, not copies of
    their routes); ``iter_route_contexts`` resolves them. Older versions copy the routes.
    """
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # pragma: no cover - FastAPI before lazy router inclusion
        return [
            ServedRoute(r.path, frozenset(r.methods or ()), tuple(route_requirements(r)))
            for r in app.routes
            if isinstance(r, APIRoute)
        ]
    served = []
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute):
            path, methods = context.path or "", frozenset(context.methods or ())
            served.append(ServedRoute(path, methods, tuple(route_requirements(context))))
    return served
