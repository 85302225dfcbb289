"""The tool-call contract: each built-in tool's name, input model and the permissions it exercises.

Two sides need these models and must agree on them: the agent runtime validates a model's tool
call against them before running it (:mod:`quarterdeck.agents.tools`), and the policy gate's
labelled corpus builds its cases from them (:mod:`quarterdeck.security.policy.corpus`). Keeping
them in this leaf lets both import the contract without one importing the other.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from quarterdeck.exceptions import QuarterdeckError


class ToolError(QuarterdeckError):
    """A refusal or failure to report to the model as an error result (never raised out)."""

    status = 422
    type_slug = "tool-error"
    title = "Tool call failed"


class ToolInput(BaseModel):
    """Tool inputs are strict: an unknown field is the model's mistake, reported back to it."""

    model_config = ConfigDict(extra="forbid")


class ReadFile(ToolInput):
    """Read a UTF-8 text file from the workspace, optionally a range of lines."""

    path: str = Field(min_length=1, description="Path relative to the workspace root.")
    offset: int = Field(default=0, ge=0, description="First line to return (0-based).")
    limit: int | None = Field(default=None, ge=1, description="Maximum number of lines.")


class WriteFile(ToolInput):
    """Create or overwrite a file in the workspace (parent directories are created)."""

    path: str = Field(min_length=1)
    content: str = Field(max_length=10_000_000)


class EditFile(ToolInput):
    """Replace one exact occurrence of ``old`` with ``new``; ``old`` must occur exactly once."""

    path: str = Field(min_length=1)
    old: str = Field(min_length=1)
    new: str


class ListFiles(ToolInput):
    """List a directory of the workspace (directories end with '/')."""

    path: str = "."
    recursive: bool = False


class Search(ToolInput):
    """Search file contents with a Perl-compatible regex, like ``grep -rnP``."""

    pattern: str = Field(min_length=1, max_length=2_000)
    path: str = "."
    glob: str | None = Field(default=None, description="Only files whose name matches, e.g. *.py")


class RunCommand(ToolInput):
    """Run a shell command in the workspace (sandboxed; no network unless enabled)."""

    command: str = Field(min_length=1, max_length=100_000)
    timeout_s: float | None = Field(default=None, gt=0, description="Capped by the server.")


class HttpFetch(ToolInput):
    """Fetch a public http(s) URL; private, loopback and metadata addresses are refused."""

    url: str = Field(min_length=1, max_length=8_000)
    method: Literal["GET", "HEAD"] = "GET"


TOOLS: dict[str, tuple[type[ToolInput], list[str]]] = {
    "read_file": (ReadFile, ["fs.read"]),
    "write_file": (WriteFile, ["fs.write"]),
    "edit_file": (EditFile, ["fs.read", "fs.write"]),
    "list_files": (ListFiles, ["fs.read"]),
    "search": (Search, ["fs.read", "process.exec"]),
    "run_command": (RunCommand, ["process.exec"]),
    "http_fetch": (HttpFetch, ["net.connect"]),
}
"""Each tool's input model and the permissions it exercises (recorded per call)."""
