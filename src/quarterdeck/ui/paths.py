"""Where the dashboard lives: what the app's error handler and the body gate ask of a path."""

from __future__ import annotations

UI_PREFIX = "/ui"
LOGIN_PATH = "/ui/login"
STATIC_PREFIX = "/ui/static"


def is_ui_path(path: str) -> bool:
    return path == UI_PREFIX or path.startswith(UI_PREFIX + "/")
