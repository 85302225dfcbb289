"""Destructive actions are confirmed before they happen, with or without JavaScript.

A form for a destructive action carries ``confirmed=yes`` only when its person said yes: in the
confirmation ``<dialog>`` of ``static/app.js`` (which no live update touches: Sidekiq's live
refresh once replaced a delete confirmation and a queue was lost), or on the page this module
renders when the form arrived without it (no JavaScript).
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import Request
from fastapi.responses import Response

from quarterdeck.ui.web import Viewer, render


async def confirmed(request: Request) -> bool:
    form = await request.form()
    return form.get("confirmed") == "yes"


async def ask(
    request: Request,
    viewer: Viewer,
    *,
    message: str,
    verb: str,
    back: str,
    fields: Iterable[tuple[str, str]] | None = None,
) -> Response:
    """The confirmation page re-posting the same form (its fields, minus the CSRF token, which
    the page adds for this session) with ``confirmed=yes``."""
    if fields is None:
        form = await request.form()
        fields = [
            (k, v)
            for k, v in form.multi_items()
            if isinstance(v, str) and k not in ("csrf", "confirmed")
        ]
    return render(
        request,
        "confirm.html",
        viewer,
        action=request.url.path,
        message=message,
        verb=verb,
        back=back,
        fields=list(fields),
    )
