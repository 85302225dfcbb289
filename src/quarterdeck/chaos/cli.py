"""``quarterdeck chaos``: run the chaos scenarios and print what each did to the runs.

Exits 1 when any run was lost or duplicated (or a scenario's checks failed), so it can gate a
release. It starts and owns a local deployment per scenario (temp data dir, embedded Postgres,
``redis-server``, the fake provider); it never touches the deployment in the current directory,
and it cannot target a remote cluster (see :mod:`quarterdeck.chaos.deploy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from quarterdeck.kit.console import console, err_console

if TYPE_CHECKING:  # the runner brings uvicorn, Starlette and Prometheus: only `chaos run` needs it
    from quarterdeck.chaos.runner import Result

# The scenarios' names, for `--help` without importing them (a unit test keeps this list equal to
# quarterdeck.chaos.scenarios.SCENARIOS).
SCENARIO_NAMES = (
    "provider-errors",
    "primary-down",
    "redis-kill",
    "postgres-restart",
    "worker-kill",
    "leader-kill",
)

app = typer.Typer(help="Chaos scenarios against a local deployment.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Keep ``run`` a subcommand (``quarterdeck chaos run``) even while it is the only one."""


def _secs(value: float | None, basis: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}s" + (f" ({basis})" if basis and basis != "incident" else "")


def table(results: list[Result]) -> Table:
    out = Table(
        "scenario",
        "faults injected",
        "runs",
        "runs lost",
        "runs duplicated",
        "detection time",
        "recovery time",
        "verdict",
    )
    for r in results:
        outcomes = ", ".join(f"{n} {s}" for s, n in sorted(r.outcomes.items()))
        failed = [name for name, ok in r.checks.items() if not ok]
        verdict = "[green]pass[/]" if r.passed else "[red]FAIL[/] " + "; ".join(failed)[:80]
        out.add_row(
            r.scenario,
            "\n".join(r.faults),
            f"{r.submitted}: {outcomes}",
            str(len(r.lost)),
            str(len(r.duplicated)),
            _secs(r.detection_s),
            _secs(r.recovery_s, r.recovery_basis),
            verdict,
        )
    return out


@app.command("run")
def run(
    scenarios: Annotated[
        list[str] | None,
        typer.Argument(help=f"Scenarios to run (default: all): {', '.join(SCENARIO_NAMES)}"),
    ] = None,
    runs: Annotated[int, typer.Option("--runs", "-n", min=1, help="Runs per scenario.")] = 500,
    fast: Annotated[
        bool,
        typer.Option("--fast", help="Short intervals (1 s checks, 5 s breakers, 10 s faults)."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
    keep: Annotated[bool, typer.Option("--keep", help="Keep each temp deployment's logs.")] = False,
) -> None:
    """Run scenarios against fresh local deployments and print a table of what happened."""
    from quarterdeck.chaos.runner import Runner, dumps
    from quarterdeck.chaos.scenarios import SCENARIOS

    names = scenarios or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        err_console.print(
            f"unknown scenario(s): {', '.join(unknown)}; one of {', '.join(SCENARIOS)}"
        )
        raise typer.Exit(2)
    runner = Runner(runs=runs, fast=fast, keep=keep, log=lambda m: err_console.print(m))
    results: list[Result] = []
    try:
        for name in names:
            results.append(runner.run(SCENARIOS[name]))
    finally:
        runner.close()
    if as_json:
        console.print_json(dumps(results))
    else:
        console.print(table(results))
    if not all(r.passed for r in results):
        raise typer.Exit(1)
