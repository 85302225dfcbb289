"""One check, on every API route, for text the database cannot store: NUL (U+0000).

Why here and not in each model: a NUL can arrive in any string a route takes (a JSON body at any
depth, a query parameter, a path parameter), and each route that forgot to refuse it answered
500 when Postgres did, and the server dropped the keep-alive connection. ``app.py`` installs
:class:`NulGuard` as an app-wide dependency, so every route gets the check without declaring it
and a new route cannot forget it; the answer is a 422 problem+json naming each field
(``prompt``, ``metadata.x``, ``runs.3.prompt``, ``query.agent_type``, ``path.tenant``).

Cheap on the common path: query and path values are a substring test each, and a JSON body is
only walked when its bytes hold a ``\\u0000`` escape (FastAPI has already read and parsed it;
both are cached on the request). A route's key is still checked first: app-wide dependencies
run before the route's own ``require(...)``, so before refusing, the guard authorizes the caller
exactly as the route would (401/403/429 win over a 422, as for any other validation error).
Paths ``skip`` returns True for (the gateway's Anthropic-compatible routes, which relay bodies
as they are) are left alone.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request

from quarterdeck.exceptions import ValidationFailed
from quarterdeck.kit.text import JSON_NUL_ESCAPE, NUL, NUL_MESSAGE, nul_fields, shown
from quarterdeck.security.auth.dependencies import authorize, route_requirements


class NulRefused(ValidationFailed):
    """422: a string in the request holds U+0000, which Postgres text cannot store."""

    type_slug = "nul-character"
    title = "Text contains a NUL character"

    def __init__(self, fields: list[str]) -> None:
        super().__init__(
            "; ".join(f"{f}: {NUL_MESSAGE}" for f in fields),
            errors=[{"field": f, "message": NUL_MESSAGE} for f in fields],
        )


async def request_nul_fields(request: Request) -> list[str]:
    """Every field of ``request`` (query, path, JSON or form body) whose text holds a NUL."""
    found: list[str] = []
    for key, value in request.query_params.multi_items():
        if NUL in key or NUL in value:
            field = f"query.{shown(key)}"
            if field not in found:
                found.append(field)
    for name, value in request.path_params.items():
        if isinstance(value, str) and NUL in value:
            found.append(f"path.{name}")
    route = request.scope.get("route")
    form = getattr(request, "_form", None)  # a form FastAPI parsed (the dashboard's posts)
    if form is not None:
        for key, value in form.multi_items():
            if NUL in key or (isinstance(value, str) and NUL in value):
                found.append(f"form.{shown(key)}")
    elif getattr(route, "body_field", None) is not None:
        raw = await request.body()  # already read by FastAPI: cached
        if JSON_NUL_ESCAPE in raw:
            try:
                data = await request.json()  # cached too when FastAPI parsed it
            except ValueError:  # not JSON: the route's own validation answers
                data = None
            found += nul_fields(data)
    return found


class NulGuard:
    """The app-wide dependency (see the module docstring)."""

    def __init__(self, skip: Callable[[str], bool] | None = None) -> None:
        self.skip = skip

    async def __call__(self, request: Request) -> None:
        if self.skip is not None and self.skip(request.url.path):
            return
        fields = await request_nul_fields(request)
        if not fields:
            return
        route = request.scope.get("route")
        if route is not None and hasattr(route, "dependant"):
            for requirement in route_requirements(route):
                await authorize(requirement, request)
        raise NulRefused(fields)
