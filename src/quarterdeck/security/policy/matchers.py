"""Compiling ``match`` mappings into plain Python predicates, once, at load time.

The match language is deliberately small: a mapping whose conditions must all hold, ``any`` /
``all`` / ``not`` for logic, ``macro`` for reuse, and typed conditions over the normalised facts
(paths, command segments, hosts, input fields, embedded secrets). There is no expression
evaluation: each condition is a fixed Python function configured by data, so a rules file
cannot execute code, and every regex and glob is compiled here rather than per call.

A predicate returns ``None`` when it does not match, or the *evidence* (the path, host or
command segment that matched, possibly ``""``) when it does; the evidence ends up in the
decision's ``reason`` so an operator sees what tripped the rule.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from typing import Any

from quarterdeck.security.policy.combinators import (
    Pred,
    SegPred,
    all_of,
    any_of,
    clip,
    every,
    first,
    first_ev,
    upstream_chain,
)
from quarterdeck.security.policy.commands import Segment
from quarterdeck.security.policy.facts import KNOWN_TOOLS, Facts
from quarterdeck.security.policy.hosts import SCOPES, HostFact, HostList
from quarterdeck.security.policy.paths import GlobSet, PathFact, compile_globs

_LIST_REF = re.compile(r"^\$([a-z][a-z0-9_]*)$")
_GLOBAL_FLAGS = re.compile(r"^\(\?([aiLmsux]+)\)")
_TOP_KEYS = ("tool", "egress_mode", "truncated", "macro", "path", "host", "input_matches",
             "command", "pipeline", "sequence", "secret", "any", "all", "not")  # fmt: skip
PATH_KEYS = ("matches", "not_matches", "location", "access", "wildcard")
HOST_KEYS = ("in", "not_in", "tld_in", "scope", "ip", "allowlisted", "port_in")
CMD_KEYS = ("name", "not_name", "args_match", "not_args_match", "line_matches", "flags",
            "any_flag", "subcommand", "elevated", "stdin_script", "runs_downloaded", "uploads",
            "decoded", "executes", "fed_by", "path", "host", "not")  # fmt: skip


class Invalid(Exception):
    """A condition is malformed; ``where`` names it (the rule compiler records and moves on)."""

    def __init__(self, where: str, why: str) -> None:
        super().__init__(why)
        self.where, self.why = where, why


class Compiler:
    """Compiles the match mappings of one rule set; lists and macros are shared by all rules."""

    def __init__(self, lists: dict[str, list[str]], macros: dict[str, tuple[Any, str]]) -> None:
        self.lists = lists
        self.macros = macros
        self._macro_preds: dict[str, Pred] = {}
        self._compiling: list[str] = []
        self.hot_globs: list[str] = []

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
            scoped.append(f"(?{flags.group(1)}:{pattern[flags.end():]})" if flags else f"(?:{pattern})")
        try:
            return re.compile("|".join(scoped))
        except re.error as exc:
            raise Invalid(where, f"bad regular expression: {exc}") from None

    def names(self, value: Any, where: str) -> Callable[[str], bool]:
        """Program names: exact, or globs (``python*``)."""
        items = self.strings(value, where)
        exact = frozenset(i for i in items if not any(c in i for c in "*?["))
        globs = [i for i in items if i not in exact]
        if not globs:
            return exact.__contains__
        joined = re.compile("|".join(fnmatch.translate(g) for g in globs))
        return lambda name: name in exact or joined.match(name) is not None

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

    # -- top level ------------------------------------------------------------------------
    def match(self, node: Any, where: str) -> Pred:
        node = self.mapping(node, where, _TOP_KEYS)
        parts = [self._top(key, node[key], f"{where}.{key}") for key in _TOP_KEYS if key in node]
        return all_of(parts)

    def _top(self, key: str, value: Any, where: str) -> Pred:
        if key == "tool":
            tools = frozenset(self.strings(value, where))
            unknown = sorted(tools - set(KNOWN_TOOLS))
            if unknown:
                raise Invalid(where, f"unknown tool(s) {unknown}; tools are {list(KNOWN_TOOLS)}")
            return lambda f: "" if f.tool in tools else None
        if key == "egress_mode":
            if value not in ("blocklist", "allowlist"):
                raise Invalid(where, "must be blocklist or allowlist")
            return lambda f: "" if f.egress_mode == value else None
        if key == "truncated":
            flag = self.boolean(value, where)
            return lambda f: "" if f.truncated == flag else None
        if key == "macro":
            return all_of([self._macro(name, where) for name in self.strings(value, where)])
        if key in ("any", "all"):
            if not isinstance(value, list) or not value:
                raise Invalid(where, f"{key} takes a non-empty list of matches")
            preds = [self.match(v, f"{where}[{i}]") for i, v in enumerate(value)]
            return any_of(preds) if key == "any" else all_of(preds)
        if key == "not":
            inner = self.match(value, where)
            return lambda f: "" if inner(f) is None else None
        if key == "path":
            test_path = self.path(value, where)

            def any_path(f: Facts) -> str | None:
                for p in f.paths:
                    if test_path(p):
                        return clip(p.raw)
                return None

            return any_path
        if key == "host":
            test_host = self.host(value, where)
            return lambda f: first(f.hosts, test_host, lambda h: h.host)
        if key == "command":
            seg = self.command(value, where)
            return lambda f: first_ev(f.segments, seg)
        if key in ("pipeline", "sequence"):
            return self._chain(key, value, where)
        if key == "input_matches":
            return self._input_matches(value, where)
        return self._secret(value, where)

    def _macro(self, name: str, where: str) -> Pred:
        if name not in self.macros:
            raise Invalid(where, f"unknown macro {name!r}")
        if name in self._macro_preds:
            return self._macro_preds[name]
        if name in self._compiling:
            raise Invalid(where, f"macro {name!r} refers to itself")
        self._compiling.append(name)
        try:
            body, source = self.macros[name]
            pred = self.match(body, source)
        finally:
            self._compiling.pop()
        self._macro_preds[name] = pred
        return pred

    def _chain(self, key: str, value: Any, where: str) -> Pred:
        if not isinstance(value, list) or len(value) < 2:
            raise Invalid(where, f"{key} takes a list of at least two command conditions")
        steps = [self.command(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if key == "pipeline":
            return lambda f: first_ev(f.segments, lambda s: upstream_chain(s, steps))

        def sequence(f: Facts) -> str | None:
            at, evidence = 0, []
            for segment in f.segments:
                found = steps[at](segment)
                if found is not None:
                    evidence.append(found)
                    at += 1
                    if at == len(steps):
                        return " ... ".join(evidence)
            return None

        return sequence

    def _input_matches(self, value: Any, where: str) -> Pred:
        if not isinstance(value, dict) or not value:
            raise Invalid(where, "expected a mapping of input field -> regex")
        fields = [(str(k), self.regex(v, f"{where}.{k}")) for k, v in value.items()]

        def test(f: Facts) -> str | None:
            for name, pattern in fields:
                text = f.text(name)
                found = pattern.search(text) if text is not None else None
                if found:
                    return clip(f"{name}: {found.group(0)}")
            return None

        return test

    def _secret(self, value: Any, where: str) -> Pred:
        if value is True:
            types: frozenset[str] | None = None
        elif isinstance(value, dict) and set(value) == {"types"}:
            types = frozenset(self.strings(value["types"], f"{where}.types"))
        else:
            raise Invalid(where, "expected true or {types: [...]}")

        def test(f: Facts) -> str | None:
            for name, finding in f.secrets:
                if types is None or finding.type in types:
                    return f"{finding.type} in {name}"
            return None

        return test

    # -- item conditions ------------------------------------------------------------------
    def path(self, node: Any, where: str) -> Callable[[PathFact], bool]:
        """One function per condition (not one per key): it runs once per path per rule, so
        call overhead is most of its cost. Cheap attribute tests go first."""
        node = self.mapping(node, where, PATH_KEYS)
        location = self._choice(node, "location", {"workspace", "outside", "unknown"}, where)
        access = self._choice(node, "access", {"read", "write", "list"}, where)
        wildcard = self.boolean(node["wildcard"], f"{where}.wildcard") if "wildcard" in node else None
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
            return not_matches is None or not not_matches.match(p.resolved)

        return test

    def _choice(self, node: dict[str, Any], key: str, choices: set[str], where: str,
                ) -> frozenset[str] | None:  # fmt: skip
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
            hosts = HostList(self.strings(value, at))
            if key == "in":
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
        tests: list[SegPred] = []
        for key, value in node.items():
            tests.append(self._cmd_test(key, value, f"{where}.{key}"))

        def test(segment: Segment) -> str | None:
            for t in tests:
                if t(segment) is None:
                    return None
            return clip(segment.line)

        return test

    def _cmd_test(self, key: str, value: Any, at: str) -> SegPred:
        if key in ("name", "not_name"):
            is_name = self.names(value, at)
            wanted = key == "name"
            return lambda s: "" if is_name(s.name) == wanted else None
        if key in ("args_match", "not_args_match", "line_matches"):
            pattern = self.regex(value, at)
            if key == "line_matches":
                return lambda s: "" if pattern.search(s.line) else None
            wanted = key == "args_match"
            return lambda s: "" if (pattern.search(s.text) is not None) == wanted else None
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
            return lambda s: "" if getattr(s, key) == flag else None
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
