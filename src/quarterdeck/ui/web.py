"""Rendering: one Jinja2 environment, the filters pages share, and the headers every page sends.

Times are rendered as ``<time datetime="…">`` in UTC and turned into the browser's zone by
``static/app.js`` (without JavaScript they still read, in UTC). Pages are never cached: they
show who may see what, and a shared cache must not keep one viewer's page for another.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from quarterdeck import __version__
from quarterdeck.security.auth import Permission, Principal

NONE = "\u2013"  # an en dash: a missing value in a table
SECURITY_HEADERS: Mapping[str, str] = {
    # Scripts and styles only from our own static files: no inline script can run, so markup a
    # prompt or a model smuggles into a page is inert even if escaping ever missed it.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; "
        "object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True, slots=True)
class NavItem:
    label: str
    href: str
    permission: Permission


NAV: tuple[NavItem, ...] = (
    NavItem("Overview", "/ui", Permission.SELF_READ),
    NavItem("Runs", "/ui/runs", Permission.RUNS_READ),
    NavItem("Gateway", "/ui/gateway", Permission.GATEWAY_READ),
    NavItem("Incidents", "/ui/incidents", Permission.INCIDENTS_READ),
    NavItem("Scaling", "/ui/scaling", Permission.SCALING_READ),
    NavItem("Rollouts", "/ui/rollouts", Permission.ROLLOUTS_READ),
    NavItem("Reports", "/ui/reports", Permission.REPORTS_READ),
    NavItem("Audit", "/ui/audit", Permission.AUDIT_READ),
    NavItem("Budgets", "/ui/budgets", Permission.BUDGETS_READ),
    NavItem("Keys", "/ui/keys", Permission.KEYS_READ),
)


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking at a page: what ``page(...)`` and ``action(...)`` hand to a route."""

    principal: Principal
    csrf: str
    auth_off: bool

    def can(self, permission: Permission | str) -> bool:
        return self.principal.can(Permission(permission))

    @property
    def tenant(self) -> str | None:
        """The tenant reads are limited to (None: all), as ``Principal.tenant_filter``."""
        return self.principal.tenant_filter()

    @property
    def nav(self) -> list[NavItem]:
        return [item for item in NAV if self.can(item.permission)]


def when(value: datetime | None) -> Markup:
    """A timestamp the browser shows in its own zone (``app.js``); UTC text without JS."""
    if value is None:
        return Markup('<span class="muted">&ndash;</span>')
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    utc = value.astimezone(UTC)
    return Markup('<time datetime="{}">{}</time>').format(
        utc.isoformat(), utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    )


def usd(value: float | Decimal | None, places: int | None = None) -> str:
    if value is None:
        return NONE
    v = float(value)
    if places is None:
        places = 2 if abs(v) >= 100 else 4
    return f"${v:,.{places}f}"


def count(value: float | int | None) -> str:
    """Compact counts for dense tables: 950, 12.3k, 4.56M."""
    if value is None:
        return NONE
    v = float(value)
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.3g}{unit}"
    return f"{int(v)}" if v == int(v) else f"{v:.3g}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return NONE
    s = float(seconds)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)}m {int(s % 60):02d}s"
    return f"{int(s // 3600)}h {int(s % 3600 // 60):02d}m"


def pct(value: float | None) -> str:
    return NONE if value is None else f"{value * 100:.1f}%"


def csrf_field(viewer: Viewer) -> Markup:
    return Markup('<input type="hidden" name="csrf" value="{}">').format(escape(viewer.csrf))


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("quarterdeck.ui", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,  # a missing value is a bug a test finds, not a blank
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, usd=usd, count=count, duration=duration, pct=pct)
    env.globals.update(version=__version__, csrf_field=csrf_field)
    return env


ENV = _environment()


def render_text(template: str, **context: Any) -> str:
    return ENV.get_template(template).render(**context)


def render(
    request: Request,
    template: str,
    viewer: Viewer | None,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """A page (or, for a template under ``fragments/``, the part htmx swaps in)."""
    html = render_text(template, request=request, me=viewer, path=request.url.path, **context)
    return HTMLResponse(html, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})
