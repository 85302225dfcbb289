"""Wrappers peeled off an argv: ``sudo``, ``env X=1``, ``timeout 5``, ``sh -c "..."``...

A rule about ``cat ~/.ssh/id_rsa`` must see it however it is launched, so :func:`unwrap`
finds the command a chain of wrappers finally runs (and whether one of them elevates).
Wrappers that change *where* or *as whom* the command runs (``chroot``, ``nsenter``,
``unshare``) are facts in themselves: their own argv is kept in ``Unwrapped.visible`` so a
rule can judge ``chroot /host`` as well as the ``bash`` it starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from quarterdeck.security.policy import programs as P
from quarterdeck.security.policy.argv import ASSIGNMENT as _ASSIGNMENT
from quarterdeck.security.policy.argv import parse_options


@dataclass(slots=True)
class Unwrapped:
    """An argv with wrappers removed; ``nested`` is code a shell was asked to run (``-c``)."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    elevated: bool = False
    nested: str | None = None
    visible: list[tuple[str, list[str]]] = field(default_factory=list)
    """``(name, own args)`` of each peeled wrapper in ``P.VISIBLE_WRAPPERS``."""


def program_name(word: str) -> str:
    if word.startswith(("$(", "`", "<(")):
        return "<substitution>"
    base = word.lstrip("\\").rstrip("/")
    return base[base.rfind("/") + 1 :] or word  # posixpath.basename, without its overhead


# Programs that ``unwrap`` looks inside; any other name ends unwrapping at once (bar python -m).
_UNWRAPS = P.SHELLS | P.WRAPPERS | {"su", "runuser", "watch", "script", "sshpass"}


def unwrap(words: list[str], elevated: bool) -> Unwrapped:
    out = Unwrapped(list(words), {}, elevated)
    for _ in range(12):  # wrappers nest (sudo env X=1 nohup timeout 5 cmd) but not forever
        argv = out.argv
        while argv and "=" in argv[0] and _ASSIGNMENT.match(argv[0]):
            key, _, value = argv.pop(0).partition("=")
            out.env[key] = value
        if not argv:
            return out
        name = program_name(argv[0])
        if name not in _UNWRAPS and not (name[:6] == "python" and "-m" in argv):
            return out  # the common case: a plain program
        args = argv[1:]
        if name in P.SHELLS or name == "su" or name == "runuser":
            code = _shell_code(name, args)
            if code is not None:
                out.nested = code
                out.elevated = out.elevated or name in P.ELEVATORS
                return out
            if name in P.ELEVATORS:
                out.elevated = True
            return out
        if name in ("watch", "script") and args:
            parsed = parse_options(name, args)
            out.nested = " ".join(parsed.positionals)
            return out
        if "-m" in args and P.is_python(name):
            at = args.index("-m")
            if at + 1 < len(args):
                out.argv = [args[at + 1], *args[at + 2 :]]
                return out
        if name not in P.WRAPPERS and name != "sshpass":
            return out
        if name in P.ELEVATORS:
            out.elevated = True
        if name == "command" and args[:1] in (["-v"], ["-V"]):
            return out
        inner = _wrapped(name, args)
        if inner is None:
            return out
        if name == "env":
            split = next((a for a in inner if a.startswith("-S")), None)
            if split is not None:
                inner = split[2:].split() or inner[1:]
        elif name in P.VISIBLE_WRAPPERS:
            out.visible.append((name, args[: len(args) - len(inner)]))
        out.argv = inner
    return out


def _wrapped(name: str, args: list[str]) -> list[str] | None:
    """The argv a wrapper runs, or None when it runs none (``sudo -i``, bare ``env``)."""
    takes = P.value_options(name) | ({"-p", "-f", "-e"} if name == "sshpass" else set())
    i, skip = 0, P.positional_skip(name)
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if name == "env" and arg.startswith("-S"):
            return args[i:]
        if arg.startswith("-") and len(arg) > 1:
            i += 2 if (arg in takes and "=" not in arg) else 1
            continue
        if name == "env" and _ASSIGNMENT.match(arg):
            break
        if skip:
            skip -= 1
            i += 1
            continue
        break
    rest = args[i:]
    return rest or None


def _shell_code(name: str, args: list[str]) -> str | None:
    """The command string of ``sh -c STRING`` (also ``-lc``, ``-xc``, ``su - root -c``).
    Shell options end at the first operand; ``su`` takes ``-c`` anywhere."""
    for i, arg in enumerate(args):
        if arg.startswith("--command="):
            return arg.split("=", 1)[1]
        short_c = arg.startswith("-") and not arg.startswith("--") and arg.endswith("c")
        if arg in ("-c", "--command") or (short_c and name not in ("su", "runuser")):
            return args[i + 1] if i + 1 < len(args) else ""
        if not arg.startswith("-") and name not in ("su", "runuser"):
            return None
    return None


def code_of(name: str, args: list[str]) -> tuple[str | None, str | None, bool]:
    """For a code-running program: (inline code, script argument, reads script from stdin)."""
    if name in ("source", "."):
        return None, (args[0] if args else None), False
    if name == "eval":
        return " ".join(args), None, False
    for i, arg in enumerate(args):
        if arg.lower() in P.CODE_FLAGS:
            return (args[i + 1] if i + 1 < len(args) else ""), None, False
        if name in P.SHELLS and arg.startswith("-") and not arg.startswith("--") and "s" in arg:
            return None, None, True
        if not arg.startswith("-"):
            return None, arg, arg in ("/dev/stdin", "/dev/fd/0")
        if arg == "-":
            return None, None, True
    return None, None, True
