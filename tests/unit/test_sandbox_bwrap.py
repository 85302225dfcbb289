"""The bwrap argv builder is pure: the same inputs give the same sandbox, and what it mounts is
exactly what the module docstring promises (nothing of the host beyond the listed paths)."""

from __future__ import annotations

from quarterdeck.agents.sandbox.bwrap import (
    BwrapInputs,
    account_files,
    build_argv,
    egress_bridge,
    egress_env,
    inside_ids,
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
