"""405 + ``Allow`` for a method a path does not serve (RFC 9110).

Starlette's own 405 names only the methods of the first route whose path matches, and a static
path such as ``/v1/runs/batch`` would otherwise fall through to ``/v1/runs/{run_id}`` and be
answered as a lookup of run ``batch``.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from starlette.datastructures import URLPath
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, NoMatchFound, compile_path
from starlette.types import Receive, Scope, Send


class UndeclaredMethod(BaseRoute):
    """The first route of the app: a request whose path the app serves, with a method it does
    not serve there, gets 405 with ``Allow`` (OPTIONS: 204 with ``Allow``).

    The methods of a path are those of the static routes it matches when there are any (so
    ``GET /v1/runs/batch`` is 405, not a lookup of run ``batch``), else those of the templated
    routes it matches. Everything else falls through (``Match.NONE``) to the real routes.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._table: list[tuple[re.Pattern[str], bool, frozenset[str]]] | None = None

    def _routes(self) -> list[tuple[re.Pattern[str], bool, frozenset[str]]]:
        if self._table is None:
            table = []
            for context in iter_route_contexts(self.app.routes):
                path, methods = context.path, context.methods
                if not path or not methods or context.original_route is self:
                    continue
                regex, _, convertors = compile_path(path)
                table.append((regex, not convertors, frozenset(m.upper() for m in methods)))
            self._table = table
        return self._table

    def allowed(self, path: str) -> frozenset[str] | None:
        """The methods served at ``path`` (None: no route has this path)."""
        static: set[str] = set()
        templated: set[str] = set()
        found = False
        for regex, is_static, methods in self._routes():
            if regex.match(path):
                found = True
                (static if is_static else templated).update(methods)
        if not found:
            return None
        out = static or templated
        if "GET" in out:
            out.add("HEAD")
        return frozenset(out)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        allowed = self.allowed(scope["path"])
        if allowed is None or scope["method"] in allowed:
            return Match.NONE, {}
        return Match.FULL, {"allowed_methods": allowed}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        allow = ", ".join(sorted(scope["allowed_methods"]))
        if scope["method"] == "OPTIONS":
            await Response(status_code=204, headers={"Allow": allow})(scope, receive, send)
            return
        raise HTTPException(405, headers={"Allow": allow})

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        raise NoMatchFound(name, path_params)  # names nothing; url_path_for looks elsewhere

    def __eq__(self, other: object) -> bool:
        return other is self

    __hash__ = object.__hash__
