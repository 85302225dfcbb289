"""The bwrap argv builder is pure: the same inputs give the same sandbox, and what it mounts is
exactly what the module docstring promises (nothing of the host beyond the listed paths)."""

from __future__ import annotations

from pathlib import Path

from quarterdeck.agents.sandbox.bwrap import (
    Bridge,
    BwrapInputs,
    Mount,
    account_files,
    bridge_prelude,
    bridge_socket,
    build_argv,
    egress_bridge,
    egress_env,
    inside_ids,
    layout_problems,
)
from quarterdeck.agents.sandbox.spec import EGRESS_SOCKET, INSIDE_UID

SYSTEM = {"/bin": "usr/bin", "/lib": "usr/lib", "/lib64": "usr/lib64", "/sbin": "usr/sbin"}


def inputs(**overrides: object) -> BwrapInputs:
    base: dict[str, object] = {
        "bwrap": "/usr/bin/bwrap",
        "setpriv": "/usr/bin/setpriv",
        "workspace": "/data/workspaces/run-1",
        "root": True,
        "ident": (1_000_000_123, 1_000_000_123),
        "tmp_bytes": 1024,
        "system": SYSTEM,
        "etc": ["/etc/ld.so.cache", "/etc/ssl", "/etc/passwd"],
        "ro_extra": ["/opt/py"],
        "data_fds": {"/etc/passwd": 7, "/etc/group": 8},
    }
    base.update(overrides)
    return BwrapInputs(**base)  # type: ignore[arg-type]


def mounts(argv: list[str]) -> dict[str, tuple[str, str]]:
    """dest -> (kind, source) for every mount-like option before the ``--`` separator."""
    out: dict[str, tuple[str, str]] = {}
    end = argv.index("--", argv.index("/usr/bin/bwrap"))
    args = argv[:end]
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("--ro-bind", "--ro-bind-try", "--bind", "--symlink"):
            out[args[i + 2]] = (a, args[i + 1])
            i += 3
        elif a in ("--ro-bind-data",):
            out[args[i + 2]] = (a, "fd" + args[i + 1])
            i += 3
        elif a in ("--proc", "--dev", "--tmpfs", "--dir"):
            out[args[i + 1]] = (a, "")
            i += 2
        else:
            i += 1
    return out


def test_root_shape_drops_to_the_runs_uid_inside() -> None:
    argv = build_argv(inputs(), ["prlimit", "--", "sh", "-c", "x"])
    assert argv[0] == "/usr/bin/bwrap"  # as root bwrap needs no user namespace
    assert "--unshare-user" not in argv and "--unshare-all" not in argv
    for flag in ("--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"):
        assert flag in argv
    assert {"--die-with-parent", "--new-session"} <= set(argv)
    tail = argv[argv.index("--", argv.index("--chdir")) + 1 :]
    assert tail[:6] == [
        "/usr/bin/setpriv",
        "--reuid",
        "1000000123",
        "--regid",
        "1000000123",
        "--clear-groups",
    ]
    assert "--bounding-set=-all" in tail and "--no-new-privs" in tail
    assert tail[-5:] == ["prlimit", "--", "sh", "-c", "x"]
    added = [argv[i + 1] for i, a in enumerate(argv) if a == "--cap-add"]
    assert set(added) == {"CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_DAC_OVERRIDE"}
    assert argv.index("--cap-drop") < argv.index("--cap-add")


def test_unprivileged_shape_uses_a_user_namespace() -> None:
    argv = build_argv(inputs(root=False, ident=None), ["true"])
    assert argv[:3] == ["/usr/bin/setpriv", "--no-new-privs", "--"]
    assert {"--unshare-all", "--unshare-user", "--disable-userns"} <= set(argv)
    assert argv[argv.index("--uid") + 1] == str(INSIDE_UID)
    assert "--cap-add" not in argv
    assert argv[-2:] == ["--", "true"]


def test_the_view_is_exactly_the_listed_paths() -> None:
    argv = build_argv(inputs(), ["true"])
    m = mounts(argv)
    assert m["/usr"] == ("--ro-bind", "/usr")
    assert m["/bin"] == ("--symlink", "usr/bin")
    assert m["/etc/ssl"] == ("--ro-bind-try", "/etc/ssl")
    assert m["/etc/passwd"] == ("--ro-bind-data", "fd7")  # synthesized, not the host's
    assert m["/proc"][0] == "--proc" and m["/dev"][0] == "--dev" and m["/tmp"][0] == "--tmpfs"
    assert m["/opt/py"] == ("--ro-bind-try", "/opt/py")
    assert m["/data/workspaces/run-1"] == ("--bind", "/data/workspaces/run-1")
    writable = {d for d, (kind, _) in m.items() if kind == "--bind"}
    assert writable == {"/data/workspaces/run-1"}  # the only host path it may write
    # Parents of mount points are made traversable, not bound: /data shows nothing of the host.
    assert m["/data"] == ("--dir", "") and m["/data/workspaces"] == ("--dir", "")
    host_sources = {src for kind, src in m.values() if kind in ("--ro-bind", "--ro-bind-try")}
    assert host_sources == {"/usr", "/etc/ld.so.cache", "/etc/ssl", "/opt/py"}
    assert argv[argv.index("--size") + 1] == "1024"
    assert argv[argv.index("--size") + 2 : argv.index("--size") + 4] == ["--tmpfs", "/tmp"]
    assert argv[argv.index("--chdir") + 1] == "/data/workspaces/run-1"


