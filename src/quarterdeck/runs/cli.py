"""``quarterdeck run ...``: submit and follow runs through the HTTP API."""

from __future__ import annotations

import base64
import fnmatch
import io
import json
import tarfile
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from quarterdeck.kit.console import Api, JsonOpt, UrlOpt, console, fail, print_json, query

app = typer.Typer(
    help="Submit, inspect, follow and cancel agent runs (talks to the API).", no_args_is_help=True
)
MAX_UPLOAD = 50 * 1024 * 1024


def pack_directory(path: Path, exclude: list[str]) -> str:
    """A base64 tar of ``path`` for upload, without .git, caches, and ``exclude`` globs."""
    skip = {".git", "__pycache__", ".venv", "node_modules", ".mypy_cache", ".pytest_cache"}

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        if any(p in skip for p in parts) or any(fnmatch.fnmatch(info.name, g) for g in exclude):
            return None
        if not (info.isfile() or info.isdir()):
            return None  # links and devices are not uploaded
        return info

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for child in sorted(path.iterdir()):
            tar.add(child, arcname=child.name, filter=keep)
    if buffer.tell() > MAX_UPLOAD:
        fail(
            f"{path} packs to {buffer.tell()} bytes; the upload limit is {MAX_UPLOAD}. "
            "Use --exclude, or --git to let the server clone it."
        )
    return base64.b64encode(buffer.getvalue()).decode()


TERMINAL = {"succeeded", "failed", "cancelled", "timed_out", "max_turns", "budget_exceeded"}


