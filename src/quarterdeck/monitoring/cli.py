"""``quarterdeck monitoring ...``: tools for the monitoring bundle in ``deploy/monitoring``.

The SLO alert rules are generated, not hand-written (see :mod:`quarterdeck.monitoring.slo`), so
operators need a command to regenerate them after editing ``slo.yaml`` and CI needs a ``--check``
mode that fails when the committed file is stale.
"""

from __future__ import annotations

from pathlib import Path

import typer

from quarterdeck.monitoring.slo import (
    SLODefinitionError,
    dump_rules,
    load_slo_file,
    render_slo_rules,
)

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
