"""``quarterdeck audit ...``: verify, export, checkpoints, purge, shred, retention.

Through the running server's API by default (``/v1/audit/...`` with an auditor or admin
``QUARTERDECK_API_KEY``), like every other client command. With ``--direct`` (or ``POSTGRES_URL``
set and no API URL given) they open Postgres and the audit keys themselves: verification then
does not depend on the API process whose records it checks, for an auditor with database access
and the keys. Direct access never creates a database or keys (:mod:`quarterdeck.security.direct`).
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, TypeVar
from urllib.parse import quote

import typer
from rich.markup import escape

from quarterdeck.exceptions import QuarterdeckError
from quarterdeck.kit.console import JsonOpt, UrlOpt, console, fail, print_json
from quarterdeck.security.direct import (
    DirectOpt,
    api_lines,
    api_request,
    direct_database_url,
    require_audit_keys,
    use_direct,
)

if TYPE_CHECKING:  # the log's modules bring asyncpg and settings: imported by the commands
    from quarterdeck.security.audit.checkpoints import Checkpoint
    from quarterdeck.security.audit.service import AuditLog

T = TypeVar("T")
app = typer.Typer(
    help="Verify, export and manage the tamper-evident audit log (through the API; --direct "
    "opens Postgres).",
    no_args_is_help=True,
)
checkpoints_app = typer.Typer(help="Signed checkpoints.", no_args_is_help=True)
app.add_typer(checkpoints_app, name="checkpoints")
TenantOpt = Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")]
OutputOpt = Annotated[
    Path | None, typer.Option("--output", "-o", help="Write here instead of standard output.")
]


def _direct(direct: bool, url: str | None) -> bool:
    from quarterdeck.config import cli_settings

    return use_direct(cli_settings(), direct, url)


def _api(url: str | None, method: str, path: str, **kwargs: Any) -> Any:
    return api_request(url, method, path, **kwargs).json()


def _path(tenant: str) -> str:
    return quote(tenant, safe="")


def _run(fn: Callable[[AuditLog], Awaitable[T]]) -> T:
    """Open the database and the audit log from settings, run ``fn``, close everything."""
    from quarterdeck.config import cli_settings as settings
    from quarterdeck.kit.logs import configure_logging
    from quarterdeck.security.audit.service import AuditLog
    from quarterdeck.store.pool import Database

    s = settings()
    configure_logging("warning")
    url = direct_database_url(s)
    require_audit_keys(s)

    async def main() -> T:
        db = Database(url, min_size=1, max_size=4)
        await db.open()
        try:
            log = AuditLog.from_settings(s, db)
            await log.start(loops=False)
            try:
                return await fn(log)
            finally:
                await log.aclose()
        finally:
            await db.close()

    import asyncio

    try:
        return asyncio.run(main())
    except QuarterdeckError as exc:
        fail(exc.detail)
    except ValueError as exc:  # invalid input found by the audit log (e.g. a tenant name)
        fail(str(exc), 2)


@contextmanager
def _output(path: Path | None) -> Iterator[IO[str]]:
    if path is None:
        yield sys.stdout
        return
    with path.open("w", encoding="utf-8") as f:
        yield f


def _when(value: str | None, name: str) -> datetime | None:
    """RFC 3339 / ISO 8601; a time without an offset is taken as UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{name}: {value!r} is not a date or time (use e.g. 2026-01-31T00:00:00Z)", 2)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _checkpoint_lines(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        found = [json.loads(line) for line in filter(None, (raw.strip() for raw in lines))]
    except (OSError, ValueError) as exc:
        fail(f"cannot read checkpoints from {path}: {exc}", 2)
    if not all(isinstance(d, dict) for d in found):
        fail(f"cannot read checkpoints from {path}: each line must be a JSON object", 2)
    return found


