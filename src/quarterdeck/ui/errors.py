"""Errors on ``/ui`` paths: a page for a browser, problem+json for anything else.

The app's one error handler (``app.py``) hands ``/ui`` errors here, as it hands the gateway's
to Anthropic's envelope. A browser that is not signed in (or whose session ended) is sent to the
sign-in page and brought back afterwards; htmx is told the same with ``HX-Redirect``, since a
redirect answered to an XHR would swap the sign-in page into a table cell.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from quarterdeck.ui.guard import VIEWER_STATE
from quarterdeck.ui.paths import LOGIN_PATH
from quarterdeck.ui.web import Viewer, render

TITLES = {
    400: "Bad request",
    401: "Sign in required",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Too large",
    422: "Invalid input",
    429: "Slow down",
    503: "Not available",
}


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "") or "hx-request" in request.headers


def login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    where = f"{LOGIN_PATH}?next={quote(target, safe='')}"
    if "hx-request" in request.headers:
        return Response(status_code=401, headers={"HX-Redirect": where})
    return RedirectResponse(where, status_code=303)


def error_page(
    request: Request,
    status: int,
    title: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
) -> Response | None:
    """The answer for an error on a ``/ui`` path, or None: answer it as the API would."""
    if not wants_html(request):
        return None
    if status == 401 and request.url.path != LOGIN_PATH:
        if request.method == "GET" or "hx-request" in request.headers:
            return login_redirect(request)
    keep = {k: v for k, v in (headers or {}).items() if k.lower() in ("retry-after", "allow")}
    viewer = getattr(request.state, VIEWER_STATE, None)  # signed in: keep the navigation
    return render(
        request,
        "error.html",
        viewer if isinstance(viewer, Viewer) else None,
        status=status,
        headers=keep,
        status_code=status,
        title=TITLES.get(status, title),
        detail=detail,
    )
