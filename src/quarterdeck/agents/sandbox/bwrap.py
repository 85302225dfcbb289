"""The bubblewrap command line for one command: the strong mode, as a pure function.

Everything the sandbox sees is listed here, so this module is the answer to "what can an agent's
command reach?". It takes plain inputs (paths, ids, fds the caller has opened) and returns an
argv; :mod:`.runner` executes it and ``tests/unit/test_sandbox_bwrap.py`` pins it down.

The view: ``/usr`` (and the ``/bin``, ``/lib*``, ``/sbin`` links or dirs) read-only; of ``/etc``
only what a toolchain needs to link, resolve users and verify TLS (``passwd`` and ``group`` are
synthesized: the host's account list is not shown); a private tmpfs ``/tmp`` of bounded size;
a fresh ``/proc`` for a new PID namespace; a minimal ``/dev``; the run's workspace read-write at
its own host path (so paths the file tools report work unchanged in commands); optionally the
Python installation read-only (quality measurement runs the worker's interpreter). Nothing else:
no data dir, no home, no other workspace, no socket of ours but those the caller names: the egress
socket, :class:`Bridge` sockets (each served on a loopback port inside by ``socat``) and
:class:`Mount` paths (read-only unless marked writable).

Two shapes, by who runs the worker:

* **root**: bwrap runs as root *without* a user namespace (so it can bind paths only root may
  traverse) and makes IPC, PID, network, UTS and cgroup namespaces; inside, ``setpriv`` drops to
  the run's own host uid, clears the capability bounding set and sets no_new_privs before the
  command starts. Host-side, the command is that unprivileged uid: file permissions and
  ``RLIMIT_NPROC`` apply to it.
* **not root**: bwrap makes a user namespace as well (``--unshare-all``), maps the worker's uid
  to :data:`~.spec.INSIDE_UID` inside, drops every capability and forbids nested user
  namespaces. Host-side, the command is still the worker's uid: only the filesystem view (not a
  uid) keeps it from the worker's files. The kernel gives no per-run uid without privilege.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from quarterdeck.agents.sandbox.spec import EGRESS_PORT, EGRESS_SOCKET, INSIDE_UID

BRIDGE_DIR = str(PurePosixPath(EGRESS_SOCKET).parent)
"""Where bridged sockets appear inside the sandbox (``/run/quarterdeck``)."""
LISTEN_WAIT_TICKS = 200
"""How many 10 ms ticks the prelude waits for each bridge to listen (2 s) before it execs the
command anyway (which then sees a refused connection, and socat's own error on stderr)."""

ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/pki",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/etc/protocols",
    "/etc/services",
    "/etc/mime.types",
    "/etc/os-release",
    "/etc/debian_version",
    "/etc/terminfo",
    "/etc/python3",
    "/etc/python3.11",
    "/etc/java-17-openjdk",
)
"""Host ``/etc`` entries bound read-only when present. Deliberately absent: ``shadow``,
``gshadow``, ``sudoers``, ``ssh``, ``pip.conf``/``npmrc``/``gitconfig`` (may hold index or
credential-helper settings), ``resolv.conf`` (no DNS without a network), ``hostname``,
``machine-id``."""

SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
"""Top-level system paths: on merged-/usr hosts symlinks into ``/usr``, otherwise bound
read-only."""


@dataclass(frozen=True)
class Bridge:
    """A loopback TCP port inside the sandbox forwarded (socat, like the egress bridge) to a Unix
    socket the worker serves outside. The sandbox has no network; this is how a long-lived
    agent reaches a worker-side service (the gateway) that only speaks TCP to its clients."""

    port: int
    socket: Path
    """Host path of the unix socket; it must be connectable by the sandbox's uid."""


@dataclass(frozen=True)
class Mount:
    """A host path bound into the sandbox at ``target`` (read-only unless ``writable``; use
    writable=True for a unix socket the process must connect to)."""

    source: Path
    target: str
    writable: bool = False


def bridge_socket(port: int) -> str:
    """Where a bridge's unix socket appears inside the sandbox."""
    return f"{BRIDGE_DIR}/bridge-{port}.sock"


_RESERVED_TARGETS = ("/", "/usr", "/etc", "/proc", "/dev", "/tmp", "/run", BRIDGE_DIR)


