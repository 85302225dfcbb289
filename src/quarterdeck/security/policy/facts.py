"""A tool call reduced to the facts rules match on: paths, command segments, hosts, secrets.

Normalising once per call, before any rule runs, is what keeps rules short and obfuscation
cheap to defeat: a rule says "a path matching ``**/.ssh/id_*``", and it does not matter whether
the path came from ``read_file``, ``cat``, ``tar czf - ~/.ssh``, ``curl -F f=@...`` or a base64
payload piped into ``sh``. Field names follow the runtime's tool models
(:mod:`quarterdeck.agents.tools`); anything that is not a string is ignored here because the
tool's own validation rejects it anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from quarterdeck.security.policy.commands import Segment, analyse_line
from quarterdeck.security.policy.hosts import HostFact, HostList, from_url
from quarterdeck.security.policy.paths import Access, Frame, PathFact
from quarterdeck.security.policy.secrets import Finding, find_secrets

KNOWN_TOOLS = (
    "read_file",
    "write_file",
    "edit_file",
    "list_files",
    "search",
    "run_command",
    "http_fetch",
)
_FILE_ACCESS: dict[str, Access] = {
    "read_file": "read",
    "write_file": "write",
    "edit_file": "write",
    "list_files": "list",
    "search": "read",
}
SECRET_FIELDS: dict[str, tuple[str, ...]] = {
    "write_file": ("content",),
    "edit_file": ("new",),
    "run_command": ("command",),
    "http_fetch": ("url",),
}
"""Input fields scanned for embedded secrets (text the call would write, run or send)."""


@dataclass(slots=True)
class Facts:
    tool: str
    input: Mapping[str, Any]
    egress_mode: str
    paths: list[PathFact] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    hosts: list[HostFact] = field(default_factory=list)
    truncated: bool = False
    listed: bool = True
    """Some host is on some rule's ``host.in`` list (the gate works it out; True: maybe)."""
    _secrets: list[tuple[str, Finding]] | None = None

    @property
    def secrets(self) -> list[tuple[str, Finding]]:
        """(field, finding) for secrets embedded in the input; computed on first use only,
        because most rules never ask."""
        if self._secrets is None:
            found: list[tuple[str, Finding]] = []
            for name in SECRET_FIELDS.get(self.tool, ()):
                value = self.input.get(name)
                if isinstance(value, str):
                    found.extend((name, f) for f in find_secrets(value))
            self._secrets = found
        return self._secrets

    def text(self, name: str) -> str | None:
        value = self.input.get(name)
        return value if isinstance(value, str) else None


def normalise(
    tool: str, tool_input: Mapping[str, Any], root: str, allow: HostList, egress_mode: str
) -> Facts:
    facts = Facts(tool, tool_input, egress_mode)
    if tool in _FILE_ACCESS:
        path = tool_input.get("path", "." if tool in ("list_files", "search") else None)
        if isinstance(path, str) and path:
            facts.paths.append(Frame(root, root).fact(path, _FILE_ACCESS[tool]))
    elif tool == "run_command":
        command = tool_input.get("command")
        if isinstance(command, str):
            facts.segments, facts.truncated = analyse_line(command, root, allow)
            for segment in facts.segments:
                facts.paths.extend(segment.paths)
                facts.hosts.extend(segment.hosts)
    elif tool == "http_fetch":
        url = tool_input.get("url")
        if isinstance(url, str) and url[:5].lower() == "file:":
            facts.paths.append(Frame(root, root).fact("/" + url[5:].lstrip("/"), "read"))
        elif isinstance(url, str):
            host = from_url(url if "://" in url else f"http://{url}", allow)
            if host is not None:
                facts.hosts.append(host)
    return facts
