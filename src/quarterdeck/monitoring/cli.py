"""``quarterdeck monitoring ...``: tools for the monitoring bundle in ``deploy/monitoring``; and
:func:`run_doctor`, the body of ``quarterdeck doctor`` (mounted by the root command, which hands
it this host's sandbox report: the sandbox sits floors above this one).

The SLO alert rules are generated, not hand-written (see :mod:`quarterdeck.monitoring.slo`), so
operators need a command to regenerate them after editing ``slo.yaml`` and CI needs a ``--check``
mode that fails when the committed file is stale.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from quarterdeck.kit.console import console, print_json

if TYPE_CHECKING:  # pydantic-settings: loaded by the commands that read settings
    from quarterdeck.config import Settings

app = typer.Typer(help="Monitoring bundle tools: generate SLO burn-rate rules for Prometheus.")


@app.callback()
def _monitoring() -> None:
    """Monitoring bundle tools (kept as a group so more commands can join ``slo-rules``)."""


@app.command("slo-rules")
def slo_rules(
    slo_file: Path = typer.Argument(
        ..., help="SLO definition file, e.g. deploy/monitoring/slo.yaml"
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write the rules here instead of standard output."
    ),
    check: bool = typer.Option(
        False,
        "--check",
        help="Do not write; exit 1 if --output differs from what would be written.",
    ),
) -> None:
    """Generate multi-window, multi-burn-rate SLO recording and alerting rules."""
    from quarterdeck.monitoring.slo import (
        SLODefinitionError,
        dump_rules,
        load_slo_file,
        render_slo_rules,
    )

    try:
        text = dump_rules(render_slo_rules(load_slo_file(slo_file)))
    except SLODefinitionError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    if check:
        if output is None:
            typer.echo("error: --check needs --output", err=True)
            raise typer.Exit(2)
        current = output.read_text() if output.exists() else ""
        if current != text:
            typer.echo(
                f"{output} is stale; regenerate it with `quarterdeck monitoring slo-rules`",
                err=True,
            )
            raise typer.Exit(1)
        typer.echo(f"{output} is up to date")
        return
    if output is None:
        typer.echo(text, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    typer.echo(f"wrote {output}", err=True)


def doctor_url(settings: Settings, explicit: str | None) -> str:
    """``--url``, else ``QUARTERDECK_URL``, else this host's API port from the settings."""
    url = explicit or os.environ.get("QUARTERDECK_URL")
    if url:
        return url.rstrip("/")
    host = settings.http_host if settings.http_host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    return f"http://{host}:{settings.http_port}"


def run_doctor(
    settings: Settings,
    url: str | None,
    as_json: bool,
    local_isolation: Callable[[], Mapping[str, Any]] | None = None,
    preflight: bool = False,
    local_claude_code: Callable[[], Mapping[str, Any]] | None = None,
) -> None:
    """Run the checks, print them (a table, or ``--json``), exit 1 when any failed."""
    import asyncio

    from quarterdeck.monitoring.doctor import run_checks

    base = doctor_url(settings, url)
    key = os.environ.get("QUARTERDECK_API_KEY") or None
    checks = asyncio.run(
        run_checks(
            settings,
            base,
            key,
            local_isolation,
            preflight=preflight,
            local_claude_code=local_claude_code,
        )
    )
    if as_json:
        print_json([c.__dict__ for c in checks])
    else:
        table = Table("check", "status", "detail", "fix")
        colours = {"ok": "green", "warn": "yellow", "fail": "red"}
        for c in checks:
            status = f"[{colours[c.status]}]{c.status}[/]"
            table.add_row(c.name, status, escape(c.detail), escape(c.fix))
        console.print(table)
    if any(c.status == "fail" for c in checks):
        raise typer.Exit(1)
