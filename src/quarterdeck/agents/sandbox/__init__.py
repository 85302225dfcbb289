"""The sandbox every agent command runs in: a filesystem view and namespaces (bubblewrap) where
the host allows it, weaker explicit modes where it does not.

The package splits the concern: :mod:`.spec` (modes, limits, results), :mod:`.identity` (which
host uid), :mod:`.probe` (what this host gives, which mode is used), :mod:`.bwrap` (the strong
mode's argv, pure), :mod:`.weak` (the unshare/rlimits argv), :mod:`.runner` (spawn, capture,
kill), :mod:`.session` (a long-lived agent process with bridged sockets), :mod:`.usage`
(workspace size) and :mod:`.report` (what to tell operators).
"""

from quarterdeck.agents.sandbox.identity import prepare_dir, run_identity, shared_identity
from quarterdeck.agents.sandbox.probe import capabilities, configure, select_mode
from quarterdeck.agents.sandbox.report import check_startup, isolation_report
from quarterdeck.agents.sandbox.runner import run_sandboxed
from quarterdeck.agents.sandbox.session import Bridge, Mount, SandboxProcess, open_sandboxed
from quarterdeck.agents.sandbox.spec import (
    AGENT_STATE_DIRNAME,
    EGRESS_PORT,
    EGRESS_SOCKET,
    SAFE_PATH,
    TMP_DIRNAME,
    CommandResult,
    Mode,
    SandboxConfig,
    SandboxLimits,
)

__all__ = [
    "AGENT_STATE_DIRNAME",
    "EGRESS_PORT",
    "EGRESS_SOCKET",
    "SAFE_PATH",
    "TMP_DIRNAME",
    "Bridge",
    "CommandResult",
    "Mode",
    "Mount",
    "SandboxConfig",
    "SandboxLimits",
    "SandboxProcess",
    "capabilities",
    "check_startup",
    "configure",
    "isolation_report",
    "open_sandboxed",
    "prepare_dir",
    "run_identity",
    "run_sandboxed",
    "select_mode",
    "shared_identity",
]