def _summary(run: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    for key in (
        "id",
        "status",
        "agent_type",
        "operation",
        "model",
        "attempts",
        "turns",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cost_usd",
        "created_at",
        "started_at",
        "finished_at",
        "error",
        "result",
    ):
        value = run.get(key)
        if value is not None:
            table.add_row(f"[bold]{key}[/]", str(value))
    console.print(table)


@app.command("submit")
def submit(
    prompt: Annotated[str, typer.Argument(help="What the agent should do.")],
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="Agent type.")] = None,
    operation: Annotated[str, typer.Option(help="Operation label for metrics.")] = "task",
    model: Annotated[str | None, typer.Option(help="Model; defaults to the server's.")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Retry-safe submission key.")] = None,
    workspace: Annotated[
        Path | None,
        typer.Option(
            "--workspace",
            "-w",
            help="Local directory the agent works on (uploaded as a tar "
            "archive; .git and files matched by --exclude are skipped).",
            exists=True,
            file_okay=False,
            resolve_path=True,
        ),
    ] = None,
    git: Annotated[
        str | None, typer.Option("--git", help="Git URL the server clones instead.")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option(help="Glob to leave out of the upload (repeatable).")
    ] = None,
    budget: Annotated[
        float | None,
        typer.Option("--budget", min=0.0001, help="Stop the run before it spends more USD."),
    ] = None,
    max_turns: Annotated[int | None, typer.Option(min=1, help="Turn limit for this run.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the run finishes.")] = False,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a run. Prints its id; with --wait, follows it to the end."""
    api = Api(url)
    body: dict[str, Any] = {"prompt": prompt, "operation": operation}
    if agent:
        body["agent_type"] = agent
    if model:
        body["model"] = model
    if budget is not None:
        body["budget_usd"] = budget
    if max_turns is not None:
        body["max_turns"] = max_turns
    if workspace and git:
        fail("use either --workspace or --git, not both")
    if workspace:
        body["workspace"] = {"type": "tar", "value": pack_directory(workspace, exclude or [])}
    elif git:
        body["workspace"] = {"type": "git", "value": git}
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    run = api.json("POST", "/v1/runs", json=body, headers=headers)
    if wait:
        while run["status"] not in TERMINAL:
            run = api.json("GET", f"/v1/runs/{run['id']}/wait", params={"timeout": 30}, timeout=40)
    if as_json:
        print_json(run)
    elif wait:
        _summary(run)
    else:
        console.print(f"[green]submitted[/] {run['id']} ({run['status']})")
    if wait and run["status"] != "succeeded":
        raise typer.Exit(1)


@app.command("diff")
def diff(run_id: str, url: UrlOpt = None) -> None:
    """Print the unified diff of the run's workspace (what the agent changed)."""
    typer.echo(Api(url).request("GET", f"/v1/runs/{run_id}/diff").text, nl=False)


@app.command("list")
def list_runs(
    status: Annotated[list[str] | None, typer.Option(help="Filter by status (repeatable).")] = None,
    agent: Annotated[str | None, typer.Option("--agent", "-a")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    cursor: Annotated[str | None, typer.Option(help="Continue from a previous page.")] = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List runs, newest first."""
    params = query(limit=limit, status=status, agent_type=agent, cursor=cursor)
    page = Api(url).json("GET", "/v1/runs", params=params)
    if as_json:
        print_json(page)
        return
    table = Table("id", "status", "agent", "model", "turns", "cost_usd", "created_at")
    for run in page["items"]:
        table.add_row(
            run["id"],
            run["status"],
            run["agent_type"],
            run["model"],
            str(run["turns"]),
            str(run["cost_usd"]),
            run["created_at"],
        )
    console.print(table)
    if page.get("next_cursor"):
        console.print(f"next page: --cursor {page['next_cursor']}")


@app.command("show")
def show(run_id: str, url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Show one run."""
    run = Api(url).json("GET", f"/v1/runs/{run_id}")
    print_json(run) if as_json else _summary(run)


@app.command("cancel")
def cancel(run_id: str, url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Cancel a queued run, or stop a running one (within about 2 s)."""
    run = Api(url).json("POST", f"/v1/runs/{run_id}/cancel")
    if as_json:
        print_json(run)
    else:
        console.print(
            f"{run['id']}: {run['status']}"
            + (" (stop requested)" if run["status"] == "running" else "")
        )


@app.command("wait")
def wait(
    run_id: str,
    timeout: Annotated[float, typer.Option(min=0, max=300)] = 60,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Wait until a run is finished (or the timeout passes) and show it."""
    run = Api(url, timeout=timeout + 10).json(
        "GET", f"/v1/runs/{run_id}/wait", params={"timeout": timeout}
    )
    print_json(run) if as_json else _summary(run)


def _line(event: dict[str, Any]) -> str:
    data = event.get("data") or {}
    brief = ", ".join(f"{k}={v}" for k, v in data.items() if k not in ("input", "output"))
    turn = f" turn {event['turn']}" if event.get("turn") is not None else ""
    return f"{event['ts']}  #{event['id']:<6} {event['type']}{turn}  {brief}"


@app.command("logs")
def logs(
    run_id: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream until it ends.")] = False,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a run's event timeline; --follow streams new events live (SSE)."""
    api = Api(url, timeout=None)  # type: ignore[arg-type]
    if not follow:
        events = api.json("GET", f"/v1/runs/{run_id}/events")
        if as_json:
            print_json(events)
        else:
            for event in events:
                console.print(_line(event), highlight=False)
        return
    try:
        with api.client.stream(
            "GET", f"/v1/runs/{run_id}/events", headers={"Accept": "text/event-stream"}
        ) as response:
            if response.status_code >= 400:
                response.read()
                fail(f"{response.status_code}: {response.json().get('detail', response.text)}")
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[6:])
                if not event:
                    break
                typer.echo(json.dumps(event)) if as_json else console.print(
                    _line(event), highlight=False
                )
    except httpx.ConnectError:
        fail(
            f"cannot reach Quarterdeck at {api.base}. Is `quarterdeck up` running? "
            "Set QUARTERDECK_URL or --url to point elsewhere."
        )
    except httpx.HTTPError as exc:
        fail(f"the event stream from {api.base} broke off: {exc}")
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
