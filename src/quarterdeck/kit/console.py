"""Shared CLI plumbing: one console, error exits, safe printing, and the HTTP client for the API.

Everything a run's prompt, the model or a tool produced is somebody else's text: printed raw, a
``\x1b]...`` sequence could retitle the terminal, hide lines or fake output, and ``[red]`` would
be read as rich markup. :func:`safe_text` is the one place such text is made printable.
"""

from __future__ import annotations

import json
import os
import re
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    import httpx  # imported where a request is made: `quarterdeck --help` needs no HTTP client

console = Console()
UrlOpt = Annotated[str | None, typer.Option("--url", help="API base URL [env: QUARTERDECK_URL]")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
err_console = Console(stderr=True)


# C0 controls but tab and newline, DEL, C1 controls, and the bidi overrides/isolates that can
# make a line read differently from what it holds (U+202A-U+202E, U+2066-U+2069).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def safe_text(value: object, *, markup: bool = True) -> str:
    """``value`` as text a terminal shows as it is: control characters (but ``\\n`` and
    ``\\t``) become visible escapes such as ``\\x1b``, and, unless ``markup`` is False (for
    :class:`rich.text.Text`, which reads no markup), rich markup is escaped."""
    text = _UNSAFE.sub(_visible, value if isinstance(value, str) else str(value))
    return escape(text) if markup else text


def clip(text: str, limit: int = 200, lines: int = 3) -> str:
    """At most ``lines`` lines and ``limit`` characters of ``text``, saying how much was cut."""
    kept = text.splitlines()[:lines]
    short = "\n".join(kept)
    if len(short) > limit:
        short = short[:limit]
    if short != text.rstrip("\n"):
        short += f" … ({len(text)} chars)"
    return short


def print_empty(sentence: str) -> None:
    """What a list command prints when there is nothing to list: a sentence, not a bare table."""
    console.print(sentence, highlight=False, markup=False)


def hide_flag_metavars() -> None:
    """``--help`` without a ``<bool>`` after every flag: a flag takes no value, so showing a
    type for it only misleads. Typer renders the type column from ``display_type_rich``; flags
    (and counters) get none. Idempotent; ``cli.py`` calls it once for the whole command tree."""
    from typer.core import TyperOption

    original = TyperOption.display_type_rich
    if getattr(original, "_flags_hidden", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        if self.is_flag or self.count:
            return None
        return original(self, ctx)

    display_type_rich._flags_hidden = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


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
        import httpx

        self.client = httpx.Client(base_url=self.base, timeout=timeout, headers=headers)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        import httpx

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