def test_a_real_directory_lib_is_bound_read_only() -> None:
    m = mounts(build_argv(inputs(system={"/lib": None, "/bin": "usr/bin"}), ["true"]))
    assert m["/lib"] == ("--ro-bind", "/lib")
    assert "/lib64" not in m  # absent on the host: absent inside


def test_tmpfs_comes_before_a_workspace_under_tmp() -> None:
    argv = build_argv(inputs(workspace="/tmp/qd/ws"), ["true"])
    tmpfs = argv.index("--tmpfs")
    assert argv.index("/tmp/qd") > tmpfs and argv.index("--bind") > tmpfs


def test_egress_socket_is_bound_and_bridged() -> None:
    argv = build_argv(inputs(egress_socket="/srv/egress.sock", socat="/usr/bin/socat"), ["cmd"])
    m = mounts(argv)
    assert m[EGRESS_SOCKET] == ("--bind", "/srv/egress.sock")
    i = argv.index("-c")
    assert argv[i - 1] == "/bin/sh" and argv[i + 1] == egress_bridge("/usr/bin/socat")
    assert argv[i + 2 :] == ["sh", "cmd"]
    assert "TCP-LISTEN:3128,bind=127.0.0.1,fork,reuseaddr" in argv[i + 1]
    assert f"UNIX-CONNECT:{EGRESS_SOCKET}" in argv[i + 1]
    assert "--share-net" not in argv and "--unshare-net" in argv  # still no host network
    assert egress_env()["HTTPS_PROXY"] == "http://127.0.0.1:3128"
    assert egress_env()["NO_PROXY"] == ""


def test_no_egress_means_no_socket_and_no_bridge() -> None:
    argv = build_argv(inputs(), ["cmd"])
    assert EGRESS_SOCKET not in argv and "/bin/sh" not in argv


def test_account_files_show_only_the_sandbox_user() -> None:
    files = account_files(1_000_000_123, 1_000_000_123, "/ws")
    users = [line.split(":") for line in files["/etc/passwd"].decode().splitlines()]
    assert [u[0] for u in users] == ["root", "agent", "nobody"]
    assert users[1][2:4] == ["1000000123", "1000000123"] and users[1][5] == "/ws"
    assert [g.split(":")[0] for g in files["/etc/group"].decode().splitlines()] == [
        "root",
        "agent",
        "nogroup",
    ]
    assert b"agent" not in account_files(65534, 65534, "/ws")["/etc/passwd"]


def test_inside_ids() -> None:
    assert inside_ids(True, (5, 6)) == (5, 6)
    assert inside_ids(False, None) == (INSIDE_UID, INSIDE_UID)


def test_egress_argv_is_what_it_was_before_bridges_were_general() -> None:
    """The egress bridge is now one bridge among others; its argv has not changed."""
    argv = build_argv(inputs(egress_socket="/srv/egress.sock", socat="/usr/bin/socat"), ["cmd"])
    i = argv.index(EGRESS_SOCKET)
    assert argv[i - 10 : i + 1] == [
        *("--perms", "0755", "--dir", "/run", "--perms", "0755", "--dir", "/run/quarterdeck"),
        *("--bind", "/srv/egress.sock", EGRESS_SOCKET),
    ]
    assert egress_bridge("/usr/bin/socat") == (
        "/usr/bin/socat TCP-LISTEN:3128,bind=127.0.0.1,fork,reuseaddr "
        "UNIX-CONNECT:/run/quarterdeck/egress.sock & i=0; while [ $i -lt 200 ] && "
        "! grep -q '0100007F:0C38' /proc/net/tcp; do sleep 0.01; i=$((i+1)); done; exec \"$@\""
    )


def test_mounts_are_read_only_unless_writable() -> None:
    ro = Mount(source=Path("/opt/tool/pkg"), target="/opt/tool/pkg")
    rw = Mount(source=Path("/srv/qd/gate.sock"), target="/run/qd/gate.sock", writable=True)
    argv = build_argv(inputs(mounts=[ro, rw]), ["cmd"])
    m = mounts(argv)
    assert m["/opt/tool/pkg"] == ("--ro-bind", "/opt/tool/pkg")
    assert m["/run/qd/gate.sock"] == ("--bind", "/srv/qd/gate.sock")
    writable = {d for d, (kind, _) in m.items() if kind == "--bind"}
    assert writable == {"/data/workspaces/run-1", "/run/qd/gate.sock"}
    # Their parents are made world-traversable, each once; nothing else of the host's appears.
    for parent in ("/opt", "/opt/tool", "/run", "/run/qd"):
        assert m[parent] == ("--dir", "")
        j = argv.index(parent)
        assert argv[j - 3 : j] == ["--perms", "0755", "--dir"]
    assert argv.count("/opt") == 1  # made once (for /opt/py), not again
    assert argv.index("/opt/tool/pkg") > argv.index("/data/workspaces/run-1")  # may overlay it
    assert "/bin/sh" not in argv  # no bridge, no prelude


