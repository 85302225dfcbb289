"""Compiling ``match`` mappings into plain Python predicates, once, at load time.

The match language is deliberately small: a mapping whose conditions must all hold, ``any`` /
``all`` / ``not`` for logic, ``macro`` for reuse, and typed conditions over the normalised facts
(paths, command segments, hosts, input fields, embedded secrets). There is no expression
evaluation: each condition is a fixed Python function configured by data, so a rules file
cannot execute code, and every regex and glob is compiled here rather than per call.

A predicate returns ``None`` when it does not match, or the *evidence* (the path, host or
command segment that matched, possibly ``""``) when it does; the evidence ends up in the
decision's ``reason`` so an operator sees what tripped the rule.

A compiler made ``for_tool`` a tool compiles predicates for calls to that tool only: ``tool:``
conditions are settled then and there (:data:`HOLDS` / :data:`NEVER`) and folded away, so a
rule such as "``read_file`` of a key, or any command reading one" costs only its command half
on ``run_command``. The gate keeps one index of such predicates per tool.
"""

from __future__ import annotations

from typing import Any

from quarterdeck.security.policy.combinators import (
    Pred,
    all_of,
    any_of,
    clip,
    first_ev,
    upstream_chain,
)
from quarterdeck.security.policy.conditions import Conditions, Invalid
from quarterdeck.security.policy.facts import KNOWN_TOOLS, Facts
from quarterdeck.security.policy.literals import finder

__all__ = ["Compiler", "Invalid"]

_TOP_KEYS = (
    "tool",
    "egress_mode",
    "truncated",
    "macro",
    "path",
    "host",
    "input_matches",
    "command",
    "pipeline",
    "sequence",
    "secret",
    "any",
    "all",
    "not",
)


def HOLDS(facts: Facts) -> str | None:
    """A condition settled as true when compiling (no evidence of its own)."""
    return ""


def NEVER(facts: Facts) -> str | None:
    """A condition settled as false when compiling."""
    return None


def _all(preds: list[Pred]) -> Pred:
    if NEVER in preds:
        return NEVER
    kept = [p for p in preds if p is not HOLDS]  # "" adds no evidence to a conjunction
    return all_of(kept) if kept else HOLDS


def _any(preds: list[Pred]) -> Pred:
    kept: list[Pred] = []
    for pred in preds:
        if pred is NEVER:
            continue  # never the first branch to match
        kept.append(pred)
        if pred is HOLDS:
            break  # always matches: the branches after it are never reached
    if not kept:
        return NEVER
    return kept[0] if len(kept) == 1 else any_of(kept)


class Compiler(Conditions):
    """Compiles the match mappings of one rule set; lists and macros are shared by all rules.
    The conditions over paths, hosts and segments come from :class:`~.conditions.Conditions`.
    ``tool``: compile for calls to that tool only (see the module docstring)."""

    def __init__(
        self,
        lists: dict[str, list[str]],
        macros: dict[str, tuple[Any, str]],
        tool: str | None = None,
    ) -> None:
        super().__init__(lists)
        self.macros = macros
        self.tool = tool
        self._macro_preds: dict[str, Pred] = {}
        self._compiling: list[str] = []

    def for_tool(self, tool: str) -> Compiler:
        return Compiler(self.lists, self.macros, tool)

    # -- top level ------------------------------------------------------------------------
    def match(self, node: Any, where: str) -> Pred:
        node = self.mapping(node, where, _TOP_KEYS)
        parts = [self._top(key, node[key], f"{where}.{key}") for key in _TOP_KEYS if key in node]
        return _all(parts)

    def _top(self, key: str, value: Any, where: str) -> Pred:
        if key == "tool":
            tools = frozenset(self.strings(value, where))
            unknown = sorted(tools - set(KNOWN_TOOLS))
            if unknown:
                raise Invalid(where, f"unknown tool(s) {unknown}; tools are {list(KNOWN_TOOLS)}")
            if self.tool is not None:
                return HOLDS if self.tool in tools else NEVER
            return lambda f: "" if f.tool in tools else None
        if key == "egress_mode":
            if value not in ("blocklist", "allowlist"):
                raise Invalid(where, "must be blocklist or allowlist")
            return lambda f: "" if f.egress_mode == value else None
        if key == "truncated":
            flag = self.boolean(value, where)
            return lambda f: "" if f.truncated == flag else None
        if key == "macro":
            return _all([self._macro(name, where) for name in self.strings(value, where)])
        if key in ("any", "all"):
            if not isinstance(value, list) or not value:
                raise Invalid(where, f"{key} takes a non-empty list of matches")
            preds = [self.match(v, f"{where}[{i}]") for i, v in enumerate(value)]
            return _any(preds) if key == "any" else _all(preds)
        if key == "not":
            inner = self.match(value, where)
            if inner is HOLDS or inner is NEVER:
                return NEVER if inner is HOLDS else HOLDS
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

            def any_host(f: Facts) -> str | None:
                for h in f.hosts:
                    if test_host(h):
                        return clip(h.host)
                return None

            return any_host
        if key == "command":
            seg = self.command(value, where)

            def any_segment(f: Facts) -> str | None:
                for segment in f.segments:
                    found = seg(segment)
                    if found is not None:
                        return found
                return None

            return any_segment
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
        fields = [(str(k), finder(self.regex(v, f"{where}.{k}"))) for k, v in value.items()]

        def test(f: Facts) -> str | None:
            for name, pattern in fields:
                text = f.text(name)
                found = pattern(text) if text is not None else None
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
