"""Exec a command under a seccomp profile written in the OCI/Kubernetes JSON format.

Usage: ``python seccomp_exec.py PROFILE.json -- COMMAND [ARGS...]``

This is what runc does with a pod's ``Localhost`` profile, done with the same library (libseccomp,
through ctypes, so no compiled extension is needed): set no_new_privs (the pod's
``allowPrivilegeEscalation: false``), build the filter for every listed architecture, load it,
exec. Only what the shipped profile uses is supported (a default action, plain name rules with
``SCMP_ACT_ALLOW`` or ``SCMP_ACT_ERRNO``); anything else is refused rather than ignored, so a
profile this cannot express is never tested as if it could. Like runc, names this libseccomp
does not know are skipped. Standard library only: it runs as the pod's uid, from any directory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import sys
from typing import Any

ACT_ALLOW = 0x7FFF0000
NR_SCMP_ERROR = -1


def _action(name: str, errno_ret: int) -> int:
    if name == "SCMP_ACT_ALLOW":
        return ACT_ALLOW
    if name == "SCMP_ACT_ERRNO":
        return 0x00050000 | (errno_ret & 0xFFFF)
    raise SystemExit(f"seccomp_exec: action {name} is not supported")


def load(profile: dict[str, Any]) -> None:
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]

    unknown = set(profile) - {"defaultAction", "defaultErrnoRet", "architectures", "syscalls"}
    if unknown:
        raise SystemExit(f"seccomp_exec: unsupported profile keys {sorted(unknown)}")
    ctx = lib.seccomp_init(_action(profile["defaultAction"], profile.get("defaultErrnoRet", 1)))
    if not ctx:
        raise SystemExit("seccomp_exec: seccomp_init failed")
    for arch in profile.get("architectures", []):
        token = lib.seccomp_arch_resolve_name(arch.removeprefix("SCMP_ARCH_").lower().encode())
        if token == 0:
            raise SystemExit(f"seccomp_exec: unknown architecture {arch}")
        rc = lib.seccomp_arch_add(ctx, token)
        if rc not in (0, -errno.EEXIST):
            raise SystemExit(f"seccomp_exec: cannot add {arch}: {os.strerror(-rc)}")
    for rule in profile["syscalls"]:
        if set(rule) - {"names", "action", "errnoRet"}:
            raise SystemExit(f"seccomp_exec: unsupported rule keys {sorted(rule)}")
        action = _action(rule["action"], rule.get("errnoRet", 1))
        for name in rule["names"]:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number == NR_SCMP_ERROR:
                continue
            rc = lib.seccomp_rule_add(ctx, action, number, 0)
            if rc < 0:
                raise SystemExit(f"seccomp_exec: rule for {name}: {os.strerror(-rc)}")
    rc = lib.seccomp_load(ctx)  # sets no_new_privs first (libseccomp's default)
    if rc < 0:
        raise SystemExit(f"seccomp_exec: seccomp_load: {os.strerror(-rc)}")


def main(argv: list[str]) -> None:
    if len(argv) < 4 or argv[2] != "--":
        raise SystemExit(__doc__)
    with open(argv[1]) as fh:
        load(json.load(fh))
    os.execvp(argv[3], argv[3:])


if __name__ == "__main__":
    main(sys.argv)
