"""Typed conditions over one item -- a path, a host, a command segment -- and the values they
are written with (strings, ``$list`` references, regexes, program names).

:class:`Conditions` is the half of the rule compiler (:class:`~.matchers.Compiler`) that turns
a ``path:``, ``host:`` or ``command:`` mapping into one plain function over an item. These run
once per item per candidate rule per call, so each is built to cost as little as possible at
call time: one closure per mapping, cheap and selective tests first, regexes behind a literal
prefilter (:mod:`.literals`), and no lookups by name.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from typing import Any

from quarterdeck.security.policy.combinators import SegPred, clip, every, first
from quarterdeck.security.policy.commands import Segment
from quarterdeck.security.policy.hosts import SCOPES, HostFact, HostList
from quarterdeck.security.policy.literals import finder
from quarterdeck.security.policy.paths import GlobSet, PathFact, compile_globs

_LIST_REF = re.compile(r"^\$([a-z][a-z0-9_]*)$")
_GLOBAL_FLAGS = re.compile(r"^\(\?([aiLmsux]+)\)")
PATH_KEYS = ("matches", "not_matches", "location", "access", "wildcard")
HOST_KEYS = ("in", "not_in", "tld_in", "scope", "ip", "allowlisted", "port_in")
CMD_KEYS = (
    "name",
    "not_name",
    "args_match",
    "not_args_match",
    "line_matches",
    "flags",
    "any_flag",
    "subcommand",
    "elevated",
    "stdin_script",
    "runs_downloaded",
    "uploads",
    "decoded",
    "executes",
    "fed_by",
    "path",
    "host",
    "not",
)


_CMD_COST = {
    "name": 0,
    "not_name": 0,
    "elevated": 0,
    "stdin_script": 0,
    "runs_downloaded": 0,
    "uploads": 0,
    "decoded": 0,
    "subcommand": 1,
    "flags": 1,
    "any_flag": 1,
    "args_match": 2,
    "not_args_match": 2,
    "line_matches": 3,
    "path": 3,
    "host": 3,
    "executes": 4,
    "fed_by": 4,
    "not": 4,
}
"""Relative cost of each command condition, to order a segment's tests."""

_FLAG_TESTS: dict[tuple[str, bool], SegPred] = {
    # one closure per boolean segment fact and value: no getattr() by name on the hot path
    ("elevated", True): lambda s: "" if s.elevated else None,
    ("elevated", False): lambda s: None if s.elevated else "",
    ("stdin_script", True): lambda s: "" if s.stdin_script else None,
    ("stdin_script", False): lambda s: None if s.stdin_script else "",
    ("runs_downloaded", True): lambda s: "" if s.runs_downloaded else None,
    ("runs_downloaded", False): lambda s: None if s.runs_downloaded else "",
    ("uploads", True): lambda s: "" if s.uploads else None,
    ("uploads", False): lambda s: None if s.uploads else "",
    ("decoded", True): lambda s: "" if s.decoded else None,
    ("decoded", False): lambda s: None if s.decoded else "",
}


class Invalid(Exception):
    """A condition is malformed; ``where`` names it (the rule compiler records and moves on)."""

    def __init__(self, where: str, why: str) -> None:
        super().__init__(why)
        self.where, self.why = where, why


