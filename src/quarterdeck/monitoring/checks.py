"""One doctor check (name, ok/warn/fail, what was found, how to fix it), and the sandbox checks
made from an isolation report, whether the report came from ``/v1/system`` or this host."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["ok", "warn", "fail"]


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


def isolation_checks(report: Mapping[str, Any]) -> list[Check]:
    """One check per sandbox mode (``sandbox.<mode>``), from the sandbox's own isolation report
    (passed in: the sandbox lives on a higher floor). A missing mode is a warning; a forced mode
    this host cannot give, or production left with rlimits only, is a failure."""
    checks = []
    for entry in report["modes"]:
        name, in_use = f"sandbox.{entry['mode']}", entry["in_use"]
        tag = " (in use)" if in_use else ""
        if entry["available"]:
            weak = entry["mode"] == "rlimits" and in_use
            status: Status = "warn" if weak else "ok"
            fix = "install bubblewrap and allow user namespaces" if weak else ""
            checks.append(Check(name, status, f"available{tag}: {entry['gives'][0]}", fix))
        else:
            checks.append(Check(name, "warn", f"not available: {entry['missing_because']}"))
    if report.get("problem"):
        checks.append(
            Check("sandbox", "fail", report["problem"], "set QUARTERDECK_SANDBOX_MODE=auto")
        )
    return checks


CLAUDE_CODE = "claude-code CLI"


def claude_code_check(info: Mapping[str, Any]) -> Check:
    """The ``claude-code CLI`` check, from the install report of ``quarterdeck.agents.claude_code``
    (``/v1/system``'s ``claude_code``, or this host's). Unavailable is a warning: native agent
    types run without it. A ``QUARTERDECK_CLAUDE_CODE_PATH`` that does not work is a failure:
    someone asked for that binary."""
    if info.get("available"):
        where = f"Claude Code {info.get('version')} at {info.get('path')}"
        if info.get("note"):
            return Check(CLAUDE_CODE, "warn", f"{where}: {info['note']}", "run `make deps`")
        return Check(CLAUDE_CODE, "ok", f"{where}: claude-code agent types can run")
    status: Status = "fail" if info.get("misconfigured") else "warn"
    problem = info.get("problem") or "unavailable"
    return Check(
        CLAUDE_CODE,
        status,
        f"claude-code agent types are unavailable: {problem}",
        str(info.get("fix") or ""),
    )
