"""``quarterdeck compliance report``: evidence per control from the stored data.

From the running server (``GET /v1/compliance/report``, an auditor or admin key of tenant
``*``) by default; with ``--direct`` (or ``POSTGRES_URL`` set and no API URL given) it opens
Postgres and the audit keys itself, never creating either (:mod:`quarterdeck.security.direct`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from quarterdeck.kit.console import UrlOpt, console, err_console, fail
from quarterdeck.security.direct import (
    DirectOpt,
    api_request,
    direct_database_url,
    require_audit_keys,
    use_direct,
)

app = typer.Typer(help="Compliance evidence (SOC 2, ISO 27001, HIPAA, GDPR).", no_args_is_help=True)


def _date(value: str, option: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option} must be a date or time like 2026-11-01 (got {value!r})", code=2)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@app.command()
def report(
    start: Annotated[str, typer.Option("--from", help="Period start (ISO date/time, UTC).")],
    end: Annotated[str, typer.Option("--to", help="Period end, exclusive.")],
    fmt: Annotated[str, typer.Option("--format", help="markdown or json.")] = "markdown",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file.")] = None,
    verify: Annotated[bool, typer.Option(help="Verify the audit hash chains.")] = True,
    url: UrlOpt = None,
    direct: DirectOpt = False,
) -> None:
    """Map SOC 2 CC6.1/CC6.3 and CC7.2, ISO 27001 A.8.15, HIPAA 164.312(b) and GDPR Art. 30/17
    to evidence from Postgres for the period, and say what Quarterdeck does not cover."""
    from quarterdeck.config import cli_settings as settings
    from quarterdeck.security.compliance.report import (
        ComplianceReport,
        RunRetention,
        build_report,
        to_markdown,
    )

    if fmt not in ("markdown", "json"):
        fail(f"--format must be markdown or json (got {fmt!r})", code=2)
    since, until = _date(start, "--from"), _date(end, "--to")
    if until <= since:
        fail("--to must be after --from", code=2)
    s = settings()
    if not use_direct(s, direct, url):
        params = {"from": since.isoformat(), "to": until.isoformat(), "verify": verify}
        answer = api_request(url, "GET", "/v1/compliance/report", params=params).json()
        built = ComplianceReport.model_validate(answer)
        _write(built.model_dump_json(indent=2) if fmt == "json" else to_markdown(built), output)
        return
    database = direct_database_url(s)
    require_audit_keys(s)

    async def build() -> str:
        from quarterdeck.security.audit import AuditLog
        from quarterdeck.store.pool import Database

        db = Database(database, min_size=1, max_size=4)
        await db.open()
        try:
            checked = None
            if verify:
                try:
                    checked = await AuditLog.from_settings(s, db).verify()
                except Exception as exc:  # reported in the logging controls, not fatal
                    err_console.print(f"[yellow]warning:[/] audit verification failed: {exc}")
            retention = RunRetention(s.run_retention_days * 86_400.0, s.run_purge_interval)
            built = await build_report(db, since, until, checked, retention)
        finally:
            await db.close()
        return built.model_dump_json(indent=2) if fmt == "json" else to_markdown(built)

    import asyncio

    _write(asyncio.run(build()), output)


def _write(text: str, output: Path | None) -> None:
    if output is not None:
        output.write_text(text)
        console.print(f"written: {output}")
    else:
        print(text)
