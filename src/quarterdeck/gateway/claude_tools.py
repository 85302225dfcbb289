"""Claude Code's tools seen as Quarterdeck's, so the policy gate's rules apply to what a client
of the gateway runs: the name and input of each of its built-in tools mapped onto our tool-call
contract (:mod:`quarterdeck.toolcalls`), and the client's working directory read from its
system prompt (what "inside the workspace" means for its paths).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from quarterdeck.toolcalls import TOOLS

__all__ = ["content_slots", "map_tool", "text_of", "workspace_of"]


def content_slots(
    holder: dict[str, Any], key: str, nested: bool = False
) -> Iterator[tuple[dict[str, Any], str]]:
    """(dict, key) of every text under ``holder[key]``: a string, ``text`` blocks, and the
    content of ``tool_result`` blocks (a string or text blocks). Odd shapes hold no text."""
    value = holder.get(key)
    if isinstance(value, str):
        yield holder, key
    elif isinstance(value, list):
        for block in value:
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "text" and isinstance(block.get("text"), str):
                yield block, "text"
            elif kind == "tool_result" and not nested:
                yield from content_slots(block, "content", True)


_FIELDS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    # their name -> (our tool, ((our field, their field), ...))
    "Bash": ("run_command", (("command", "command"),)),
    "Read": ("read_file", (("path", "file_path"),)),
    "Write": ("write_file", (("path", "file_path"), ("content", "content"))),
    "Edit": ("edit_file", (("path", "file_path"), ("old", "old_string"), ("new", "new_string"))),
    "NotebookEdit": ("edit_file", (("path", "notebook_path"), ("new", "new_source"))),
    "WebFetch": ("http_fetch", (("url", "url"),)),
    "Grep": ("search", (("pattern", "pattern"), ("path", "path"), ("glob", "glob"))),
    "Glob": ("list_files", (("path", "path"),)),
    "LS": ("list_files", (("path", "path"),)),
}


def map_tool(name: str, given: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(our tool, its input) for a client's tool call, or None for a tool we do not know.
    Our own names pass as they are."""
    if name in TOOLS:
        return name, dict(given)
    if name == "MultiEdit":
        edits = [e for e in given.get("edits") or [] if isinstance(e, dict)]
        return "edit_file", {
            "path": given.get("file_path"),
            "old": "\n".join(str(e.get("old_string", "")) for e in edits),
            "new": "\n".join(str(e.get("new_string", "")) for e in edits),
        }
    spec = _FIELDS.get(name)
    if spec is None:
        return None
    tool, fields = spec
    mapped = {ours: given[theirs] for ours, theirs in fields if given.get(theirs) is not None}
    pattern = given.get("pattern")
    if name == "Glob" and "path" not in mapped and isinstance(pattern, str):
        if pattern[:1] in ("/", "~"):  # the directory part before the first wildcard
            mapped["path"] = re.split(r"[*?[{]", pattern, maxsplit=1)[0].rsplit("/", 1)[0] or "/"
    return tool, mapped


def workspace_of(request: Mapping[str, Any]) -> Path | None:
    """The client's working directory, from Claude Code's environment block in ``system``
    ("Working directory: /abs/path" or "Primary working directory: ..."); None if absent."""
    text = text_of(request.get("system"))
    at = text.find("orking directory: ")
    if at >= 0:
        end = text.find("\n", at)
        line = text[at + 18 : end if end >= 0 else len(text)].strip()
        if line.startswith("/"):
            return Path(line)
    return None


def text_of(content: Any) -> str:
    """The text of a string or of a list of blocks (their text blocks, joined)."""
    return "\n".join(h[k] for h, k in content_slots({"c": content}, "c", nested=True))