def _load_checkpoints(path: Path) -> list[Checkpoint]:
    from quarterdeck.security.audit.checkpoints import Checkpoint

    found: list[Checkpoint] = []
    try:
        for d in _checkpoint_lines(path):
            found.append(
                Checkpoint(
                    id=int(d["id"]),
                    tenant=str(d["tenant"]),
                    seq=int(d["seq"]),
                    head_hash=bytes.fromhex(d["head_hash"]),
                    count=int(d["count"]),
                    created_at=datetime.fromisoformat(d["created_at"]),
                    prev=bytes.fromhex(d["prev"]),
                    key_fingerprint=str(d["key_fingerprint"]),
                    signature=base64.b64decode(d["signature"]),
                )
            )
    except (ValueError, KeyError, TypeError) as exc:
        fail(f"cannot read checkpoints from {path}: {exc}", 2)
    return found


@app.command()
def verify(
    tenant: TenantOpt = None,
    against: Annotated[
        Path | None,
        typer.Option(
            help="Also check against checkpoints exported earlier (JSON Lines from "
            "`audit checkpoints export`): catches a truncation that deleted recent "
            "checkpoints along with the events."
        ),
    ] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    direct: DirectOpt = False,
) -> None:
    """Verify the hash chains and signed checkpoints; exit 1 when tampering is found."""
    from quarterdeck.security.audit.models import VerifyReport

    if not _direct(direct, url):
        params = {"tenant": tenant} if tenant else {}
        if against is None:
            answer = _api(url, "GET", "/v1/audit/verify", params=params)
        else:
            body = {"checkpoints": _checkpoint_lines(against)}
            answer = _api(url, "POST", "/v1/audit/verify", params=params, json=body)
        report = VerifyReport.model_validate(answer)
    else:
        external = _load_checkpoints(against) if against is not None else []
        report = _run(lambda log: log.verify(tenant, external))
    if as_json:
        print_json(report.model_dump(mode="json"))
    else:
        for problem in report.problems:
            console.print(f"[red]PROBLEM[/] {escape(str(problem))}", highlight=False)
        verdict = "[green]OK[/]" if report.ok else f"[red]BROKEN[/] ({len(report.problems)})"
        console.print(
            f"{verdict}: {report.tenants_checked} tenant(s), {report.events_checked} event(s), "
            f"{report.checkpoints_checked} checkpoint(s) in {report.duration_s:.2f}s"
        )
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def export(
    tenant: TenantOpt = None,
    from_: Annotated[str | None, typer.Option("--from", help="Events at or after (UTC).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Events before (UTC).")] = None,
    output: OutputOpt = None,
    url: UrlOpt = None,
    direct: DirectOpt = False,
) -> None:
    """Export events as JSON Lines, decrypted where the key exists, each with its record."""
    since, until = _when(from_, "--from"), _when(to, "--to")
    if not _direct(direct, url):
        params = {"tenant": tenant, "since": since, "until": until}
        wanted = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in params.items()}
        query = {k: v for k, v in wanted.items() if v is not None}
        count = 0
        with _output(output) as out:
            for line in api_lines(url, "/v1/audit/export", params=query):
                if line:
                    out.write(line + "\n")
                    count += 1
        if output is not None:
            console.print(f"exported {count} event(s) to {output}")
        return

    async def write(log: AuditLog) -> int:
        n = 0
        with _output(output) as out:
            async for line in log.export(tenant, since, until):
                out.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
                n += 1
        return n

    n = _run(write)
    if output is not None:
        console.print(f"exported {n} event(s) to {output}")


