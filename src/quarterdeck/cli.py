"""The ``quarterdeck`` command line."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from quarterdeck import __version__
from quarterdeck.approvals.cli import app as approvals_app
from quarterdeck.chaos.cli import app as chaos_app
from quarterdeck.exceptions import ConfigError, QuarterdeckError
from quarterdeck.gateway.cli import app as gateway_app
from quarterdeck.health.maintenance_cli import app as maintenance_app
from quarterdeck.incidents.cli import app as incidents_app
from quarterdeck.kit.console import console, err_console, fail, hide_flag_metavars
from quarterdeck.reports.cli import app as report_app
from quarterdeck.rollouts.canary_cli import app as canary_app
from quarterdeck.rollouts.cli import app as rollout_app
from quarterdeck.runs.cli import app as run_app
from quarterdeck.scaling.cli import app as scaler_app
from quarterdeck.security.audit.cli import app as audit_app
from quarterdeck.security.auth.cli import app as keys_app
from quarterdeck.security.compliance.cli import app as compliance_app
from quarterdeck.security.policy.cli import app as policy_app
from quarterdeck.tenants.cli import app as tenants_app

if TYPE_CHECKING:  # settings, logging and asyncio are imported by the commands that use them
    import asyncio

    from quarterdeck.config import Settings
    from quarterdeck.kit.logs import LogFormat

app = typer.Typer(
    help="Quarterdeck: a durable control plane for AI coding agents.\n\n"
    'Start everything with `quarterdeck up`, then `quarterdeck run submit "..."`.',
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
hide_flag_metavars()
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
app.add_typer(scaler_app, name="scaler")
app.add_typer(rollout_app, name="rollout")
app.add_typer(canary_app, name="canary")
app.add_typer(report_app, name="report")
app.add_typer(maintenance_app, name="maintenance")


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
    # Settings (pydantic-settings, YAML) are loaded only by the commands that need them, so
    # `quarterdeck version` and `run list` do not pay for them. A process whose settings module
    # is not loaded yet holds no earlier --config to reset (CliRunner tests run many commands).
    if config is not None or "quarterdeck.config.loading" in sys.modules:
        from quarterdeck.config import set_cli_config

        set_cli_config(config)


def settings() -> Settings:
    """Settings for a command, or exit 2 listing every bad field (:func:`cli_settings`)."""
    from quarterdeck.config import cli_settings

    return cli_settings()


def configure_logging(level: str = "info", fmt: LogFormat = "auto") -> None:
    """:func:`quarterdeck.kit.logs.configure_logging`, imported (with structlog) only by the
    commands that log."""
    from quarterdeck.kit.logs import configure_logging as configure

    configure(level, fmt)


# The simulated provider's latency under `quarterdeck up` in development when none is set: with
# the setting's default, 0, a tour's run ends in ~45 ms, before `run logs --follow` or
# `run cancel` can show anything. A model call of about a second (a few seconds a run) is what a
# real one feels like. Tests and benchmarks set QUARTERDECK_SIMULATED_LATENCY themselves.
DEMO_LATENCY = "lognormal:1s:0.5"


def with_demo_latency(s: Settings) -> Settings:
    """``s`` with :data:`DEMO_LATENCY` when ``up`` runs a simulated, development deployment
    whose latency nobody set (environment, YAML or secret file). It goes into this process's
    environment too, so worker children started by ``up`` use it as well."""
    if (
        s.provider_name != "simulated"
        or s.env != "development"
        or "simulated_latency" in s.model_fields_set
    ):
        return s
    os.environ["QUARTERDECK_SIMULATED_LATENCY"] = DEMO_LATENCY
    return s.model_copy(update={"simulated_latency": DEMO_LATENCY})


def _serve(
    api: bool,
    workers: bool,
    processes: int | None = None,
    supervised: bool = False,
    demo: bool = False,
) -> None:
    s = settings()
    if processes is not None:
        s = s.model_copy(update={"worker_processes": processes})
    if demo:
        s = with_demo_latency(s)
    configure_logging(s.log_level, s.log_format)
    import asyncio

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

    With POSTGRES_URL unset, an embedded Postgres is started in the data directory. With the
    simulated provider in development, model calls take about a second
    (QUARTERDECK_SIMULATED_LATENCY, default here: lognormal:1s:0.5) so runs can be followed.
    """
    _serve(api=True, workers=True, processes=processes, demo=True)


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
    import asyncio

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
def doctor(
    url: Annotated[
        str | None, typer.Option("--url", help="API base URL [env: QUARTERDECK_URL]")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    preflight: Annotated[
        bool,
        typer.Option(
            "--preflight",
            help="Check this host before a server starts (config, provider key, Postgres, "
            "Redis, isolation, ports); do not call a running server.",
        ),
    ] = False,
) -> None:
    """Check the running server (/health, /ready: Postgres, Redis, migrations, draining; auth;
    isolation) and this shell's config; say what is wrong and how to fix it. Exit 1 if any
    check fails (the server not running is one, unless --preflight)."""
    s = settings()
    configure_logging("warning")
    from quarterdeck.agents import sandbox
    from quarterdeck.monitoring.cli import run_doctor

    def local_isolation() -> dict[str, object]:  # used only when no server answers
        sandbox.configure(
            sandbox.SandboxConfig(s.sandbox_mode, s.workspace_max_bytes, s.sandbox_tmp_limit)
        )
        return sandbox.isolation_report()

    def local_claude_code() -> dict[str, object]:  # likewise; the sandbox is configured above
        from quarterdeck.agents.claude_code.install import probe_cli

        return probe_cli(s).as_dict()

    run_doctor(s, url, as_json, local_isolation, preflight, local_claude_code)


@app.command()
def version() -> None:
    """Print the version."""
    console.print(__version__)


def main() -> None:
    app()
