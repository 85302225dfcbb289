"""The ready banner ``up`` and ``serve`` print once the API answers.

A new user's first question is "is it up, where, and in which mode?": the addresses to open, and
the four choices that change what a run does (real or simulated model, auth on or off, how agent
commands are isolated, which Postgres). Pure: :mod:`quarterdeck.server` gathers the facts, this
lays them out; on a JSON log stream the same facts go out as one ``quarterdeck_ready`` event.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True)
class ReadyInfo:
    version: str
    api_url: str | None  # None: a worker-only process
    metrics_url: str | None
    provider: str  # "simulated" | "anthropic" | "openai"
    simulated_latency: str | None  # the profile when simulated
    auth: bool
    isolation: str | None  # the sandbox mode in use; None: no workers here
    isolation_problem: str | None
    postgres: str  # "embedded (<dir>)" or "external"
    workers: str | None  # "1 process x 50 runs", None without workers

    def fields(self) -> dict[str, Any]:
        return asdict(self)


def local_url(host: str, port: int) -> str:
    """A URL a person can open: a wildcard bind address is reachable as localhost."""
    shown = "localhost" if host in ("0.0.0.0", "::", "") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def render(info: ReadyInfo) -> Group:
    """A title, then a two-column grid (label, value), coloured where something needs care."""
    title = Text.assemble(("Quarterdeck ", "bold"), (info.version, "bold cyan"), " is ready")
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    if info.api_url:
        grid.add_row("API", Text(info.api_url, style="cyan"))
        grid.add_row("Dashboard", Text(f"{info.api_url}/ui", style="cyan"))
        grid.add_row("Docs", Text(f"{info.api_url}/docs", style="cyan"))
        grid.add_row("Gateway", f"ANTHROPIC_BASE_URL={info.api_url}")
    if info.metrics_url:
        grid.add_row("Metrics", Text(info.metrics_url, style="cyan"))
    if info.provider == "simulated":
        latency = info.simulated_latency or "0"
        provider = Text.assemble(
            ("simulated", "yellow"),
            f" (no model is called; latency {latency}). Set ANTHROPIC_API_KEY for real agents.",
        )
    else:
        provider = Text(info.provider, style="green")
    grid.add_row("Provider", provider)
    auth = (
        Text("on: every call needs an API key", style="green")
        if info.auth
        else Text(
            "OFF: every caller is an admin (development). "
            "Set QUARTERDECK_AUTH_ENABLED=true to require keys.",
            style="bold yellow",
        )
    )
    grid.add_row("Auth", auth)
    if info.isolation is not None or info.isolation_problem is not None:
        if info.isolation_problem:
            isolation = Text(f"none: {info.isolation_problem}", style="bold red")
        else:
            strong = info.isolation == "bwrap"
            isolation = Text(str(info.isolation), style="green" if strong else "yellow")
            if not strong:
                isolation.append(" (weaker than bwrap; see `quarterdeck doctor`)", style="dim")
        grid.add_row("Sandbox", isolation)
    grid.add_row("Postgres", info.postgres)
    if info.workers:
        grid.add_row("Workers", info.workers)
    if info.api_url:
        grid.add_row("Try", 'quarterdeck run submit "fix the failing test" --wait')
    return Group(Text(""), title, grid, Text(""))