@checkpoints_app.command("export")
def checkpoints_export(
    tenant: TenantOpt = None,
    output: OutputOpt = None,
    url: UrlOpt = None,
    direct: DirectOpt = False,
) -> None:
    """Export signed checkpoints as JSON Lines, to keep off-site (see `verify --against`)."""
    if not _direct(direct, url):
        count, cursor = 0, 0
        with _output(output) as out:
            while True:
                params: dict[str, Any] = {"cursor": cursor, "limit": 1000}
                if tenant:
                    params["tenant"] = tenant
                page = _api(url, "GET", "/v1/audit/checkpoints", params=params)
                for item in page["items"]:
                    out.write(json.dumps(item, separators=(",", ":")) + "\n")
                    count += 1
                if page.get("next_cursor") is None:
                    break
                cursor = int(page["next_cursor"])
        if output is not None:
            console.print(f"exported {count} checkpoint(s) to {output}")
        return

    async def write(log: AuditLog) -> int:
        n = 0
        with _output(output) as out:
            async for cp in log.export_checkpoints(tenant):
                out.write(cp.model_dump_json() + "\n")
                n += 1
        return n

    n = _run(write)
    if output is not None:
        console.print(f"exported {n} checkpoint(s) to {output}")


@app.command()
def purge(
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    direct: DirectOpt = False,
) -> None:
    """Delete events older than their tenant's retention, in whole checkpointed segments."""
    from quarterdeck.security.audit.models import Problem, PurgeResult
    from quarterdeck.security.audit.retention import PurgeOutcome

    if not _direct(direct, url):
        answer = _api(url, "POST", "/v1/audit/purge", params={"tenant": tenant} if tenant else {})
        outcome = PurgeOutcome(
            purged=[PurgeResult.model_validate(r) for r in answer["purged"]],
            problems=[Problem.model_validate(p) for p in answer["problems"]],
        )
    else:
        outcome = _run(lambda log: log.purge(tenant=tenant))
    if as_json:
        print_json(
            {
                "purged": [r.model_dump() for r in outcome.purged],
                "problems": [p.model_dump(mode="json") for p in outcome.problems],
            }
        )
    else:
        for r in outcome.purged:
            console.print(f"{r.tenant}: purged {r.events_purged} event(s) up to seq {r.anchor_seq}")
        for problem in outcome.problems:
            console.print(f"[red]PROBLEM[/] {escape(str(problem))}", highlight=False)
        if not outcome.purged and not outcome.problems:
            console.print("nothing to purge")
    if outcome.problems:
        raise typer.Exit(1)


@app.command()
def shred(
    tenant: str,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: this cannot be undone.")] = False,
    url: UrlOpt = None,
    direct: DirectOpt = False,
) -> None:
    """Crypto-shred TENANT: its audit payloads become unreadable forever; the chain stays."""
    if not yes:
        fail(f"shredding {tenant!r} cannot be undone; repeat with --yes to confirm", 2)
    if not _direct(direct, url):
        path = f"/v1/audit/tenants/{_path(tenant)}/shred"
        count = int(_api(url, "POST", path)["keys_shredded"])
    else:
        count = _run(lambda log: log.shred_tenant(tenant, actor=_cli_actor()))
    console.print(f"{tenant}: destroyed {count} data key(s)")


@app.command()
def retention(
    tenant: str,
    value: Annotated[
        str | None, typer.Argument(help="New retention, e.g. 90d or 7y; omit to show.")
    ] = None,
    url: UrlOpt = None,
    direct: DirectOpt = False,
) -> None:
    """Show or set TENANT's audit retention."""
    from quarterdeck.kit.durations import parse_duration

    if not _direct(direct, url):
        path = f"/v1/audit/retention/{_path(tenant)}"
        if value is None:
            answer = _api(url, "GET", path)
        else:
            answer = _api(url, "PUT", path, json={"retention": value})
        seconds = float(answer["retention_seconds"])
    elif value is None:
        seconds = _run(lambda log: log.get_retention(tenant))
    else:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            fail(str(exc), 2)

        async def apply(log: AuditLog) -> float:
            await log.set_retention(tenant, seconds, actor=_cli_actor())
            return seconds

        _run(apply)
    console.print(f"{tenant}: {seconds:g} s ({seconds / 86400:g} days)")


def _cli_actor() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"
