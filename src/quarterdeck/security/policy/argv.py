"""One argv, understood: options parsed, files and hosts it touches.

Everything here works on a single simple command, after :mod:`.wrappers` has peeled ``sudo``,
``env``, ``sh -c``... off it; how commands connect (pipes, substitutions) is :mod:`.commands`'
job.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

from quarterdeck.security.policy import programs as P
from quarterdeck.security.policy.hosts import (
    HostFact,
    HostList,
    dev_tcp_hosts,
    from_hostish,
    from_url,
    make_host,
    urls_in,
)
from quarterdeck.security.policy.paths import Access, Frame, PathFact

ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SOCAT_ADDR = re.compile(
    r"(?i)^(?:tcp|tcp4|tcp6|udp|udp4|udp6|openssl|ssl|socks4a?|proxy)"
    r"(?:-connect)?:([^:,]+):(\d+)"
)
_REMOTE_SPEC = re.compile(r"^(?:[^@/\s:]+@)?([A-Za-z0-9_.-]{2,}|\[[0-9a-fA-F:.]+\]):(?!//)")
_DRIVE = re.compile(r"^[A-Za-z]:")
_SCP_LIKE = re.compile(r"^[^@/\s:]+@([A-Za-z0-9_.-]+):")
_CODE_PATH = re.compile(r"""["']((?:/|~/|\$HOME/|\.\./)[^"'\s]{1,300}|\.env(?:\.[\w.-]+)?)["']""")
_TEXT_OPTIONS = frozenset(
    {
        "-m",
        "--message",
        "-H",
        "--header",
        "-A",
        "--user-agent",
        "-w",
        "--write-out",
        "-X",
        "--request",
        "-e",
        "--regexp",
        "--expression",
        "-F",
        "--form",
        "-d",
        "--data",
        "--data-raw",
        "--json",
        "-u",
        "--user",
        "-b",
        "--cookie",
        "-s",
        "-g",
        "--glob",
        "-v",
        "-n",
        "-printf",
        "-regex",
        "-c",
        "-p",
        "--password",
    }
)
_WRITE_OUTPUT = frozenset(
    {"-o", "--output", "-O", "--output-document", "--output-file", "-out", "-keyout"}
)


@dataclass(slots=True)
class Parsed:
    flags: set[str] = field(default_factory=set)
    positionals: list[str] = field(default_factory=list)
    values: dict[str, list[str]] = field(default_factory=dict)


def parse_options(name: str, args: list[str]) -> Parsed:
    """Flags (short clusters also split: ``-rf`` gives ``-rf``, ``-r``, ``-f``), positional
    arguments, and the values of options known to take one."""
    takes = P.value_options(name)
    out = Parsed()
    i, n, ended = 0, len(args), False
    while i < n:
        arg = args[i]
        if ended or not arg.startswith("-") or arg == "-" or len(arg) == 1:
            out.positionals.append(arg)
        elif arg == "--":
            ended = True
        elif arg.startswith("--") or arg in takes:
            key, eq, value = arg.partition("=")
            out.flags.add(key)
            if eq:
                out.values.setdefault(key, []).append(value)
            elif key in takes and i + 1 < n:
                out.values.setdefault(key, []).append(args[i + 1])
                i += 1
        else:
            out.flags.add(arg)
            for j, ch in enumerate(arg[1:]):
                opt = "-" + ch
                out.flags.add(opt)
                if opt in takes:
                    rest = arg[2 + j :]
                    if rest:
                        out.values.setdefault(opt, []).append(rest)
                    elif i + 1 < n:
                        out.values.setdefault(opt, []).append(args[i + 1])
                        i += 1
                    break
        i += 1
    return out


_HOST_PROGRAMS = (
    P.DOWNLOADERS | P.SOCKET_TOOLS | P.DNS_TOOLS | P.REMOTE_SHELLS | P.REMOTE_COPIES | {"git"}
)


def hosts_of(
    name: str,
    args: list[str],
    parsed: Parsed,
    allow: HostList,
    urls: dict[str, HostFact | None] | None = None,
) -> list[HostFact]:
    """Every destination the command would connect to (see :mod:`.hosts`). ``urls``: hosts of
    the URLs already read in this call (nested commands repeat them; a HostFact is frozen)."""
    found: list[HostFact | None] = []
    for arg in args:
        if "://" in arg:
            for url in urls_in(arg):
                if urls is None:
                    found.append(from_url(url, allow))
                elif url in urls:
                    found.append(urls[url])
                else:
                    found.append(urls.setdefault(url, from_url(url, allow)))
        if "/dev/" in arg:
            found.extend(dev_tcp_hosts(arg, allow))
    if name not in _HOST_PROGRAMS:  # most programs name no hosts but in URLs
        return [h for h in found if h is not None] if found else []
    pos = [p for p in parsed.positionals if "://" not in p]
    if name in P.DOWNLOADERS:
        found.extend(from_hostish(p, allow) for p in pos)
        for key in ("-x", "--proxy", "--url"):
            found.extend(
                from_hostish(v, allow) for v in parsed.values.get(key, []) if "://" not in v
            )
    elif name in P.SOCKET_TOOLS:
        if name == "socat":
            for arg in args:
                addr = _SOCAT_ADDR.match(arg)
                if addr:
                    found.append(make_host(arg, addr.group(1), int(addr.group(2)), allow))
        elif name == "openssl":
            found.extend(from_hostish(v, allow) for v in parsed.values.get("-connect", []))
        elif pos and not pos[0].isdigit():
            port = int(pos[1]) if len(pos) > 1 and pos[1].isdigit() else None
            found.append(make_host(pos[0], pos[0], port, allow))
    elif name in P.DNS_TOOLS:
        for p in pos:
            if not p.startswith(("@", "+")) and p.upper() not in P.DNS_TYPES:
                found.append(from_hostish(p.rstrip("."), allow))
    elif name in P.REMOTE_SHELLS and pos:
        found.append(make_host(pos[0], pos[0].rsplit("@", 1)[-1], None, allow))
    elif name in P.REMOTE_COPIES or name == "git":
        pattern = _REMOTE_SPEC if name in P.REMOTE_COPIES else _SCP_LIKE
        for p in pos:
            remote = pattern.match(p)
            if remote and not _DRIVE.match(p):
                found.append(make_host(p, remote.group(1), None, allow))
    return [h for h in found if h is not None]


def _path_like(text: str) -> bool:
    return bool(text) and "\n" not in text and "://" not in text and len(text) < 4096


def paths_of(
    name: str,
    args: list[str],
    parsed: Parsed,
    frame: Frame,
    code: str | None,
) -> list[PathFact]:
    """Every file the command names, with how it uses it (read, write or list)."""
    out: list[PathFact] = []
    if name in P.TEXT_PROGRAMS:
        return out
    access: Access = "list" if name in P.LIST_PROGRAMS else "read"
    if name in P.WRITE_ALL or (
        name in ("sed", "perl") and any(f.startswith("-i") for f in parsed.flags)
    ):
        access = "write"
    positionals = parsed.positionals
    if name in P.PATTERN_FIRST and not ({"-e", "-f", "--regexp", "--file"} & parsed.flags):
        positionals = positionals[1:]
    if name in P.REMOTE_SHELLS:
        positionals = []
    if P.is_interpreter(name) and code is not None:
        positionals = positionals[1:] if positionals[:1] == [code] else positionals
    last = len(positionals) - 1 if name in P.WRITE_LAST else -1  # its index is written to
    is_dd, remote = name == "dd", name in P.REMOTE_COPIES
    for index, arg in enumerate(positionals):
        role: Access = "write" if (index == last and index > 0) else access
        if is_dd and "=" in arg:
            key, _, value = arg.partition("=")
            if key in ("of", "if") and _path_like(value):
                out.append(frame.fact(value, "write" if key == "of" else "read"))
            continue
        if remote and _REMOTE_SPEC.match(arg):
            continue
        target = arg[1:] if arg.startswith("@") else arg
        if "=" in target and ASSIGNMENT.match(target):
            target = target.split("=", 1)[1]
        if "=@" in target:
            target = target.split("=@", 1)[1]
        if target[:7].lower() == "file://":
            out.append(frame.fact(target, "read"))
        elif (
            target
            and "\n" not in target
            and "://" not in target
            and len(target) < 4096
            and not target.startswith(("$(", "`", "<(", ">("))
        ):
            out.append(frame.fact(target, role))  # (that is: _path_like, and not substituted)
    for key, values in parsed.values.items():
        if key in _TEXT_OPTIONS and not any(v.startswith("@") or "=@" in v for v in values):
            continue
        role = "write" if key in _WRITE_OUTPUT else access
        for value in values:
            value = value.split("=@", 1)[1] if "=@" in value else value.lstrip("@")
            if _path_like(value) and (role == "write" or "/" in value or value[:1] in ".~"):
                out.append(frame.fact(value, role))
    if code:
        for literal in _CODE_PATH.findall(code):
            out.append(frame.fact(literal, "read"))
            if literal.startswith("/."):  # HOME + '/.npmrc': a dotfile at / means one in ~
                out.append(frame.fact("~" + literal, "read"))
    return out


UPLOADERS = (
    frozenset({"curl", "http", "https", "xh", "httpie", "wget"}) | P.SOCKET_TOOLS | P.REMOTE_COPIES
)
"""The only programs :func:`uploads` can say yes for."""
SAVERS = frozenset({"curl", "wget", "fetch", "aria2c"})
"""The only programs :func:`downloads` can name files for."""


def uploads(name: str, parsed: Parsed, piped_in: bool, reads_stdin_file: bool) -> bool:
    """Does the command send local data somewhere (files, stdin) rather than just fetch?"""
    if name in ("curl", "http", "https", "xh", "httpie"):
        if {"-T", "--upload-file", "-F", "--form"} & parsed.flags:
            return True
        data = [
            v
            for k, vs in parsed.values.items()
            if k.startswith(("-d", "--data", "--json"))
            for v in vs
        ]
        return any(v.startswith("@") for v in data) or any("@" in p for p in parsed.positionals)
    if name == "wget":
        return bool({"--post-file", "--body-file"} & parsed.flags)
    if name in P.SOCKET_TOOLS:
        return piped_in or reads_stdin_file
    if name in P.REMOTE_COPIES:
        return bool(parsed.positionals) and bool(_REMOTE_SPEC.match(parsed.positionals[-1]))
    return False


def downloads(name: str, parsed: Parsed) -> list[str]:
    """Base names of files a downloader saves (for ``curl -o x.sh && sh x.sh``)."""
    if name not in SAVERS:
        return []
    names = [
        v
        for k in ("-o", "--output", "-O", "--output-document")
        for v in parsed.values.get(k, [])
        if v != "-"
    ]
    remote = ("-O" in parsed.flags and name == "curl") or "--remote-name" in parsed.flags
    if remote or (name == "wget" and not names and "-O" not in parsed.values):
        names += [
            u.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
            for u in parsed.positionals
            if "://" in u
        ]
    return [posixpath.basename(n) for n in names if n]
