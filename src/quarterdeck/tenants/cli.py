"""``quarterdeck tenants ...``: erase a tenant, show or set its run retention, purge now.

Like ``quarterdeck audit`` these connect to Postgres directly, with the server's settings and
audit keys: an erasure must be possible while the API is down, and it needs the keys anyway
(it crypto-shreds the tenant's audit payloads and audits what it did).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from quarterdeck.exceptions import QuarterdeckError
from quarterdeck.kit.console import JsonOpt, console, fail, print_json
from quarterdeck.kit.durations import parse_duration

if TYPE_CHECKING:  # the service reaches every domain (FastAPI, asyncpg): imported by `_run`
    from quarterdeck.tenants.models import ErasureResult, PurgeReport, RetentionOut
    from quarterdeck.tenants.service import TenantData

T = TypeVar("T")
app = typer.Typer(
    help="A tenant's data: erasure (GDPR Art. 17) and run-data retention (connects to Postgres).",
    no_args_is_help=True,
)


def _run(fn: Callable[[TenantData], Awaitable[T]]) -> T:
    """Open the database, the audit log and the key service from settings, run ``fn``."""
    from quarterdeck.config import cli_settings
    from quarterdeck.kit.logs import configure_logging
    from quarterdeck.runs.store import PostgresRunStore
    from quarterdeck.security.audit import AuditLog
    from quarterdeck.security.auth import build_auth_service
    from quarterdeck.store import migrations
    from quarterdeck.store.pool import Database, database_url
    from quarterdeck.tenants.wiring import tenant_data

    s = cli_settings()
    configure_logging("warning")

    async def main() -> T:
        url = database_url(s)
        await migrations.upgrade(url)
        db = Database(url, min_size=1, max_size=4)
        await db.open()
        try:
            audit = AuditLog.from_settings(s, db)
            await audit.start(loops=False)
            auth = build_auth_service(s, db, warn_if_disabled=False)
            store = PostgresRunStore(db)
            try:
                return await fn(tenant_data(s, db, store, audit, auth=auth))
            finally:
                await store.aclose()
                await auth.aclose()
                await audit.aclose()
        finally:
            await db.close()

    import asyncio

    try:
        return asyncio.run(main())
    except QuarterdeckError as exc:
        fail(exc.detail)


def _cli_actor() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


@app.command()
def erase(
    tenant: str,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: this cannot be undone.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Erase everything Quarterdeck holds of TENANT: keys revoked, runs cancelled then deleted
    with their workspaces, held tool calls, gateway records and incidents deleted, audit
    payloads crypto-shredded (the audit chain still verifies)."""
    if not yes:
        fail(f"erasing {tenant!r} cannot be undone; repeat with --yes to confirm", 2)

    async def go(data: TenantData) -> ErasureResult:
        with console.status(f"erasing tenant {tenant}: cancelling runs, deleting, shredding"):
            return await data.erase(tenant, actor=_cli_actor())

    result = _run(go)
    if as_json:
        print_json(result.model_dump(mode="json"))
        return
    console.print(
        f"{tenant}: erased {result.runs} run(s) ({sum(result.rows.values())} rows), "
        f"{result.workspaces} workspace(s); revoked {result.api_keys_revoked} key(s); "
        f"destroyed {result.audit_keys_destroyed} audit data key(s)"
    )


@app.command()
def retention(
    tenant: str,
    value: Annotated[
        str | None, typer.Argument(help="New retention of finished runs, e.g. 30d; omit to show.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show or set how long TENANT's finished runs are kept."""
    seconds = None
    if value is not None:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            fail(f"retention: {exc}", 2)
        if seconds <= 0:
            fail("retention must be greater than zero", 2)

    async def go(data: TenantData) -> RetentionOut:
        if seconds is None:
            return await data.get_retention(tenant)
        return await data.set_retention(tenant, seconds, actor=_cli_actor())

    out = _run(go)
    if as_json:
        print_json(out.model_dump(mode="json"))
        return
    source = "override" if out.overridden else "default"
    console.print(f"{tenant}: finished runs kept {out.retention_days:g} days ({source})")


@app.command()
def purge(as_json: JsonOpt = False) -> None:
    """Delete finished runs past their tenant's retention now (``up`` does this on a schedule)."""

    async def go(data: TenantData) -> PurgeReport:
        with console.status("purging finished runs past their retention"):
            return await data.purge()

    report = _run(go)
    if as_json:
        print_json(report.model_dump(mode="json"))
        return
    console.print(
        f"purged {report.runs} run(s) of {len(report.by_tenant)} tenant(s), "
        f"{report.workspaces} workspace(s)"
    )
