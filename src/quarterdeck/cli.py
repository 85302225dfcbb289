"""The ``quarterdeck`` command line."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from quarterdeck import __version__
from quarterdeck.approvals.cli import app as approvals_app
from quarterdeck.chaos.cli import app as chaos_app
from quarterdeck.config import cli_settings, set_cli_config
from quarterdeck.exceptions import ConfigError, QuarterdeckError
from quarterdeck.gateway.cli import app as gateway_app
from quarterdeck.incidents.cli import app as incidents_app
from quarterdeck.kit.console import console, err_console, fail, print_json
from quarterdeck.kit.logs import configure_logging
from quarterdeck.runs.cli import app as run_app
from quarterdeck.security.audit.cli import app as audit_app
from quarterdeck.security.auth.cli import app as keys_app
from quarterdeck.security.compliance.cli import app as compliance_app
from quarterdeck.security.policy.cli import app as policy_app
from quarterdeck.tenants.cli import app as tenants_app

app = typer.Typer(
    help="Quarterdeck: a durable control plane for AI coding agents.\n\n"
    'Start everything with `quarterdeck up`, then `quarterdeck run submit "..."`.',
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema management.", no_args_is_help=True)
app.add_typer(run_app, name="run")
app.add_typer(db_app, name="db")
try:
    from quarterdeck.monitoring.cli import app as monitoring_app

    app.add_typer(monitoring_app, name="monitoring")
except ImportError:  # pragma: no cover
    pass

app.add_typer(incidents_app, name="incidents")
app.add_typer(keys_app, name="keys")
app.add_typer(approvals_app, name="approvals")
app.add_typer(compliance_app, name="compliance")
app.add_typer(audit_app, name="audit")
app.add_typer(policy_app, name="policy")
app.add_typer(chaos_app, name="chaos")
app.add_typer(gateway_app, name="gateway")
app.add_typer(tenants_app, name="tenants")


@app.callback()
def _root(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="YAML settings file [env: QUARTERDECK_CONFIG; default: "
            "/app/config/quarterdeck.yaml if present].",
        ),
    ] = None,
) -> None:
    set_cli_config(config)


settings = cli_settings


def _serve(
    api: bool, workers: bool, processes: int | None = None, supervised: bool = False
) -> None:
    s = settings()
    if processes is not None:
        s = s.model_copy(update={"worker_processes": processes})
    configure_logging(s.log_level)
    if not s.auth_required:
        err_console.print(
            "[bold yellow]WARNING:[/] authentication is OFF (development mode): every caller is"
            " an admin. Set QUARTERDECK_AUTH_ENABLED=true, or use production mode."
        )
    from quarterdeck.server import serve

    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve(s, api=api, workers=workers, supervised=supervised))
    except ConfigError as exc:
        err_console.print(f"[bold red]error:[/] {exc.detail}", highlight=False)
        raise typer.Exit(2) from None
    except QuarterdeckError as exc:
        fail(exc.detail)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed: the event loop is on every hot path (HTTP, Postgres, workers)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - not on every platform
        return None
    return uvloop.new_event_loop


ProcessesOption = Annotated[
    int | None,
    typer.Option(
        "--worker-processes",
        "-w",
        min=1,
        max=64,
        help="Worker processes in all, this one included (each extra one is a child `worker`, "
        "metrics on the metrics port + i). One event loop uses one core: raise this to the "
        "core count when runs are CPU-bound. Default: QUARTERDECK_WORKER_PROCESSES, else 1.",
        show_default=False,
    ),
]


@app.command()
def up(processes: ProcessesOption = None) -> None:
    """Run everything: API (:8080), metrics (:9090) and a worker pool, in one process unless
    --worker-processes asks for more.

    With POSTGRES_URL unset, an embedded Postgres is started in the data directory.
    """
    _serve(api=True, workers=True, processes=processes)


@app.command()
def serve(supervised: Annotated[bool, typer.Option("--supervised", hidden=True)] = False) -> None:
    """Run the HTTP API only (no workers)."""
    _serve(api=True, workers=False, supervised=supervised)


@app.command()
def worker(
    processes: ProcessesOption = None,
    supervised: Annotated[bool, typer.Option("--supervised", hidden=True)] = False,
) -> None:
    """Run a worker pool only (no HTTP API; metrics are still served)."""
    _serve(api=False, workers=True, processes=processes, supervised=supervised)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending schema migrations."""
    s = settings()
    configure_logging("warning")
    from quarterdeck.store import migrations
    from quarterdeck.store.pool import database_url

    try:
        applied = asyncio.run(migrations.upgrade(database_url(s)))
    except QuarterdeckError as exc:
        fail(exc.detail)
    if applied:
        console.print(f"applied migrations: {', '.join(map(str, applied))}")
    else:
        console.print(f"schema is current (version {migrations.HEAD})")


@app.command()
def doctor(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Check the config, Postgres, Redis and the provider key; say what is wrong and how to fix it."""
    s = settings()
    configure_logging("warning")
    from quarterdeck.agents import sandbox
    from quarterdeck.monitoring.doctor import run_checks

    sandbox.configure(
        sandbox.SandboxConfig(s.sandbox_mode, s.workspace_max_bytes, s.sandbox_tmp_limit)
    )
    checks = asyncio.run(run_checks(s, isolation=sandbox.isolation_report()))
    if as_json:
        print_json([c.__dict__ for c in checks])
    else:
        table = Table("check", "status", "detail", "fix")
        colours = {"ok": "green", "warn": "yellow", "fail": "red"}
        for c in checks:
            table.add_row(c.name, f"[{colours[c.status]}]{c.status}[/]", c.detail, c.fix)
        console.print(table)
    if any(c.status == "fail" for c in checks):
        raise typer.Exit(1)


@app.command()
def version() -> None:
    """Print the version."""
    console.print(__version__)


def main() -> None:
    app()
