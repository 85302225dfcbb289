"""Glob regexes routed by a literal path component, so a path only meets the globs it can match.

As two big alternations (``/etc/**|/usr/**|...`` matched at the start, ``/\\.ssh/id_[^/]*$|...``
searched at every ``/``), a :class:`~.paths.GlobSet` makes ``re`` try every alternative at every
position, and the gate asks each path about a dozen glob sets per call. Most globs name a
literal component the path must then contain, so they are bucketed by it:

* anchored globs (``/etc/**``, ``/proc/*/environ``) by their first component, which must be the
  path's first component; globs anchored at a home (``~/.bashrc``) by ``~``, tried only when the
  path starts with ``/~``, ``/root``, ``/home`` or ``/Users``;
* searched globs with a literal component (``**/.aws/credentials``, ``.netrc``) by that
  component, tried only when the path has it;
* searched globs of one component with wildcards (``*.pem``, ``.env.*``) can only match the
  last component: ``*`` and a literal is a suffix test, a literal and ``*`` a prefix test
  (one ``str.endswith`` / ``startswith`` call for all of them), others a regex tried once,
  at the last ``/``;
* anything else (braces, character classes, no literal) is tried as before.

Each bucket is still the original regexes, so the answer is the same; the routing only skips
regexes that cannot match. It relies on comparing lower-cased components, which agrees with
``re.IGNORECASE`` for ASCII text only, and on ``$`` matching at the end: paths with non-ASCII
characters or a newline (``$`` also matches before a final newline) take the unrouted path.
"""

from __future__ import annotations

import re

Route = tuple[str | None, frozenset[str], int, str]
"""A path's first component (None if it is not absolute), all its components (lower case), the
index of its last ``/``, and its last component (lower case)."""

HOME_FIRST = frozenset({"~", "root", "home", "users"})
_META = frozenset("*?[{")


def route_of(path: str) -> Route | None:
    """The routing facts of ``path``, or None when it must take the unrouted way."""
    if not path.isascii() or "\n" in path:
        return None
    parts = path.lower().split("/")
    first = parts[1] if len(parts) > 1 and not parts[0] else None
    return first, frozenset(parts), path.rfind("/"), parts[-1]


def _literal(component: str) -> bool:
    return bool(component) and component.isascii() and _META.isdisjoint(component)


def _join(regexes: list[str]) -> re.Pattern[str] | None:
    return re.compile("|".join(regexes), re.I) if regexes else None


class Routed:
    """The anchored and the searched globs of a set, each as one regex (``anchored_all``,
    ``searched_all``, the unrouted form) and as routed buckets. ``globs`` holds
    ``(glob, anchored, regex)`` as :func:`~.paths.glob_regex` gives them."""

    def __init__(self, globs: list[tuple[str, bool, str]]) -> None:
        first: dict[str, list[str]] = {}
        home: list[str] = []
        anchored_rest: list[str] = []
        by_part: dict[str, list[str]] = {}
        suffixes: list[str] = []
        prefixes: list[str] = []
        affixes: list[str] = []  # the regexes of those two kinds, for the unrouted form
        last: list[str] = []
        searched_rest: list[str] = []
        for glob, anchored, regex in globs:
            regex = f"(?:{regex})"
            if anchored:
                if glob == "~" or glob.startswith("~/"):
                    home.append(regex)
                    continue
                head = glob[1:].split("/", 1)[0]
                (first.setdefault(head.lower(), []) if _literal(head) else anchored_rest).append(
                    regex
                )
                continue
            body = glob.removeprefix("./")
            while body.startswith("**/"):
                body = body[3:]
            literals = (
                [] if "{" in body or "[" in body else [p for p in body.split("/") if _literal(p)]
            )
            if literals:
                by_part.setdefault(literals[-1].lower(), []).append(regex)
            elif "/" not in body and "**" not in body and "{" not in body and "[" not in body:
                # one component, [^/] wildcards only: it is the last component of the path
                if body[:1] == "*" and _literal(body[1:]):
                    suffixes.append(body[1:].lower())
                    affixes.append(regex)
                elif body[-1:] == "*" and _literal(body[:-1]):
                    prefixes.append(body[:-1].lower())
                    affixes.append(regex)
                else:
                    last.append(regex)
            else:
                searched_rest.append(regex)
        anchored_all = [r for rs in first.values() for r in rs] + home + anchored_rest
        searched_all = [r for rs in by_part.values() for r in rs] + affixes + last + searched_rest
        self.anchored_all = _join(anchored_all)
        self.searched_all = _join(searched_all)
        self._first = {k: p for k, v in first.items() if (p := _join(v)) is not None}
        self._home = _join(home)
        self._anchored_rest = _join(anchored_rest)
        self._by_part = {k: p for k, v in by_part.items() if (p := _join(v)) is not None}
        self._parts = frozenset(self._by_part)
        self._suffixes = tuple(suffixes)
        self._prefixes = tuple(prefixes)
        self._last = _join(last)
        self._searched_rest = _join(searched_rest)

    def anchored(self, path: str, route: Route | None) -> bool:
        """Some anchored glob matches ``path`` (``anchored_all.match``)."""
        if self.anchored_all is None:
            return False
        if route is None:
            return self.anchored_all.match(path) is not None
        head = route[0]
        if head is not None:
            found = self._first.get(head)
            if found is not None and found.match(path):
                return True
            if self._home is not None and head in HOME_FIRST and self._home.match(path):
                return True
        return self._anchored_rest is not None and self._anchored_rest.match(path) is not None

    def searched(self, path: str, route: Route | None) -> bool:
        """Some searched glob matches ``path`` (``searched_all.search``)."""
        if self.searched_all is None:
            return False
        if route is None:
            return self.searched_all.search(path) is not None
        if self._parts and not self._parts.isdisjoint(route[1]):
            for part in self._parts.intersection(route[1]):
                if self._by_part[part].search(path):
                    return True
        if route[2] >= 0:
            name = route[3]
            if self._suffixes and name.endswith(self._suffixes):
                return True
            if self._prefixes and name.startswith(self._prefixes):
                return True
            if self._last is not None and self._last.match(path, route[2]):
                return True
        return self._searched_rest is not None and self._searched_rest.search(path) is not None
