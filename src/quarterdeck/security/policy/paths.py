"""Path normalisation and the glob dialect of ``path.matches``.

A model names files in many ways -- ``.env``, ``./src/../.env``, ``/work/run/.env``,
``~/.ssh/id_rsa``, ``$HOME/.ssh/id_rsa``, ``../../etc/shadow`` -- so every path is resolved
*lexically* (no filesystem access: ``check`` must be pure) to an absolute POSIX path before any
rule sees it, and classified as inside the workspace, outside it, or unknown (it starts with a
variable we cannot expand).

``~`` and ``$HOME`` always resolve to ``/~``, a home directory that is never inside the
workspace. The sandbox may well set ``HOME`` to the workspace, but a model that writes
``~/.ssh/id_rsa`` means the user's keys, and the policy judges intent, not sandbox layout.

Glob patterns (compiled once, matched case-insensitively because macOS and Windows file
systems are):

* ``name`` (no ``/``)            -- the last component: ``id_rsa``, ``*.pem``, ``.env.*``
* ``dir/name`` (relative)        -- a suffix at a directory boundary: ``.aws/credentials``
  (a leading ``**/`` means the same thing)
* ``/abs/path``                  -- anchored at the root: ``/etc/shadow``, ``/proc/*/environ``
* ``~/path``                     -- anchored at any home: ``/~``, ``/root``, ``/home/*``,
  ``/Users/*``
* ``*`` and ``?`` stay inside one component, ``**`` crosses them (``/etc/**``), ``[abc]``
  and ``{a,b}`` work as in the shell.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Literal

Location = Literal["workspace", "outside", "unknown"]
Access = Literal["read", "write", "list"]

HOME = "/~"
DEFAULT_ROOT = "/workspace"
_HOME_PREFIX = r"(?:/~|/root|/home/[^/]+|/Users/[^/]+)"
_VAR = re.compile(r"^\$(?:\{(\w+)\}|(\w+))")
_KNOWN_VARS = {"HOME": HOME, "TMPDIR": "/tmp", "TMP": "/tmp", "TEMP": "/tmp"}
WILDCARDS = re.compile(r"[*?\[]")


@dataclass(slots=True)
class PathFact:
    """One file name the call touches, as written and as resolved.

    ``hot_anchored`` / ``hot_searched`` are set by the gate: does the path match *any*
    anchored / unanchored glob that any rule mentions? A ``matches`` condition skips the half
    of its :class:`GlobSet` that cannot match, and most paths in everyday calls are cold for
    the expensive (searched) half."""

    raw: str
    resolved: str
    location: Location
    access: Access
    wildcard: bool
    hot_anchored: bool = True
    hot_searched: bool = True


def resolve(raw: str, root: str, cwd: str | None = None) -> tuple[str, Location]:
    """``raw`` as an absolute normalised path (relative paths taken from ``cwd``, by default
    the workspace ``root``), and where it is relative to ``root``."""
    text = raw.strip()
    if text[:7].lower() == "file://":
        text = text[7:] or "/"
    if text == "~" or text.startswith("~/"):
        text = HOME + text[1:]
    elif text.startswith("~"):
        user, _, rest = text[1:].partition("/")
        text = f"/home/{user}/{rest}" if user != "root" else f"/root/{rest}"
    elif text.startswith("$"):
        found = _VAR.match(text)
        name = (found.group(1) or found.group(2)) if found else None
        if found and name in ("PWD", "OLDPWD"):
            text = (cwd or root) + text[found.end() :]
        elif found and name in _KNOWN_VARS:
            text = _KNOWN_VARS[name] + text[found.end() :]
        else:  # unknown variable: keep it as the first component, location unknown
            return "/" + posixpath.normpath(text).lstrip("/"), "unknown"
    if not text.startswith("/"):
        text = f"{cwd or root}/{text}"
    if "/." in text or "//" in text or text.endswith("/"):
        resolved = posixpath.normpath(text)
        if resolved.startswith("//"):
            resolved = "/" + resolved.lstrip("/")
    else:  # already normal (the common case): skip normpath's split and join
        resolved = text
    if resolved == root or resolved.startswith(root.rstrip("/") + "/"):
        return resolved, "workspace"
    return resolved, "outside"


@dataclass(slots=True)
class Frame:
    """Where relative paths start: the workspace ``root``, or the directory a ``cd`` earlier
    in the same command line moved to (``cd / && rm -rf home`` deletes ``/home``)."""

    root: str
    cwd: str

    def fact(self, raw: str, access: Access) -> PathFact:
        resolved, location = resolve(raw, self.root, self.cwd)
        return PathFact(raw, resolved, location, access, bool(WILDCARDS.search(raw)))

    def cd(self, target: str | None) -> None:
        if target == "-":
            return
        self.cwd = resolve(target, self.root, self.cwd)[0] if target else HOME


def _translate(glob: str) -> str:
    """Shell-style glob body to a regex body (``**`` crosses ``/``, ``*`` does not)."""
    out: list[str] = []
    i = 0
    while i < len(glob):
        ch = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if glob.startswith("/**", i) and i + 3 == len(glob):
            out.append("(?:/.*)?")
            i += 3
            continue
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = glob.find("]", i + 2)
            if end == -1:
                raise ValueError(f"unclosed '[' in glob {glob!r}")
            body = glob[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append(f"[{body.replace(chr(92), chr(92) * 2)}]")
            i = end
        elif ch == "{":
            end = glob.find("}", i)
            if end == -1:
                raise ValueError(f"unclosed '{{' in glob {glob!r}")
            options = glob[i + 1 : end].split(",")
            out.append("(?:" + "|".join(_translate(o) for o in options) + ")")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


def glob_regex(glob: str) -> tuple[bool, str]:
    """One glob as (anchored, regex). Anchored regexes are matched at the start of the resolved
    path; the others begin with a literal ``/`` and are *searched*, which lets ``re`` jump
    straight to each ``/`` instead of trying every character (see module doc for the dialect).
    """
    if not glob or glob.strip() != glob:
        raise ValueError(f"glob {glob!r} is empty or has surrounding spaces")
    if glob == "~" or glob.startswith("~/"):
        return True, _HOME_PREFIX + _translate(glob[1:]) + "$"
    if glob.startswith("/"):
        return True, _translate(glob) + "$"
    body = glob.removeprefix("./")
    while body.startswith("**/"):
        body = body[3:]
    return False, "/" + _translate(body) + "$"


class GlobSet:
    """Several globs, compiled into (at most) two regexes; ``match`` is one call per path."""

    def __init__(self, globs: list[str]) -> None:
        anchored: list[str] = []
        searched: list[str] = []
        for glob in globs:
            is_anchored, regex = glob_regex(glob)
            (anchored if is_anchored else searched).append(f"(?:{regex})")
        self._anchored = re.compile("|".join(anchored), re.I) if anchored else None
        self._searched = re.compile("|".join(searched), re.I) if searched else None

    def match(self, path: str) -> bool:
        if self._anchored is not None and self._anchored.match(path):
            return True
        return self._searched is not None and self._searched.search(path) is not None

    def match_fact(self, fact: PathFact) -> bool:
        """:meth:`match`, skipping the halves the fact is known to be cold for."""
        if fact.hot_anchored and self._anchored is not None and self._anchored.match(
            fact.resolved
        ):
            return True
        return (fact.hot_searched and self._searched is not None
                and self._searched.search(fact.resolved) is not None)  # fmt: skip

    def heat(self, fact: PathFact) -> None:
        """Used on the union of all globs: mark which halves can match ``fact`` at all."""
        fact.hot_anchored = self._anchored is not None and bool(self._anchored.match(fact.resolved))
        fact.hot_searched = self._searched is not None and bool(
            self._searched.search(fact.resolved)
        )


def compile_globs(globs: list[str]) -> GlobSet:
    return GlobSet(globs)
