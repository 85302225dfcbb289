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
from dataclasses import dataclass, field
from typing import Literal

from quarterdeck.security.policy.globs import Route, Routed, route_of

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
    _route: Route | bool | None = field(default=False, repr=False, compare=False)

    @property
    def route(self) -> Route | None:
        """How glob sets route ``resolved`` (:func:`~.globs.route_of`), computed once."""
        route = self._route
        if isinstance(route, bool):  # not computed yet
            route = self._route = route_of(self.resolved)
        return route


def resolve(raw: str, root: str, cwd: str | None = None) -> tuple[str, Location]:
    """``raw`` as an absolute normalised path (relative paths taken from ``cwd``, by default
    the workspace ``root``), and where it is relative to ``root``."""
    text = raw.strip()
    head = text[:1]
    if head in "fF" and text[:7].lower() == "file://":
        text = text[7:] or "/"
        head = text[:1]
    if head == "/":  # the common cases first: absolute, or plain relative
        pass
    elif head != "~" and head != "$":  # ("" too: an empty path is the directory itself)
        text = f"{cwd or root}/{text}"
    elif text == "~" or text.startswith("~/"):
        text = HOME + text[1:]
    elif head == "~":
        user, _, rest = text[1:].partition("/")
        text = f"/home/{user}/{rest}" if user != "root" else f"/root/{rest}"
    else:  # "$"
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
        wildcard = "*" in raw or "?" in raw or "[" in raw  # WILDCARDS, without a regex call
        return PathFact(raw, resolved, location, access, wildcard)

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
    """Several globs, compiled once and routed by path component (:mod:`.globs`)."""

    def __init__(self, globs: list[str]) -> None:
        self._globs = Routed([(glob, *glob_regex(glob)) for glob in globs])
        self._anchored = self._globs.anchored_all is not None  # has anchored globs at all
        self._searched = self._globs.searched_all is not None

    def match(self, path: str) -> bool:
        route = route_of(path)
        return self._globs.anchored(path, route) or self._globs.searched(path, route)

    def matches(self, fact: PathFact) -> bool:
        """:meth:`match` on the fact's resolved path (its route computed once per fact)."""
        route = fact.route
        return self._globs.anchored(fact.resolved, route) or self._globs.searched(
            fact.resolved, route
        )

    def match_fact(self, fact: PathFact) -> bool:
        """:meth:`matches`, skipping the halves the fact is known to be cold for (or that
        this set does not have): the usual answer costs no further call."""
        anchored = fact.hot_anchored and self._anchored
        searched = fact.hot_searched and self._searched
        if not (anchored or searched):
            return False
        route = fact.route
        if anchored and self._globs.anchored(fact.resolved, route):
            return True
        return searched and self._globs.searched(fact.resolved, route)

    def heat(self, fact: PathFact) -> None:
        """Used on the union of all globs: mark which halves can match ``fact`` at all."""
        route = fact.route
        fact.hot_anchored = self._globs.anchored(fact.resolved, route)
        fact.hot_searched = self._globs.searched(fact.resolved, route)


def compile_globs(globs: list[str]) -> GlobSet:
    return GlobSet(globs)
