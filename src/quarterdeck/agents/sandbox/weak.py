"""The command line for the two weaker modes, ``unshare`` and ``rlimits``.

They exist for hosts where bubblewrap cannot run. Neither gives a filesystem view: the command
can read whatever its uid may read on the host. ``unshare`` adds an empty network namespace and a
PID namespace (the kernel kills every descendant when the command ends) and, as root, a uid drop;
``rlimits`` is only resource limits, no_new_privs and the scrubbed environment. ``network=True``
(``QUARTERDECK_SANDBOX_NETWORK``) means the host network, and only in these modes.
"""

from __future__ import annotations

import resource
from typing import Any

from quarterdeck.agents.sandbox.probe import NS_FLAGS, Capabilities
from quarterdeck.agents.sandbox.spec import Mode, prlimit_argv


def build_weak(
    mode: Mode,
    inner: list[str],
    caps: Capabilities,
    network: bool,
    ident: tuple[int, int] | None,
    rlimits: list[tuple[int, int]],
) -> tuple[list[str], dict[str, Any], str]:
    """The argv, extra Popen kwargs and isolation label for one command."""
    kwargs: dict[str, Any] = {}
    parts: list[str] = [str(mode)]
    notes: list[str] = []
    if caps.prlimit:
        inner = [*prlimit_argv(caps.prlimit, rlimits), *inner]
    else:

        def _apply_limits() -> None:  # pragma: no cover - runs in the child
            for res, value in rlimits:
                resource.setrlimit(res, (value, value))

        kwargs["preexec_fn"] = _apply_limits
    if caps.setpriv:
        inner = [caps.setpriv, "--no-new-privs", "--", *inner]
    use_net = mode is Mode.UNSHARE and caps.netns and not network
    use_pid = mode is Mode.UNSHARE and caps.pidns
    if caps.unshare and (use_net or use_pid):
        pre = [caps.unshare] if caps.root else [caps.unshare, "--user", "--map-root-user"]
        if use_net:
            pre.append("--net")
            parts.append("netns")
        if use_pid:
            pre.extend(NS_FLAGS)
            parts.append("pidns")
        if ident:
            pre.extend(["--setgid", str(ident[1]), "--setuid", str(ident[0])])
        inner = [*pre, "--", *inner]
    elif ident:
        kwargs.update(user=ident[0], group=ident[1], extra_groups=[])
    parts.append("rlimits")
    if ident:
        parts.append("uid")
    if caps.setpriv:
        parts.append("nnp")
    notes.append("no filesystem view: the host's files are visible")
    if network:
        notes.append("network allowed by configuration")
    elif mode is Mode.RLIMITS:
        notes.append("host network reachable: rlimits mode has no network namespace")
    elif not caps.netns:
        notes.append(f"no network namespace: {caps.reason}")
    if not ident:
        notes.append("runs as the worker's own user: not root, cannot drop privileges")
    label = "+".join(parts) + f" ({'; '.join(notes)})"
    return inner, kwargs, label
