"""The sandbox's vocabulary: its modes, its limits and what one command returns.

Kept apart from the code that probes, builds and runs so that each of those can be read (and the
argv builder unit-tested) without pulling in the others.
"""

from __future__ import annotations

import enum
import resource
from dataclasses import dataclass

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SANDBOX_USER = "quarterdeck-sandbox"
TMP_DIRNAME = ".sandbox-tmp"
"""Per-workspace TMPDIR; workspaces leave it out of diffs."""
AGENT_STATE_DIRNAME = ".quarterdeck-agent"
"""Per-workspace home of an external agent (Claude Code's HOME and session transcript): left
out of diffs, but checkpointed with the workspace so a resumed run finds its session."""
RUN_UID_BASE = 1_000_000_000
RUN_UID_SPAN = 100_000_000
INSIDE_UID = 1000
"""The uid a command sees inside a user-namespaced (non-root worker) bwrap sandbox."""
EGRESS_SOCKET = "/run/quarterdeck/egress.sock"
"""Where the egress proxy's unix socket appears inside the sandbox."""
EGRESS_PORT = 3128
"""The loopback port a bridge inside the sandbox forwards to :data:`EGRESS_SOCKET`."""
KILL_AFTER_DISCARDED = 64 * 1024 * 1024
"""Output beyond the cap is drained (so the child never blocks) up to this many bytes, then the
command is killed: an endless ``yes`` should not burn CPU until the timeout."""


class Mode(enum.StrEnum):
    """How strongly a command is contained, strongest first.

    ``bwrap``: its own filesystem view, every namespace, an unprivileged uid. ``unshare``: network
    and PID namespaces and (as root) a uid drop, but the host filesystem is visible. ``rlimits``:
    resource limits and a scrubbed environment only.
    """

    BWRAP = "bwrap"
    UNSHARE = "unshare"
    RLIMITS = "rlimits"


STRENGTH = (Mode.BWRAP, Mode.UNSHARE, Mode.RLIMITS)


@dataclass(frozen=True)
class SandboxConfig:
    """Process-wide sandbox settings (``QUARTERDECK_SANDBOX_*``), set once at start-up.

    ``mode`` is ``auto`` (the strongest this host gives) or a :class:`Mode` to insist on.
    ``workspace_bytes`` bounds the whole workspace (allocated blocks, hard links counted once):
    measured while each command runs, which is killed when it goes over. ``tmp_bytes`` is the size
    of the private ``/tmp`` tmpfs in bwrap mode (it lives in memory).
    """

    mode: str = "auto"
    workspace_bytes: int = 2 * 1024**3
    tmp_bytes: int = 256 * 1024**2
    allow_weak: bool = False


@dataclass(frozen=True)
class SandboxLimits:
    """Per-process resource limits. ``address_space`` breaks runtimes that reserve huge virtual
    ranges up front (JVM, some Node builds); raise it for such agents.

    ``workspace_bytes`` bounds the whole workspace (allocated blocks, hard links counted once):
    it is measured while the command runs and the command is killed when it goes over.
    ``tmp_bytes`` is the size of the private ``/tmp`` tmpfs in bwrap mode (it lives in memory).
    """

    cpu_s: int = 60
    address_space: int = 2 * 1024**3
    file_size: int = 256 * 1024**2
    nproc: int = 256
    open_files: int = 1024


@dataclass
class CommandResult:
    exit_code: int | None
    stdout: str
    stderr: str
    truncated: bool
    timed_out: bool
    duration_s: float
    isolation: str
    mode: Mode = Mode.RLIMITS
    workspace_exceeded: bool = False


_PRLIMIT_NAMES = {
    resource.RLIMIT_CPU: "cpu",
    resource.RLIMIT_AS: "as",
    resource.RLIMIT_FSIZE: "fsize",
    resource.RLIMIT_NPROC: "nproc",
    resource.RLIMIT_NOFILE: "nofile",
    resource.RLIMIT_CORE: "core",
}


def rlimit_pairs(limits: SandboxLimits) -> list[tuple[int, int]]:
    """(resource, value) for every limit, never above the hard limit this process already has
    (an unprivileged worker cannot raise one)."""
    wanted = [
        (resource.RLIMIT_CPU, limits.cpu_s),
        (resource.RLIMIT_AS, limits.address_space),
        (resource.RLIMIT_FSIZE, limits.file_size),
        (resource.RLIMIT_NPROC, limits.nproc),
        (resource.RLIMIT_NOFILE, limits.open_files),
        (resource.RLIMIT_CORE, 0),
    ]
    out = []
    for res, value in wanted:
        hard = resource.getrlimit(res)[1]
        out.append((res, value if hard == resource.RLIM_INFINITY else min(value, hard)))
    return out


def prlimit_argv(prlimit: str, pairs: list[tuple[int, int]]) -> list[str]:
    return [prlimit, *(f"--{_PRLIMIT_NAMES[r]}={v}" for r, v in pairs), "--"]
