"""``quarterdeck keys create|list|update|revoke``: manage API keys.

Through the running server's API by default (``/v1/admin/keys``, with an admin
``QUARTERDECK_API_KEY``), like every other client command. Directly in Postgres with
``--direct`` (or when ``POSTGRES_URL`` is set and no API URL is given): that is how the first
admin key is made, before any key exists, and how a leaked key is revoked while the API is down.
Direct access needs the database credentials (more than any key: they could write the keys table)
and never creates a database: see :mod:`quarterdeck.security.direct`.
"""

from __future__ import annotations

import getpass
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from urllib.parse import quote

import typer
from rich.table import Table

from quarterdeck.exceptions import ConfigError, QuarterdeckError
from quarterdeck.kit.clock import utcnow
from quarterdeck.kit.console import JsonOpt, UrlOpt, console, err_console, fail, print_json
from quarterdeck.kit.durations import CENTURY_S, parse_duration
from quarterdeck.security.auth.permissions import Role
from quarterdeck.security.direct import DirectOpt, api_request, direct_database_url, use_direct

if TYPE_CHECKING:  # settings and the key service (asyncpg, Redis) are imported by the commands
    from quarterdeck.config import Settings
    from quarterdeck.security.auth.service import AuthService

T = TypeVar("T")
app = typer.Typer(
    help="Create, list, update and revoke API keys (through the API with an admin key; "
    "--direct for the first admin key).",
    no_args_is_help=True,
)
STATUS_COLOUR = {"active": "green", "expired": "yellow", "revoked": "red"}


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry in a minimal container
        return "cli"


def _settings(ctx: typer.Context) -> Settings:
    """Settings as the root command loaded them: ``quarterdeck --config FILE keys ...``."""
    from quarterdeck.config import load_settings

    config: Path | None = ctx.find_root().params.get("config")
    try:
        return load_settings(config)
    except ConfigError as exc:
        err_console.print(f"[bold red]error:[/] {exc.detail}", highlight=False)
        raise typer.Exit(2) from None


BOOTSTRAP_HINT = (
    "The first admin key is made directly in the database: run `quarterdeck keys create "
    "--direct --name admin --role admin --tenant '*'` where the server's data dir is (or with "
    "POSTGRES_URL set)."
)


def _direct(ctx: typer.Context, direct: bool, url: str | None) -> Settings | None:
    """The settings when this command goes to Postgres directly, None when it uses the API."""
    settings = _settings(ctx)
    return settings if use_direct(settings, direct, url) else None


def _api(url: str | None, method: str, path: str, **kwargs: Any) -> Any:
    return api_request(url, method, path, hint=BOOTSTRAP_HINT, **kwargs).json()


def _run(settings: Settings, use: Callable[[AuthService], Awaitable[T]]) -> T:
    async def go() -> T:
        from quarterdeck.kit.logs import configure_logging
        from quarterdeck.security.auth.service import build_auth_service
        from quarterdeck.store import migrations
        from quarterdeck.store.pool import Database, connect_once

        configure_logging("warning")
        url = direct_database_url(settings)
        conn = await connect_once(url)
        try:
            version = await migrations.current_version(conn)
        finally:
            await conn.close()
        if version < migrations.HEAD:
            fail(
                f"the database schema is at version {version}, not {migrations.HEAD}: run "
                "`quarterdeck db upgrade` first"
            )
        db = Database(url, min_size=1, max_size=2)
        await db.open()
        service = build_auth_service(settings, db, warn_if_disabled=False)
        try:
            return await use(service)
        finally:
            await service.aclose()
            await db.close()

    import asyncio

    try:
        return asyncio.run(go())
    except QuarterdeckError as exc:
        fail(exc.detail)


FALLBACK_HELP = (
    "Models this key's gateway calls may fail over to when the model asked for is overloaded: "
    "'default' (the deployment's QUARTERDECK_GATEWAY_FALLBACK), 'off' (never), 'on' (the "
    "deployment's QUARTERDECK_MODEL_FALLBACKS chain), or models in order, e.g. "
    "'claude-sonnet-4-5,claude-haiku-4-5'."
)


def parse_fallback(text: str) -> list[str] | None:
    """``--gateway-fallback``: default -> None, off -> [], on -> ['*'], else the models."""
    word = text.strip().lower()
    if word == "default":
        return None
    if word in ("off", "none"):
        return []
    if word in ("on", "*"):
        return ["*"]
    models = [m.strip() for m in text.split(",")]
    if any(not m for m in models):
        raise typer.BadParameter(
            "a comma-separated list of model names (or default, off, on)",
            param_hint="--gateway-fallback",
        )
    return models


def _fallback_text(value: list[str] | None) -> str:
    if value is None:
        return "default"
    if not value:
        return "off"
    return "on" if value == ["*"] else ",".join(value)


