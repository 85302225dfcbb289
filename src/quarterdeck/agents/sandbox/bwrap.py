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
no data dir, no home, no other workspace, no socket of ours (but the egress socket when given).

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

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from quarterdeck.agents.sandbox.spec import EGRESS_PORT, EGRESS_SOCKET, INSIDE_UID

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
class BwrapInputs:
    """Everything the argv depends on. ``system`` maps each of :data:`SYSTEM_LINKS` that exists
    on the host to its symlink target (or None when it is a real directory); ``etc`` lists the
    host ``/etc`` entries that exist; ``data_fds`` maps a sandbox path (``/etc/passwd``) to an
    open fd whose content bwrap copies there."""

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
        self.made = {"/", "/tmp", "/usr", "/etc", "/run", "/proc", "/dev"}

    def parents_of(self, path: str) -> None:
        for parent in _ancestors(path):
            if parent not in self.made:
                self.argv += ["--perms", "0755", "--dir", parent]
                self.made.add(parent)


def egress_bridge(socat: str) -> str:
    """A shell prelude that starts the loopback -> unix socket bridge and waits (≤ 2 s) until it
    listens, then execs the command. ``/proc/net/tcp`` is the sandbox's own network namespace."""
    port_hex = f"{EGRESS_PORT:04X}"
    listen = (
        f"{shlex.quote(socat)} TCP-LISTEN:{EGRESS_PORT},bind=127.0.0.1,fork,reuseaddr "
        f"UNIX-CONNECT:{EGRESS_SOCKET} &"
    )
    wait = (
        "i=0; while [ $i -lt 200 ] && ! grep -q '0100007F:"
        + port_hex
        + "' /proc/net/tcp; do sleep 0.01; i=$((i+1)); done"
    )
    return f'{listen} {wait}; exec "$@"'


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
    dirs.parents_of(i.workspace)
    argv += ["--bind", i.workspace, i.workspace]
    if i.egress_socket:
        argv += ["--perms", "0755", "--dir", "/run", "--perms", "0755"]
        argv += ["--dir", str(PurePosixPath(EGRESS_SOCKET).parent)]
        argv += ["--bind", i.egress_socket, EGRESS_SOCKET]
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
    if i.egress_socket:
        argv += ["/bin/sh", "-c", egress_bridge(i.socat or "/usr/bin/socat"), "sh"]
    argv += list(command)
    return argv