def layout_problems(
    workspace: str, mounts: Sequence[Mount], bridges: Sequence[Bridge], *, egress: bool = False
) -> list[tuple[str, str]]:
    """(field, reason) for every mount or bridge the sandbox cannot honour: a target that is not
    a clean absolute path or would hide a part of the view the sandbox relies on (the system
    directories, the workspace, the bridges' sockets), a port an unprivileged listener cannot
    bind, or one used twice (the egress bridge owns 3128)."""
    problems: list[tuple[str, str]] = []
    for mount in mounts:
        target = mount.target
        if not target.startswith("/") or posixpath.normpath(target) != target:
            problems.append(("mounts", f"target {target!r} is not a clean absolute path"))
        elif (
            target in _RESERVED_TARGETS
            or target.startswith(BRIDGE_DIR + "/")
            or f"{workspace}/".startswith(f"{target}/")
        ):
            problems.append(("mounts", f"target {target!r} would hide the sandbox's own view"))
    seen = {EGRESS_PORT} if egress else set()
    for bridge in bridges:
        if not 1024 <= bridge.port <= 65535:
            problems.append(("bridges", f"port {bridge.port} is not in 1024..65535"))
        elif bridge.port in seen:
            problems.append(("bridges", f"port {bridge.port} is bridged twice"))
        seen.add(bridge.port)
    return problems


@dataclass(frozen=True)
class BwrapInputs:
    """Everything the argv depends on. ``system`` maps each of :data:`SYSTEM_LINKS` that exists
    on the host to its symlink target (or None when it is a real directory); ``etc`` lists the
    host ``/etc`` entries that exist; ``data_fds`` maps a sandbox path (``/etc/passwd``) to an
    open fd whose content bwrap copies there. ``egress_socket`` is the egress proxy's socket,
    which is one more bridge (port :data:`EGRESS_PORT`, inside at :data:`EGRESS_SOCKET`);
    ``bridges`` and ``mounts`` are a long-lived agent's (:mod:`.session`)."""

    bwrap: str
    setpriv: str
    workspace: str
    root: bool
    ident: tuple[int, int] | None
    tmp_bytes: int
    system: Mapping[str, str | None]
    etc: Sequence[str] = ()
    ro_extra: Sequence[str] = ()
    data_fds: Mapping[str, int] = field(default_factory=dict)
    egress_socket: str | None = None
    socat: str | None = None
    mounts: Sequence[Mount] = ()
    bridges: Sequence[Bridge] = ()


def account_files(uid: int, gid: int, home: str) -> dict[str, bytes]:
    """Synthesized ``/etc/passwd`` and ``/etc/group``: the sandbox's own user and nothing of the
    host's account list (tools such as ``whoami``, git and ssh want an entry for their uid)."""
    users = [
        "root:x:0:0:root:/root:/usr/sbin/nologin",
        f"agent:x:{uid}:{gid}:agent:{home}:/bin/sh",
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin",
    ]
    groups = ["root:x:0:", f"agent:x:{gid}:", "nogroup:x:65534:"]
    if uid in (0, 65534):
        users = [u for u in users if not u.startswith("agent:")]
    if gid in (0, 65534):
        groups = [g for g in groups if not g.startswith("agent:")]
    return {
        "/etc/passwd": ("\n".join(users) + "\n").encode(),
        "/etc/group": ("\n".join(groups) + "\n").encode(),
    }


def inside_ids(root: bool, ident: tuple[int, int] | None) -> tuple[int, int]:
    """The (uid, gid) a command has inside the sandbox."""
    if root and ident is not None:
        return ident
    return INSIDE_UID, INSIDE_UID


def _ancestors(path: str) -> list[str]:
    parts = PurePosixPath(path).parents
    return [str(p) for p in reversed(parts) if str(p) != "/"]


class _Dirs:
    """Creates each missing parent of a mount point once, world-traversable (bwrap would make
    them 0700 as root, which the dropped uid could not enter)."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.made = {"/", "/tmp", "/usr", "/etc", "/proc", "/dev"}

    def parents_of(self, path: str) -> None:
        for parent in _ancestors(path):
            if parent not in self.made:
                self.argv += ["--perms", "0755", "--dir", parent]
                self.made.add(parent)


def bridge_prelude(socat: str, bridges: Sequence[tuple[int, str]]) -> str:
    """A shell prelude that starts one loopback -> unix socket bridge per (port, inside socket),
    waits (≤ 2 s each) until each listens, then execs the command. ``/proc/net/tcp`` is the
    sandbox's own network namespace."""
    listens = [
        f"{shlex.quote(socat)} TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr "
        f"UNIX-CONNECT:{socket} &"
        for port, socket in bridges
    ]
    waits = [
        f"i=0; while [ $i -lt {LISTEN_WAIT_TICKS} ] && ! grep -q '0100007F:"
        + f"{port:04X}"
        + "' /proc/net/tcp; do sleep 0.01; i=$((i+1)); done"
        for port, _ in bridges
    ]
    return f'{" ".join(listens)} {"; ".join(waits)}; exec "$@"'


