"""The web dashboard under ``/ui``: server-rendered pages (Jinja2) for the people on call.

Pages read and act through the same services and the same role and tenant rules as the API,
with a session cookie instead of a key header (``guard.py``). htmx and Server-Sent Events make
parts live; without JavaScript every page still reads, and every form still posts.

- :mod:`.web`: templates, filters, security headers, ``render``.
- :mod:`.guard`: ``page(permission)`` / ``action(permission)``: session, role, tenant, CSRF.
- :mod:`.errors`: errors on ``/ui`` paths as pages (a browser) or problem+json (anything else).
- :mod:`.login`: sign in with an API key, sign out.
- :mod:`.routes`: every page's router under one prefix, and the static files.
"""

from quarterdeck.ui.paths import UI_PREFIX, is_ui_path

__all__ = ["UI_PREFIX", "is_ui_path"]
