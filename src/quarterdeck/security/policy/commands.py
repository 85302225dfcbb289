"""A shell command string as the flat list of :class:`Segment` facts rules are matched against.

Every simple command anywhere in the line becomes a segment -- including those inside
``$(...)``, backticks, process substitution, ``bash -c "..."``, ``sudo``/``env``/``xargs``
wrappers, ``find -exec``, shell heredocs, text piped or substituted into a shell, the
``os.system("...")`` of a ``python -c`` one-liner, ``git -c core.sshCommand=...`` and base64
payloads decoded from ``echo ... | base64 -d`` -- so a rule about ``cat ~/.ssh/id_rsa`` sees
it however it is dressed up. A ``cd`` moves where later relative paths point. Segments also
carry how data flows between them:

* ``upstream``: segments whose output reaches this one (earlier in its pipeline, or inside a
  substitution in its arguments);
* ``code_sources``: segments whose output this one *executes* (``curl ... | sh``,
  ``bash <(curl ...)``, ``python -c "$(curl ...)"``, ``eval "$(...)"``);
* ``runs_downloaded``: it executes (or makes executable) a file a downloader saved earlier in
  the same line (``curl -o x.sh URL && sh x.sh``).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

from quarterdeck.security.policy import argv as A
from quarterdeck.security.policy import programs as P
from quarterdeck.security.policy import wrappers as W
from quarterdeck.security.policy.hosts import HostFact, HostList, dev_tcp_hosts
from quarterdeck.security.policy.paths import Access, Frame, PathFact
from quarterdeck.security.policy.shell import Script, SimpleCommand, parse

MAX_DEPTH = 4
MAX_SEGMENTS = 256
_B64 = re.compile(r"[A-Za-z0-9+/]{8,}={0,2}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2}){8,}")
_COMMANDISH = re.compile(r"[ /;|.(]")
_WRITE_REDIRECTS = frozenset({">", ">>", ">|", "&>", "&>>", ">&", "<>"})
_EXEC_FLAGS = ("-exec", "-execdir", "-ok", "-okdir")
_COMMAND_VARS = frozenset(
    {
        "GIT_SSH_COMMAND",
        "GIT_EXTERNAL_DIFF",
        "GIT_ASKPASS",
        "GIT_EDITOR",
        "GIT_SEQUENCE_EDITOR",
        "PAGER",
        "GIT_PAGER",
        "EDITOR",
        "VISUAL",
        "PROMPT_COMMAND",
        "SSH_ASKPASS",
    }
)
_COMMAND_KEYS = frozenset(
    {
        "core.sshcommand",
        "core.fsmonitor",
        "core.pager",
        "core.editor",
        "core.askpass",
        "diff.external",
        "sequence.editor",
    }
)
_SPAWN = re.compile(
    r"""(?:\b(?:system|popen|exec|execSync|spawnSync|check_output|check_call|getoutput|"""
    r"""run|call|Popen|shell_exec|passthru|proc_open|%x)\s*\(\s*[rbuf]?(["'])(.{2,2000}?)"""
    r"""\1)|`([^`]{2,2000})`"""
)


@dataclass(slots=True, eq=False)
class Segment:
    """One simple command, after unwrapping, with everything the rules can ask about."""

    name: str
    args: list[str]
    text: str
    flags: frozenset[str]
    subcommand: str
    elevated: bool
    env: dict[str, str]
    paths: list[PathFact]
    hosts: list[HostFact]
    upstream: list[Segment] = field(default_factory=list)
    code_sources: list[Segment] = field(default_factory=list)
    stdin_script: bool = False
    runs_downloaded: bool = False
    uploads: bool = False
    decoded: bool = False
    downloads: tuple[str, ...] = ()
    stdin: str | None = None

    @property
    def line(self) -> str:
        return f"{self.name} {self.text}" if self.text else self.name


@dataclass(slots=True)
class _Ctx:
    frame: Frame
    allow: HostList
    out: list[Segment] = field(default_factory=list)
    truncated: bool = False
    scripts: dict[str, Script] = field(default_factory=dict)
    """Lines parsed so far in this call: the same text is often read twice (the body of
    ``$(printf 'cmd')`` is both the substitution and the code of ``sh -c``), and a parsed
    :class:`Script` is only read, never changed."""
    urls: dict[str, HostFact | None] = field(default_factory=dict)
    """Hosts of the URLs read so far in this call (the same reasoning)."""


def analyse_line(line: str, root: str, allow: HostList) -> tuple[list[Segment], bool]:
    """All segments of ``line`` in execution order (substitutions before their users), and
    whether analysis stopped early (nesting deeper than ``MAX_DEPTH`` or more than
    ``MAX_SEGMENTS`` segments): rules can then refuse what could not be read in full."""
    ctx = _Ctx(Frame(root, root), allow)
    _script(line, ctx, 0, False, False)
    return ctx.out, ctx.truncated


def analyse(line: str, root: str, allow: HostList) -> list[Segment]:
    return analyse_line(line, root, allow)[0]


def _printable(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        try:
            text = data.decode("utf-16-le")
        except UnicodeDecodeError:
            return None
    if not text:
        return None
    if text.isprintable():  # the usual payload: no need to count
        return text
    # printable characters or \n \t \r (which are not printable): counted by C loops
    readable = sum(map(str.isprintable, text)) + sum(map(text.count, "\n\t\r"))
    return None if readable < 0.9 * len(text) else text


def decode_payloads(text: str, min_len: int = 16) -> list[str]:
    """Readable text hidden in base64 or hex literals of ``text`` (obfuscated payloads).
    ``min_len`` is lower where the command itself decodes (``echo ... | base64 -d``)."""
    found: list[str] = []
    for blob in _B64.findall(text)[:8]:
        if len(blob) < min_len:
            continue
        try:
            decoded = _printable(base64.b64decode(blob + "=" * (-len(blob) % 4)))
        except (binascii.Error, ValueError):
            decoded = None
        if decoded and _COMMANDISH.search(decoded):
            found.append(decoded)
    for blob in _HEX.findall(text)[:4]:
        decoded = _printable(bytes.fromhex(blob))
        if decoded and " " in decoded:
            found.append(decoded)
    return found


def _script(line: str, ctx: _Ctx, depth: int, elevated: bool, decoded: bool) -> list[Segment]:
    if depth > MAX_DEPTH or len(ctx.out) >= MAX_SEGMENTS:
        ctx.truncated = True
        return []
    script = ctx.scripts.get(line)
    if script is None:
        script = ctx.scripts[line] = parse(line)
    sub_segments = [_script(sub.body, ctx, depth + 1, elevated, decoded) for sub in script.subs]
    mine: list[Segment] = []
    pipeline_members: dict[int, list[Segment]] = {}
    downloaded: set[str] = set()
    for command in script.commands:
        if len(ctx.out) >= MAX_SEGMENTS:
            ctx.truncated = True
            break
        before = pipeline_members.setdefault(command.pipeline, [])
        feeding = (
            [s for i in command.subs if script.subs[i].kind in "$<" for s in sub_segments[i]]
            if command.subs
            else []
        )
        segments = _command(command, script, sub_segments, ctx, depth, elevated, decoded)
        for segment in segments:
            segment.upstream = [*before, *feeding]
            if segment.stdin_script:
                segment.code_sources.extend(segment.upstream)
                if segment.name in P.SHELLS:
                    _piped_script(before, ctx, depth, segment.elevated, decoded)
            if segment.runs_downloaded is False and downloaded:
                segment.runs_downloaded = _runs(segment, downloaded)
            if segment.name in P.SOCKET_TOOLS and before:
                segment.uploads = True
        for i in command.subs:
            if script.subs[i].kind == ">":
                for inner in sub_segments[i]:
                    inner.upstream.extend(segments)
        decoder = False
        for segment in segments:
            if segment.downloads:
                downloaded.update(segment.downloads)
            decoder = decoder or segment.name in P.DECODERS
        before.extend(segments)
        mine.extend(segments)
        if decoder:
            _decoded_pipeline(command, before, ctx, depth, elevated)
    return mine


def _piped_script(
    upstream: list[Segment], ctx: _Ctx, depth: int, elevated: bool, decoded: bool
) -> None:
    """``echo "cmd" | sh``, ``cat <<EOF | bash``, ``sh -c "$(printf 'cmd')"``: text that a
    shell runs as code is a script, so analyse it as one."""
    for source in upstream:
        text = source.stdin if source.name == "cat" else None
        if source.name in ("echo", "printf"):
            text = " ".join(a for a in source.args if not a.startswith("-"))
        if text and (" " in text or "\n" in text):  # one bare word is data, not a script
            _script(text, ctx, depth + 1, elevated, decoded)


def _runs(segment: Segment, downloaded: set[str]) -> bool:
    """Does ``segment`` execute (or ``chmod +x``) a file downloaded earlier in the line?"""
    candidates = [segment.name] if segment.name in downloaded else []
    if P.is_interpreter(segment.name) or segment.name == "chmod":
        candidates += [a.rsplit("/", 1)[-1] for a in segment.args if not a.startswith("-")]
    return any(c in downloaded for c in candidates)


def _decoded_pipeline(
    command: SimpleCommand, members: list[Segment], ctx: _Ctx, depth: int, elevated: bool
) -> None:
    """``echo <base64> | base64 -d | sh``: decode the literal and analyse it as a script too."""
    sources = [command.stdin or ""] + [s.text for s in members if s.name in ("echo", "printf")]
    for text in sources:
        for payload in decode_payloads(text, min_len=8):
            _script(payload, ctx, depth + 1, elevated, True)


def _command(
    command: SimpleCommand,
    script: Script,
    sub_segments: list[list[Segment]],
    ctx: _Ctx,
    depth: int,
    elevated: bool,
    decoded: bool,
) -> list[Segment]:
    words = command.words
    found = W.unwrap(words, elevated) if words else W.Unwrapped([], {}, elevated)
    results: list[Segment] = []
    if found.nested is not None:
        nested = _script(found.nested, ctx, depth + 1, found.elevated, decoded)
        results.extend(s for s in nested if not s.upstream)
    argv = found.argv
    exec_words: list[str] = []
    if argv and argv[0].endswith("find"):
        argv, exec_words = _split_find(argv)
    name = W.program_name(argv[0]) if argv else ""
    args = argv[1:]
    interpreter = P.is_interpreter(name)
    code, script_arg, from_stdin = W.code_of(name, args) if interpreter else (None, None, False)
    segment = _segment(name, args, found, command, ctx, decoded, code)
    if name == "<substitution>":
        segment.code_sources = [
            s for i in command.subs for s in sub_segments[i] if script.subs[i].original in argv[0]
        ]
        _piped_script(segment.code_sources, ctx, depth, found.elevated, decoded)
    elif interpreter:
        segment.stdin_script = from_stdin and found.nested is None
        code_words = [w for w in (code, script_arg) if w]
        segment.code_sources = [
            s
            for i in command.subs
            for s in sub_segments[i]
            if any(script.subs[i].original in w for w in code_words)
        ]
        if name in P.SHELLS or name == "eval":
            _piped_script(segment.code_sources, ctx, depth, found.elevated, decoded)
        if code and name == "eval":
            _script(code, ctx, depth + 1, found.elevated, decoded)
        elif name not in P.SHELLS:
            _spawned(code or command.stdin or "", ctx, depth, found.elevated, decoded)
        if command.stdin and segment.stdin_script and name in P.SHELLS:
            _script(command.stdin, ctx, depth + 1, found.elevated, decoded)
            segment.stdin_script = False
    for code in _configured_commands(name, args, found.env):
        _script(code, ctx, depth + 1, found.elevated, decoded)
    if found.nested is None or argv:
        ctx.out.append(segment)
        results.append(segment)
    for wrapper, own in found.visible:  # chroot /host bash: chroot is judged as well as bash
        extra = _segment(wrapper, own, found, SimpleCommand(), ctx, decoded, None)
        ctx.out.append(extra)
        results.append(extra)
    if exec_words:
        inner = W.unwrap(exec_words, found.elevated)
        inner_name = W.program_name(inner.argv[0]) if inner.argv else ""
        inner_args = inner.argv[1:]
        inner_code = W.code_of(inner_name, inner_args)[0] if P.is_interpreter(inner_name) else None
        extra = _segment(inner_name, inner_args, inner, SimpleCommand(), ctx, decoded, inner_code)
        ctx.out.append(extra)
        results.append(extra)
    return results


def _configured_commands(name: str, args: list[str], env: dict[str, str]) -> list[str]:
    """Commands hidden in configuration: ``git -c core.sshCommand='...'``, and environment
    variables whose value git or ssh runs (``GIT_SSH_COMMAND=...``)."""
    if not env and name != "git":
        return []
    found = [v for k, v in env.items() if k in _COMMAND_VARS]
    if name == "git":
        for i, arg in enumerate(args[:-1]):
            key, _, value = args[i + 1].partition("=")
            if arg == "-c" and key.lower() in _COMMAND_KEYS:
                found.append(value)
    return found


def _spawned(code: str, ctx: _Ctx, depth: int, elevated: bool, decoded: bool) -> None:
    """Shell commands a script one-liner runs (``os.system("...")``, ``exec('...')``,
    backticks): analysed as commands too, so ``node -e "exec('nc -e /bin/sh ...')"`` is seen."""
    for found in _SPAWN.finditer(code):
        command = found.group(2) or found.group(3)
        if command:
            _script(command, ctx, depth + 1, elevated, decoded)


def _split_find(argv: list[str]) -> tuple[list[str], list[str]]:
    """``find DIR -exec CMD {} ;`` -> (find's argv, unchanged, and CMD's argv)."""
    for i, word in enumerate(argv):
        if word in _EXEC_FLAGS:
            end = next((j for j in range(i + 1, len(argv)) if argv[j] in (";", "+")), len(argv))
            return argv, argv[i + 1 : end]
    return argv, []


def _segment(
    name: str,
    args: list[str],
    found: W.Unwrapped,
    command: SimpleCommand,
    ctx: _Ctx,
    decoded: bool,
    code: str | None,
) -> Segment:
    """``code``: the inline code of an interpreter (``W.code_of``), which the caller has."""
    parsed = A.parse_options(name, args)
    extra = decode_payloads(code) if code and len(code) >= 16 else []
    if name in ("powershell", "pwsh"):
        extra += decode_payloads(" ".join(args))
    text = " ".join(args)
    if extra:
        text += "\n" + "\n".join(extra)
    paths = A.paths_of(name, args, parsed, ctx.frame, code)
    hosts = A.hosts_of(name, args, parsed, ctx.allow, ctx.urls)
    redirects = command.redirects
    for op, target in redirects:
        if target.startswith("/dev/tcp/") or target.startswith("/dev/udp/"):
            hosts.extend(dev_tcp_hosts(target, ctx.allow))
        elif not target.startswith(("$(", "`")):
            access: Access = "write" if op in _WRITE_REDIRECTS else "read"
            paths.append(ctx.frame.fact(target, access))
    for key, value in found.env.items():
        text += f" {key}={value}"
        if "/" in value or value.startswith("~"):
            paths.append(ctx.frame.fact(value, "read"))
    if command.stdin and P.is_interpreter(name) and name not in P.SHELLS:
        paths.extend(A.paths_of(name, [], A.Parsed(), ctx.frame, command.stdin))
        text += "\n" + command.stdin
    if name in ("cd", "pushd"):
        ctx.frame.cd(parsed.positionals[0] if parsed.positionals else None)
    reads_file = bool(redirects) and any(op == "<" for op, _ in redirects)
    subcommand = parsed.positionals[0] if parsed.positionals else ""
    # positional, in field order (upstream and code_sources start empty; stdin_script and
    # runs_downloaded False): keywords cost twice as much, once per segment of every call
    return Segment(
        name,
        args,
        text,
        frozenset(parsed.flags),
        subcommand,
        found.elevated,
        found.env,
        paths,
        hosts,
        [],
        [],
        False,
        False,
        name in A.UPLOADERS and A.uploads(name, parsed, False, reads_file),
        decoded,
        tuple(A.downloads(name, parsed)) if name in A.SAVERS else (),
        command.stdin,
    )