def test_a_mount_inside_the_workspace_or_python_prefix_makes_no_dir_over_them() -> None:
    inner = Mount(source=Path("/srv/x"), target="/data/workspaces/run-1/.quarterdeck-agent/x")
    py = Mount(source=Path("/srv/y"), target="/opt/py/lib/y")
    argv = build_argv(inputs(mounts=[inner, py]), ["cmd"])
    dirs = [argv[k + 1] for k, a in enumerate(argv) if a == "--dir"]
    assert "/data/workspaces/run-1" not in dirs and "/opt/py" not in dirs
    assert "/data/workspaces/run-1/.quarterdeck-agent" in dirs and "/opt/py/lib" in dirs


def test_bridges_bind_their_sockets_and_each_gets_a_listener() -> None:
    gateway = Bridge(port=41000, socket=Path("/srv/gw.sock"))
    other = Bridge(port=41001, socket=Path("/srv/other.sock"))
    argv = build_argv(inputs(bridges=[gateway, other], socat="/usr/bin/socat"), ["claude", "-p"])
    m = mounts(argv)
    assert bridge_socket(41000) == "/run/quarterdeck/bridge-41000.sock"
    assert m["/run/quarterdeck/bridge-41000.sock"] == ("--bind", "/srv/gw.sock")
    assert m["/run/quarterdeck/bridge-41001.sock"] == ("--bind", "/srv/other.sock")
    assert EGRESS_SOCKET not in m
    i = argv.index("-c")
    prelude = argv[i + 1]
    assert argv[i - 1] == "/bin/sh" and argv[i + 2 :] == ["sh", "claude", "-p"]
    assert prelude == bridge_prelude(
        "/usr/bin/socat",
        [
            (41000, "/run/quarterdeck/bridge-41000.sock"),
            (41001, "/run/quarterdeck/bridge-41001.sock"),
        ],
    )
    for port in (41000, 41001):
        assert (
            f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr "
            f"UNIX-CONNECT:/run/quarterdeck/bridge-{port}.sock &"
        ) in prelude
        assert f"grep -q '0100007F:{port:04X}' /proc/net/tcp" in prelude  # waits for each
    assert prelude.index("0100007F:A028") > prelude.rindex("TCP-LISTEN")  # both start first
    assert prelude.endswith('exec "$@"')
    assert "--unshare-net" in argv and "--share-net" not in argv  # still no host network


def test_egress_and_bridges_together() -> None:
    gateway = Bridge(port=41000, socket=Path("/srv/gw.sock"))
    argv = build_argv(
        inputs(egress_socket="/srv/egress.sock", bridges=[gateway], socat="/s/socat"), ["cmd"]
    )
    m = mounts(argv)
    assert m[EGRESS_SOCKET] == ("--bind", "/srv/egress.sock")
    assert m["/run/quarterdeck/bridge-41000.sock"] == ("--bind", "/srv/gw.sock")
    assert argv.count("/run/quarterdeck") == 1  # the directory is made once
    prelude = argv[argv.index("-c") + 1]
    assert prelude == bridge_prelude(
        "/s/socat", [(3128, EGRESS_SOCKET), (41000, "/run/quarterdeck/bridge-41000.sock")]
    )


def test_layout_problems_name_what_cannot_be_honoured() -> None:
    ws = "/data/workspaces/run-1"
    ok = [Mount(Path("/a"), "/opt/a"), Mount(Path("/b"), f"{ws}/sub/b", writable=True)]
    assert layout_problems(ws, ok, [Bridge(41000, Path("/s"))]) == []
    bad_mounts = [
        Mount(Path("/a"), "relative/x"),
        Mount(Path("/a"), "/opt/../etc/x"),
        Mount(Path("/a"), "/etc"),
        Mount(Path("/a"), "/run/quarterdeck/bridge-41000.sock"),
        Mount(Path("/a"), "/data/workspaces"),  # would hide the workspace
        Mount(Path("/a"), ws),
    ]
    bad_bridges = [
        Bridge(80, Path("/s")),
        Bridge(41000, Path("/s")),
        Bridge(41000, Path("/t")),
        Bridge(3128, Path("/s")),
    ]
    problems = layout_problems(ws, bad_mounts, bad_bridges, egress=True)
    assert [name for name, _ in problems] == ["mounts"] * 6 + ["bridges"] * 3
    reasons = [reason for _, reason in problems]
    assert "not a clean absolute path" in reasons[0] and "not a clean absolute path" in reasons[1]
    assert all("would hide" in r for r in reasons[2:6])
    assert reasons[6:] == [
        "port 80 is not in 1024..65535",
        "port 41000 is bridged twice",
        "port 3128 is bridged twice",
    ]
    assert layout_problems(ws, [], [Bridge(3128, Path("/s"))]) == []  # free without egress
