"""Cheap necessary conditions, so ``check`` only evaluates rules that can match.

Most rules are about particular programs (``rm``, ``chmod``, ``nc``...) and most calls run
none of them, yet evaluating a rule's full predicate over every segment costs a chain of
Python calls. From each ``match`` mapping we derive, at load time, a *necessary* condition
over a tiny :class:`Summary` of the call (which program names occur, whether there are paths
or hosts at all), in the spirit of Falco indexing rules by event type. It may say "maybe" when
the rule cannot match, never "no" when it can: ``any`` is the union of its branches; ``not``,
``secret`` and ``input_matches`` are "always maybe".

A condition is kept in disjunctive normal form -- a list of :class:`Clause`, any of which may
hold -- so that rules whose only requirement is "one of these programs runs" can be indexed by
program name (:class:`RuleIndex`) and never even looked at otherwise.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from quarterdeck.security.policy.facts import Facts

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Summary:
    names: frozenset[str]
    has_paths: bool
    has_hosts: bool

    @classmethod
    def of(cls, facts: Facts) -> Summary:
        return cls(frozenset(s.name for s in facts.segments), bool(facts.paths),
                   bool(facts.hosts))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Clause:
    """All of: for each entry of ``names``, some program name is in it (or matches its glob
    regex); paths exist if ``paths``; hosts exist if ``hosts``."""

    names: tuple[tuple[frozenset[str], re.Pattern[str] | None], ...] = ()
    paths: bool = False
    hosts: bool = False

    def holds(self, s: Summary) -> bool:
        if (self.paths and not s.has_paths) or (self.hosts and not s.has_hosts):
            return False
        for exact, pattern in self.names:
            if exact.isdisjoint(s.names) and not (
                pattern is not None and any(pattern.match(n) for n in s.names)
            ):
                return False
        return True

    def __and__(self, other: Clause) -> Clause:
        return Clause(self.names + other.names, self.paths or other.paths,
                      self.hosts or other.hosts)  # fmt: skip


Need = list[Clause]  # any clause may hold; [] is "never", [Clause()] is "always maybe"
ALWAYS: Need = [Clause()]


def _and(needs: Iterable[Need]) -> Need:
    out = ALWAYS
    for need in needs:
        out = [a & b for a in out for b in need][:32]  # bounded: a wider OR is still sound
    return out if len(out) < 32 else ALWAYS


class Prefilter:
    """Derives the :data:`Need` of a match. ``strings`` expands ``$list`` references and
    ``macros`` resolves ``macro:`` (both shared with the :class:`~.matchers.Compiler`, which
    has already validated everything)."""

    def __init__(self, strings: Callable[[Any, str], list[str]],
                 macros: dict[str, tuple[Any, str]]) -> None:  # fmt: skip
        self.strings = strings
        self.macros = macros

    def of_match(self, node: Any, depth: int = 0) -> Need:
        if not isinstance(node, dict) or depth > 16:
            return ALWAYS
        return _and(self._top(k, v, depth) for k, v in node.items())

    def _top(self, key: str, value: Any, depth: int) -> Need:
        if key == "command":
            return self._command(value)
        if key in ("pipeline", "sequence") and isinstance(value, list):
            return _and(self._command(v) for v in value)
        if key == "path":
            return [Clause(paths=True)]
        if key == "host":
            return [Clause(hosts=True)]
        if key == "all" and isinstance(value, list):
            return _and(self.of_match(v, depth + 1) for v in value)
        if key == "any" and isinstance(value, list):
            union = [c for v in value for c in self.of_match(v, depth + 1)]
            return union if len(union) < 32 else ALWAYS
        if key == "macro":
            names = value if isinstance(value, list) else [value]
            return _and(self.of_match(self.macros[n][0], depth + 1) for n in names
                        if n in self.macros)  # fmt: skip
        return ALWAYS

    def _command(self, node: Any) -> Need:
        if not isinstance(node, dict):
            return ALWAYS
        needs: list[Need] = []
        if "name" in node:
            names = self.strings(node["name"], "name")
            exact = frozenset(n for n in names if not any(c in n for c in "*?["))
            globs = [n for n in names if n not in exact]
            pattern = re.compile("|".join(fnmatch.translate(g) for g in globs)) if globs else None
            needs.append([Clause(names=((exact, pattern),))])
        for key in ("executes", "fed_by"):
            if key in node:
                needs.append(self._command(node[key]))
        if "path" in node:
            needs.append([Clause(paths=True)])
        if "host" in node:
            needs.append([Clause(hosts=True)])
        return _and(needs)


class RuleIndex(Generic[R]):
    """Rules bucketed by what can trigger them: by program name when that is their only need,
    by "has paths" / "has hosts" / always when they need no program; the rest keep their
    :data:`Need` and are tested clause by clause."""

    def __init__(self, rules: list[tuple[R, Need]]) -> None:
        self.by_name: dict[str, list[R]] = {}
        self.always: list[R] = []
        self.with_paths: list[R] = []
        self.with_hosts: list[R] = []
        self.other: list[tuple[R, Need]] = []
        for rule, need in rules:
            if need and all(c.names and c.names[0][1] is None for c in need):
                # sound: whichever clause holds, its first program-name set meets the call's
                for name in {n for clause in need for n in clause.names[0][0]}:
                    self.by_name.setdefault(name, []).append(rule)
            elif any(clause.names for clause in need):
                self.other.append((rule, need))
            elif need and all(clause.paths for clause in need):
                self.with_paths.append(rule)
            elif need and all(clause.hosts for clause in need):
                self.with_hosts.append(rule)
            else:
                self.always.append(rule)

    def candidates(self, summary: Summary) -> list[R]:
        """Rules that may match; each appears once."""
        found = list(self.always)
        if summary.has_paths:
            found.extend(self.with_paths)
        if summary.has_hosts:
            found.extend(self.with_hosts)
        seen: set[int] = set()
        for name in summary.names:
            for rule in self.by_name.get(name, ()):
                if id(rule) not in seen:
                    seen.add(id(rule))
                    found.append(rule)
        for rule, need in self.other:
            for clause in need:
                if clause.holds(summary):
                    found.append(rule)
                    break
        return found
