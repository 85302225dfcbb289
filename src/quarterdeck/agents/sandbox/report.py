"""What isolation this host gives, mode by mode, and the start-up rule for weak hosts.

``quarterdeck doctor``, ``GET /v1/system`` and the README all say the same thing because they
all read :func:`isolation_report`; each sentence under ``gives`` is held by a test in
``tests/integration/test_sandbox.py`` or ``tests/integration/test_sandbox_hostile.py``.
"""

from __future__ import annotations

from typing import Any

import structlog

from quarterdeck.agents.sandbox.identity import shared_identity
from quarterdeck.agents.sandbox.probe import capabilities, configure, current_config, select_mode
from quarterdeck.agents.sandbox.spec import SANDBOX_USER, Mode, SandboxConfig, SandboxLimits
from quarterdeck.exceptions import ConfigError

log = structlog.get_logger(__name__)

GIVES: dict[Mode, list[str]] = {
    Mode.BWRAP: [
        "its own filesystem view: /usr and the system links read-only, a few /etc files "
        "(passwd and group synthesized), a private size-limited /tmp, its own /proc and a "
        "minimal /dev, and the run's workspace read-write at its host path; no data dir, no "
        "home, no other workspace, no socket of Quarterdeck's",
        "new PID, network, IPC, UTS and cgroup namespaces (and a user namespace when the "
        "worker is not root): no network at all, or only the egress proxy when one is given",
        "as root: each run's own unprivileged host uid, no capabilities, no_new_privs; not "
        "root: the worker's uid mapped to uid 1000 inside, no capabilities, no nested user "
        "namespaces",
        "every process it started is killed when it ends or times out, including setsid ones",
    ],
    Mode.UNSHARE: [
        "an empty network namespace (skipped when sandbox_network=true)",
        "a PID namespace: every process it started is killed when it ends or times out",
        "as root: the run's own unprivileged uid; not root: the worker's own uid",
        "no filesystem view: it can read whatever its uid can read on the host",
    ],
    Mode.RLIMITS: [
        "resource limits, no_new_privs and the scrubbed environment only",
        "no filesystem view, the host network (as its uid), the host's process list",
    ],
}
ALWAYS = [
    "environment rebuilt from PATH/HOME/LANG/TERM/TMPDIR only",
    "rlimits: CPU seconds, address space, file size, processes, open files, no core dumps",
    "a workspace size limit, measured while the command runs: over it, the command is killed",
    "stdout+stderr capped; a flood beyond 64 MiB kills the command",
]
NOT_PROVIDED = [
    "no seccomp syscall filter, no cgroup memory/CPU-share limits",
    "bwrap as root: the command (as its own uid) may still create user namespaces; only the "
    "non-root shape forbids them",
    "the workspace size limit is measured, not a quota: a command can overshoot it by what it "
    "writes in one measuring interval (0.1 s, longer for huge workspaces) before it is killed",
    "the kernel is shared: a kernel exploit escapes every mode",
]


def mode_in_use() -> tuple[Mode | None, str | None]:
    """(the mode commands get, None) or (None, why the configured mode cannot be had)."""
    try:
        return select_mode(), None
    except ConfigError as exc:
        return None, "; ".join(reason for _, reason in exc.errors)


def isolation_report() -> dict[str, Any]:
    """Every mode: whether this host gives it, why not, what it gives; and which is in use."""
    caps = capabilities()
    config = current_config()
    in_use, problem = mode_in_use()
    modes = [
        {
            "mode": str(mode),
            "available": caps.available(mode),
            "missing_because": caps.modes[mode],
            "in_use": mode is in_use,
            "gives": GIVES[mode],
        }
        for mode in (Mode.BWRAP, Mode.UNSHARE, Mode.RLIMITS)
    ]
    ident = shared_identity()
    return {
        "mode_setting": config.mode,
        "in_use": str(in_use) if in_use else None,
        "problem": problem,
        "strongest_available": str(caps.strongest),
        "running_as_root": caps.root,
        "per_run_uid": caps.root,
        "shared_user": SANDBOX_USER if ident else None,
        "workspace_limit_bytes": config.workspace_bytes,
        "tmp_limit_bytes": config.tmp_bytes,
        "egress_bridge": caps.socat is not None and caps.available(Mode.BWRAP),
        "modes": modes,
        "always": ALWAYS,
        "rlimit_defaults": vars(SandboxLimits()),
        "not_provided": NOT_PROVIDED,
    }


def check_startup(config: SandboxConfig, production: bool) -> Mode:
    """Apply the settings and decide whether this process may run agent commands.

    A forced mode this host lacks is a ConfigError. In production, only rlimits (no namespaces,
    no filesystem view) is refused unless ``allow_weak``; then it is allowed with a loud warning.
    """
    configure(config)
    mode = select_mode()
    if mode is Mode.RLIMITS and production:
        caps = capabilities()
        why = caps.modes[Mode.BWRAP] or f"{Mode.RLIMITS} was forced"
        if not config.allow_weak:
            raise ConfigError(
                [
                    (
                        "QUARTERDECK_SANDBOX_ALLOW_WEAK",
                        "this host gives agent commands only rlimits (no namespaces, no "
                        f"filesystem view: {why}); fix the host (bubblewrap with user "
                        "namespaces, see quarterdeck doctor) or set it to true to accept that",
                    )
                ]
            )
        log.warning(
            "SANDBOX_IS_WEAK",
            mode=str(mode),
            reason=why,
            detail="agent commands can read every world-readable file and reach the network; "
            "QUARTERDECK_SANDBOX_ALLOW_WEAK=true accepted this",
        )
    return mode