class Conditions:
    """Values and item conditions of one rule set (``lists`` are its ``$name`` lists)."""

    def __init__(self, lists: dict[str, list[str]]) -> None:
        self.lists = lists
        self.hot_globs: list[str] = []
        """Every ``path.matches`` glob (the gate marks paths none of them can match)."""
        self.hot_hosts: list[str] = []
        """Every ``host.in`` entry (the gate marks calls whose hosts are on none of them)."""

    # -- values ---------------------------------------------------------------------------
    def strings(self, value: Any, where: str, depth: int = 0) -> list[str]:
        """A string, or a list of strings, with ``$name`` list references expanded."""
        items = value if isinstance(value, list) else [value]
        out: list[str] = []
        for item in items:
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                raise Invalid(where, f"expected a string or list of strings, got {item!r}")
            text = str(item)
            ref = _LIST_REF.match(text)
            if ref is None:
                out.append(text)
                continue
            if ref.group(1) not in self.lists:
                raise Invalid(where, f"unknown list ${ref.group(1)}")
            if depth > 8:
                raise Invalid(where, f"list ${ref.group(1)} references itself")
            out.extend(self.strings(self.lists[ref.group(1)], where, depth + 1))
        if not out:
            raise Invalid(where, "empty list")
        return out

    def regex(self, value: Any, where: str) -> re.Pattern[str]:
        patterns = self.strings(value, where)
        scoped = []
        for pattern in patterns:  # "(?i)x" -> "(?i:x)" so several can share one regex
            flags = _GLOBAL_FLAGS.match(pattern)
            scoped.append(
                f"(?{flags.group(1)}:{pattern[flags.end() :]})" if flags else f"(?:{pattern})"
            )
        try:
            return re.compile("|".join(scoped))
        except re.error as exc:
            raise Invalid(where, f"bad regular expression: {exc}") from None

    def names(self, value: Any, where: str) -> tuple[frozenset[str], re.Pattern[str] | None]:
        """Program names: exact, and globs (``python*``) joined into one regex (None if none)."""
        items = self.strings(value, where)
        exact = frozenset(i for i in items if not any(c in i for c in "*?["))
        globs = [i for i in items if i not in exact]
        if not globs:
            return exact, None
        return exact, re.compile("|".join(fnmatch.translate(g) for g in globs))

    @staticmethod
    def boolean(value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise Invalid(where, f"expected true or false, got {value!r}")
        return value

    @staticmethod
    def mapping(value: Any, where: str, keys: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict) or not value:
            raise Invalid(where, "expected a non-empty mapping of conditions")
        unknown = [k for k in value if k not in keys]
        if unknown:
            raise Invalid(where, f"unknown condition(s) {unknown}; expected one of {list(keys)}")
        return value

    # -- item conditions ------------------------------------------------------------------
    def path(self, node: Any, where: str) -> Callable[[PathFact], bool]:
        """One function per condition (not one per key): it runs once per path per rule, so
        call overhead is most of its cost. Cheap attribute tests go first."""
        node = self.mapping(node, where, PATH_KEYS)
        location = self._choice(node, "location", {"workspace", "outside", "unknown"}, where)
        access = self._choice(node, "access", {"read", "write", "list"}, where)
        wildcard = (
            self.boolean(node["wildcard"], f"{where}.wildcard") if "wildcard" in node else None
        )
        matches = self._globs(node, "matches", where)
        not_matches = self._globs(node, "not_matches", where)

        def test(p: PathFact) -> bool:
            if location is not None and p.location not in location:
                return False
            if access is not None and p.access not in access:
                return False
            if wildcard is not None and p.wildcard != wildcard:
                return False
            if matches is not None and not matches.match_fact(p):
                return False
            return not_matches is None or not not_matches.matches(p)

        return test

    def _choice(
        self,
        node: dict[str, Any],
        key: str,
        choices: set[str],
        where: str,
    ) -> frozenset[str] | None:
        if key not in node:
            return None
        allowed = frozenset(self.strings(node[key], f"{where}.{key}"))
        if not allowed <= choices:
            raise Invalid(f"{where}.{key}", f"expected some of {sorted(choices)}")
        return allowed

    def _globs(self, node: dict[str, Any], key: str, where: str) -> GlobSet | None:
        if key not in node:
            return None
        texts = self.strings(node[key], f"{where}.{key}")
        try:
            globs = compile_globs(texts)
        except (ValueError, re.error) as exc:
            raise Invalid(f"{where}.{key}", f"bad glob: {exc}") from None
        if key == "matches":
            self.hot_globs.extend(texts)
        return globs

    def host(self, node: Any, where: str) -> Callable[[HostFact], bool]:
        node = self.mapping(node, where, HOST_KEYS)
        tests = [self._host_test(k, v, f"{where}.{k}") for k, v in node.items()]
        if "allowlisted" not in node:  # allowlisted hosts are never egress findings
            tests.insert(0, lambda h: not h.allowlisted)
        return every(tests)

    def _host_test(self, key: str, value: Any, at: str) -> Callable[[HostFact], bool]:
        if key in ("in", "not_in"):
            entries = self.strings(value, at)
            hosts = HostList(entries)
            if key == "in":
                self.hot_hosts.extend(entries)
                return lambda h: h.host in hosts
            return lambda h: h.host not in hosts
        if key == "tld_in":
            tlds = frozenset(t.lower().lstrip(".") for t in self.strings(value, at))
            return lambda h: h.tld in tlds
        if key == "scope":
            scopes = frozenset(self.strings(value, at))
            if not scopes <= set(SCOPES):
                raise Invalid(at, f"expected some of {list(SCOPES)}")
            return lambda h: h.scope in scopes
        if key == "port_in":
            texts = self.strings(value, at)
            if not all(p.isdigit() for p in texts):
                raise Invalid(at, "ports are numbers")
            ports = frozenset(int(p) for p in texts)
            return lambda h: h.port in ports
        flag = self.boolean(value, at)
        if key == "ip":
            return lambda h: h.is_ip == flag
        return lambda h: h.allowlisted == flag

    def command(self, node: Any, where: str) -> SegPred:
        node = self.mapping(node, where, CMD_KEYS)
        built = [(key, self._cmd_test(key, value, f"{where}.{key}")) for key, value in node.items()]
        # all tests must pass and none has side effects, so the cheap, selective ones go first
        built.sort(key=lambda item: _CMD_COST.get(item[0], 9))
        tests: list[SegPred] = [test for _, test in built]
        if len(tests) == 1:
            only = tests[0]
            return lambda segment: None if only(segment) is None else clip(segment.line)
        if len(tests) == 2:
            one, two = tests
            return lambda segment: (
                None if one(segment) is None or two(segment) is None else clip(segment.line)
            )

        def test(segment: Segment) -> str | None:
            for t in tests:
                if t(segment) is None:
                    return None
            return clip(segment.line)

        return test

    def _cmd_test(self, key: str, value: Any, at: str) -> SegPred:
        if key in ("name", "not_name"):
            exact, joined = self.names(value, at)
            if joined is None:
                if key == "name":
                    return lambda s: "" if s.name in exact else None
                return lambda s: None if s.name in exact else ""
            wanted = key == "name"
            return lambda s: (
                "" if (s.name in exact or joined.match(s.name) is not None) == wanted else None
            )
        if key in ("args_match", "not_args_match", "line_matches"):
            find = finder(self.regex(value, at))  # skips text without the regex's literals
            if key == "line_matches":
                return lambda s: "" if find(s.line) else None
            if key == "args_match":
                return lambda s: "" if find(s.text) is not None else None
            return lambda s: "" if find(s.text) is None else None
        if key in ("flags", "any_flag"):
            flags = frozenset(self.strings(value, at))
            if key == "flags":
                return lambda s: "" if flags <= s.flags else None
            return lambda s: "" if not flags.isdisjoint(s.flags) else None
        if key == "subcommand":
            subs = frozenset(self.strings(value, at))
            return lambda s: "" if s.subcommand in subs else None
        if key in ("elevated", "stdin_script", "runs_downloaded", "uploads", "decoded"):
            flag = self.boolean(value, at)
            return _FLAG_TESTS[key, flag]
        if key in ("executes", "fed_by"):
            inner = self.command(value, at)
            attr = "code_sources" if key == "executes" else "upstream"
            return lambda s: "" if any(inner(x) is not None for x in getattr(s, attr)) else None
        if key == "path":
            test_path = self.path(value, at)
            return lambda s: first(s.paths, test_path, lambda p: p.raw)
        if key == "host":
            test_host = self.host(value, at)
            return lambda s: first(s.hosts, test_host, lambda h: h.host)
        negated = self.command(value, at)
        return lambda s: "" if negated(s) is None else None
