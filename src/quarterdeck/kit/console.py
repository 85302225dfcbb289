"""Shared CLI plumbing: one console, error exits, and the HTTP client for the API."""

from __future__ import annotations

import json
import os
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console

console = Console()
UrlOpt = Annotated[str | None, typer.Option("--url", help="API base URL [env: QUARTERDECK_URL]")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def query(**values: Any) -> dict[str, Any]:
    """Query parameters for the API, leaving out options the user did not give."""
    return {k: v for k, v in values.items() if v not in (None, [], "")}


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def api_url(explicit: str | None = None) -> str:
    if explicit:
        return explicit.rstrip("/")
    env = os.environ.get("QUARTERDECK_URL")
    if env:
        return env.rstrip("/")
    port = os.environ.get("QUARTERDECK_HTTP_PORT", "8080")
    return f"http://127.0.0.1:{port}"


class Api:
    """A small client for the Quarterdeck HTTP API that turns failures into CLI errors."""

    def __init__(self, url: str | None = None, timeout: float = 30.0) -> None:
        self.base = api_url(url)
        headers = {}
        key = os.environ.get("QUARTERDECK_API_KEY")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.client = httpx.Client(base_url=self.base, timeout=timeout, headers=headers)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.ConnectError:
            fail(
                f"cannot reach Quarterdeck at {self.base}. Is `quarterdeck up` running? "
                "Set QUARTERDECK_URL or --url to point elsewhere."
            )
        except httpx.TimeoutException:
            fail(f"Quarterdeck at {self.base} did not answer in time")
        if response.status_code >= 400:
            try:
                body = response.json()
                detail = body.get("detail") or body.get("title") or response.text
            except ValueError:
                detail = response.text
            fail(f"{response.status_code}: {detail}")
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()