def egress_bridge(socat: str) -> str:
    """The egress proxy's bridge alone: ``127.0.0.1:3128`` -> :data:`EGRESS_SOCKET`."""
    return bridge_prelude(socat, [(EGRESS_PORT, EGRESS_SOCKET)])


def egress_env() -> dict[str, str]:
    proxy = f"http://127.0.0.1:{EGRESS_PORT}"
    return {
        "HTTP_PROXY": proxy,
        "HTTPS_PROXY": proxy,
        "http_proxy": proxy,
        "https_proxy": proxy,
        "NO_PROXY": "",
        "no_proxy": "",
    }


def build_argv(inputs: BwrapInputs, command: Sequence[str]) -> list[str]:
    """The full argv: ``command`` (already wrapped in prlimit by the caller) inside bwrap."""
    i = inputs
    argv: list[str] = []
    if not i.root:
        argv += [i.setpriv, "--no-new-privs", "--"]
    argv.append(i.bwrap)
    if i.root:
        argv += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
        argv += ["--unshare-cgroup-try"]
    else:
        argv += ["--unshare-all", "--unshare-user", "--disable-userns"]
        argv += ["--uid", str(INSIDE_UID), "--gid", str(INSIDE_UID)]
    argv += ["--die-with-parent", "--new-session", "--hostname", "sandbox"]
    argv += ["--ro-bind", "/usr", "/usr"]
    for path in SYSTEM_LINKS:
        if path not in i.system:
            continue
        target = i.system[path]
        argv += ["--symlink", target, path] if target else ["--ro-bind", path, path]
    argv += ["--perms", "0755", "--dir", "/etc"]
    for path in i.etc:
        if path not in i.data_fds:
            argv += ["--ro-bind-try", path, path]
    for dest, fd in sorted(i.data_fds.items()):
        argv += ["--perms", "0644", "--ro-bind-data", str(fd), dest]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--perms", "1777", "--size", str(i.tmp_bytes), "--tmpfs", "/tmp"]
    dirs = _Dirs(argv)
    for path in i.ro_extra:
        dirs.parents_of(path)
        argv += ["--ro-bind-try", path, path]
        dirs.made.add(path)
    dirs.parents_of(i.workspace)
    argv += ["--bind", i.workspace, i.workspace]
    dirs.made.add(i.workspace)  # a mount may go inside either: their dirs exist
    for mount in i.mounts:
        dirs.parents_of(mount.target)
        argv += ["--bind" if mount.writable else "--ro-bind", str(mount.source), mount.target]
    bridged = _bridged(i)
    for _, host, inside in bridged:
        dirs.parents_of(inside)
        argv += ["--bind", host, inside]
    argv += ["--chdir", i.workspace]
    argv += ["--cap-drop", "ALL"]
    if i.root:  # what setpriv needs to drop to the run's uid (and to enter its 0700 workspace);
        # the uid change clears them, setpriv empties the bounding set, no_new_privs seals it
        for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_DAC_OVERRIDE"):
            argv += ["--cap-add", cap]
    argv.append("--")
    if i.root:
        uid, gid = i.ident or (65534, 65534)
        argv += [i.setpriv, "--reuid", str(uid), "--regid", str(gid), "--clear-groups"]
        argv += ["--bounding-set=-all", "--inh-caps=-all", "--no-new-privs", "--"]
    if bridged:
        prelude = bridge_prelude(i.socat or "/usr/bin/socat", [(p, s) for p, _, s in bridged])
        argv += ["/bin/sh", "-c", prelude, "sh"]
    argv += list(command)
    return argv


def _bridged(i: BwrapInputs) -> list[tuple[int, str, str]]:
    """(port, host socket, inside socket) of every bridge, the egress proxy's first."""
    out: list[tuple[int, str, str]] = []
    if i.egress_socket:
        out.append((EGRESS_PORT, i.egress_socket, EGRESS_SOCKET))
    out += [(b.port, str(b.socket), bridge_socket(b.port)) for b in i.bridges]
    return out