def _duration(text: str | None, option: str) -> timedelta | None:
    if text is None:
        return None
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None
    if seconds > CENTURY_S:  # a typo, and dates computed from it would overflow
        raise typer.BadParameter("at most 36500d (100 years)", param_hint=option)
    return timedelta(seconds=seconds)


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="What the key is for, e.g. 'ci-acme'.")],
    role: Annotated[Role, typer.Option(help="What the key may do (see the role matrix).")],
    tenant: Annotated[
        str, typer.Option(help="The tenant it acts for; '*' for all (admin/operator/auditor).")
    ],
    expires_in: Annotated[
        str | None, typer.Option(help="Lifetime, e.g. 90d or 12h [default: never expires].")
    ] = None,
    gateway_fallback: Annotated[str, typer.Option(help=FALLBACK_HELP)] = "default",
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    direct: DirectOpt = False,
) -> None:
    """Create a key and print it. It is shown only this once: store it now.

    The first admin key: `keys create --direct --name admin --role admin --tenant '*'`, run
    where the server's data dir is (or with POSTGRES_URL set).
    """
    from quarterdeck.security.auth.models import CreatedKey

    lifetime = _duration(expires_in, "--expires-in")
    expires_at = utcnow() + lifetime if lifetime is not None else None
    fallback = parse_fallback(gateway_fallback)
    settings = _direct(ctx, direct, url)
    if settings is None:
        body = {
            "name": name,
            "role": role.value,
            "tenant": tenant,
            "expires_at": expires_at.isoformat() if expires_at else None,
            "gateway_fallback": fallback,
        }
        created = CreatedKey.model_validate(_api(url, "POST", "/v1/admin/keys", json=body))
    else:
        created = _run(
            settings,
            lambda s: s.create(
                name,
                role,
                tenant,
                expires_at=expires_at,
                actor=_actor(),
                gateway_fallback=fallback,
            ),
        )
    if as_json:
        print_json(created.model_dump(mode="json"))
        return
    console.print(
        f"created key [bold]{created.id}[/] ({created.role.value}, tenant {created.tenant})"
    )
    console.print("the key is shown only now; store it somewhere safe:", style="yellow")
    typer.echo(created.api_key)


@app.command("list")
def list_keys(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    show_all: Annotated[
        bool, typer.Option("--all", help="Include revoked and expired keys.")
    ] = False,
    unused_for: Annotated[
        str | None,
        typer.Option(
            "--unused-for",
            help="Only keys not used for this long, e.g. 90d (never-used keys count from "
            "their creation): the ones to retire. Last use is written every 30 s.",
        ),
    ] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    direct: DirectOpt = False,
) -> None:
    """List keys, newest first (never the keys themselves), with when each was last used."""
    from quarterdeck.security.auth.models import ApiKey

    idle = _duration(unused_for, "--unused-for")
    settings = _direct(ctx, direct, url)
    if settings is None:
        params: dict[str, Any] = {"include_inactive": show_all}
        if tenant is not None:
            params["tenant"] = tenant
        page = _api(url, "GET", "/v1/admin/keys", params=params)
        items = [ApiKey.model_validate(k) for k in page["items"]]
    else:
        items = _run(settings, lambda s: s.list_keys(tenant, include_inactive=show_all))
    if idle is not None:
        cutoff = utcnow() - idle
        items = [k for k in items if (k.last_used_at or k.created_at) <= cutoff]
    if as_json:
        print_json([k.model_dump(mode="json") for k in items])
        return
    if not items:
        which = f" of tenant {tenant}" if tenant else ""
        more = "" if show_all else " (--all also lists revoked and expired keys)"
        unused = f" unused for {unused_for}" if unused_for else ""
        console.print(f"No{' active' if not show_all else ''} keys{which}{unused}{more}.")
        return
    table = Table()
    table.add_column("id", no_wrap=True)  # what `keys revoke` takes
    table.add_column("prefix", no_wrap=True)  # what the holder sees at the start of the key
    for column in ("name", "role", "tenant", "status", "expires", "created", "last used"):
        table.add_column(column)
    for key in items:
        colour = STATUS_COLOUR[key.status.value]
        table.add_row(
            key.id,
            key.prefix,
            key.name,
            key.role.value,
            key.tenant,
            f"[{colour}]{key.status.value}[/]",
            _when(key.expires_at),
            _when(key.created_at),
            _when(key.last_used_at) or "never",
        )
    console.print(table)


@app.command("update")
def update(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="The key id (from `keys list`).")],
    gateway_fallback: Annotated[str, typer.Option(help=FALLBACK_HELP)],
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    direct: DirectOpt = False,
) -> None:
    """Change a key's gateway fallback. It applies within seconds on every replica."""
    from quarterdeck.security.auth.models import ApiKey

    fallback = parse_fallback(gateway_fallback)
    settings = _direct(ctx, direct, url)
    if settings is None:
        path = f"/v1/admin/keys/{quote(key_id, safe='')}"
        key = ApiKey.model_validate(_api(url, "PATCH", path, json={"gateway_fallback": fallback}))
    else:
        key = _run(settings, lambda s: s.set_gateway_fallback(key_id, fallback, actor=_actor()))
    if as_json:
        print_json(key.model_dump(mode="json"))
    else:
        console.print(f"{key.id}: gateway fallback {_fallback_text(key.gateway_fallback)}")


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="The key id (from `keys list`).")],
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    direct: DirectOpt = False,
) -> None:
    """Revoke a key. It stops working within seconds on every replica."""
    from quarterdeck.security.auth.models import ApiKey

    settings = _direct(ctx, direct, url)
    if settings is None:
        key = ApiKey.model_validate(_api(url, "DELETE", f"/v1/admin/keys/{quote(key_id, safe='')}"))
    else:
        key = _run(settings, lambda s: s.revoke(key_id, actor=_actor()))
    if as_json:
        print_json(key.model_dump(mode="json"))
    else:
        console.print(f"{key.id}: {key.status.value}")


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else ""
