"""What this host lets the sandbox do, probed once, and which mode a command gets.

Each mode is probed by really running a no-op under it (a kernel may ship a binary but forbid
the namespaces, e.g. a container's seccomp profile or an AppArmor userns restriction), so the
answer and its reason are facts about this host, not guesses. The choice is explicit: ``auto``
takes the strongest mode available; a forced mode that this host cannot give is a configuration
error, never a silent downgrade.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from quarterdeck.agents.sandbox.bwrap import (
    ETC_FILES,
    SYSTEM_LINKS,
    Bridge,
    BwrapInputs,
    Mount,
    build_argv,
)
from quarterdeck.agents.sandbox.identity import prepare_dir, shared_identity, which
from quarterdeck.agents.sandbox.spec import STRENGTH, Mode, SandboxConfig
from quarterdeck.exceptions import ConfigError

NS_FLAGS = ("--pid", "--fork", "--kill-child", "--mount-proc")
MODE_SETTING = "QUARTERDECK_SANDBOX_MODE"


@dataclass(frozen=True)
class Capabilities:
    """What this host lets us do; probed once. ``modes`` maps each mode to None when available,
    else to the reason it is not."""

    root: bool
    unshare: str | None
    netns: bool
    pidns: bool
    userns: bool  # non-root: namespaces only via a user namespace (--map-root-user)
    setpriv: str | None
    prlimit: str | None
    reason: str  # why namespaces are missing, when they are
    bwrap: str | None
    socat: str | None
    modes: dict[Mode, str | None]

    def available(self, mode: Mode) -> bool:
        return self.modes.get(mode, "unknown mode") is None

    @property
    def strongest(self) -> Mode:
        return next(m for m in STRENGTH if self.available(m))


def _probe(argv: list[str]) -> tuple[bool, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=10, check=False, cwd="/")
    except (OSError, subprocess.SubprocessError) as exc:
        return False, str(exc)
    message = proc.stderr.decode(errors="replace").strip().splitlines()
    return proc.returncode == 0, (message[-1] if message else f"exit {proc.returncode}")


def python_prefixes() -> list[str]:
    """The worker's Python installation, bound read-only so quality measurement (which runs this
    interpreter with coverage and pytest) works inside the sandbox. Under ``/usr`` it is already
    there."""
    out: list[str] = []
    for prefix in (sys.prefix, sys.base_prefix):
        path = os.path.realpath(prefix)
        if path.startswith("/usr/") or path == "/usr" or path in out:
            continue
        out.append(path)
    return out


def bwrap_inputs(
    caps: Capabilities,
    workspace: Path,
    ident: tuple[int, int] | None,
    tmp_bytes: int,
    data_fds: dict[str, int] | None = None,
    egress_socket: Path | None = None,
    mounts: Sequence[Mount] = (),
    bridges: Sequence[Bridge] = (),
) -> BwrapInputs:
    """Host facts (which system links exist, which ``/etc`` entries) for the pure builder."""
    system: dict[str, str | None] = {}
    for path in SYSTEM_LINKS:
        if os.path.islink(path):
            system[path] = os.readlink(path)
        elif os.path.isdir(path):
            system[path] = None
    return BwrapInputs(
        bwrap=caps.bwrap or "bwrap",
        setpriv=caps.setpriv or "setpriv",
        workspace=str(workspace),
        root=caps.root,
        ident=ident,
        tmp_bytes=tmp_bytes,
        system=system,
        etc=[p for p in ETC_FILES if os.path.lexists(p)],
        ro_extra=python_prefixes(),
        data_fds=data_fds or {},
        egress_socket=str(egress_socket) if egress_socket else None,
        socat=caps.socat,
        mounts=tuple(mounts),
        bridges=tuple(bridges),
    )


def _probe_unshare(root: bool, unshare: str | None) -> tuple[bool, bool, str]:
    """(netns, pidns, reason) for util-linux ``unshare``."""
    if unshare is None:
        return False, False, "unshare (util-linux) not installed"
    true = which("true") or "/bin/true"
    base = [unshare] if root else [unshare, "--user", "--map-root-user"]
    ident = shared_identity()
    drop = ["--setgid", str(ident[1]), "--setuid", str(ident[0])] if ident else []
    ok, why = _probe([*base, "--net", *NS_FLAGS, *drop, "--", true])
    if ok:
        return True, True, ""
    ok2, why2 = _probe([*base, "--net", *drop, "--", true])
    return ok2, False, (f"pid namespace not permitted: {why}" if ok2 else f"not permitted: {why2}")


def _probe_bwrap(root: bool, bwrap: str | None, setpriv: str | None) -> str | None:
    """None when a no-op runs in the full bwrap sandbox, else why not."""
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed (Debian: apt-get install bubblewrap)"
    if setpriv is None:
        return "setpriv (util-linux) is not installed"
    ident = shared_identity()
    scratch = Path(tempfile.mkdtemp(prefix="qd-sbx-probe-"))
    try:
        scratch.chmod(0o755)
        prepare_dir(scratch, ident)
        caps = Capabilities(root, None, False, False, False, setpriv, None, "", bwrap, None, {})
        argv = build_argv(bwrap_inputs(caps, scratch, ident, 1024 * 1024), ["/bin/true"])
        ok, why = _probe(argv)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if ok:
        return None
    hint = "" if root else " (unprivileged user namespaces needed: kernel, sysctl or seccomp)"
    return f"bwrap cannot create its sandbox here: {why}{hint}"


@lru_cache(maxsize=1)
def capabilities() -> Capabilities:
    """Probe (once) which isolation layers this kernel and these binaries give us."""
    root = os.geteuid() == 0
    unshare, setpriv, bwrap = which("unshare"), which("setpriv"), which("bwrap")
    netns, pidns, reason = _probe_unshare(root, unshare)
    modes: dict[Mode, str | None] = {
        Mode.BWRAP: _probe_bwrap(root, bwrap, setpriv),
        Mode.UNSHARE: None if (netns or pidns) else reason,
        Mode.RLIMITS: None,
    }
    return Capabilities(
        root=root,
        unshare=unshare,
        netns=netns,
        pidns=pidns,
        userns=(netns or pidns) and not root,
        setpriv=setpriv,
        prlimit=which("prlimit"),
        reason=reason,
        bwrap=bwrap,
        socat=which("socat"),
        modes=modes,
    )


_config = SandboxConfig()


def configure(config: SandboxConfig) -> None:
    """Set the process-wide sandbox settings (start-up calls this with the ``Settings``)."""
    global _config
    _config = config


def current_config() -> SandboxConfig:
    return _config


def select_mode(requested: str | Mode | None = None) -> Mode:
    """The mode a command runs in: ``requested`` (or the configured one); ``auto`` is the
    strongest available. Raises ConfigError for an unknown or unavailable mode."""
    wanted = str(requested or _config.mode)
    caps = capabilities()
    if wanted == "auto":
        return caps.strongest
    try:
        mode = Mode(wanted)
    except ValueError:
        raise ConfigError(
            [
                (
                    MODE_SETTING,
                    f"unknown sandbox mode {wanted!r}; use auto, bwrap, unshare or rlimits",
                )
            ]
        ) from None
    why = caps.modes[mode]
    if why is not None:
        raise ConfigError([(MODE_SETTING, f"{mode} is not available on this host: {why}")])
    return mode
