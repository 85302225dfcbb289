"""Literals a regex cannot match without, so costly rule regexes skip text that lacks them.

Several rules search each command segment with long alternations and lookaheads (code that
fetches *and* executes, sockets *and* shells); ``re`` tries them at every position of every
segment of every call, and finds nothing almost always. :func:`finder` wraps such a regex in a
test for its *required literals*: a set of strings one of which occurs in any text the regex
can match -- in fact several such sets, all of which must be met (code that *fetches* and
*executes*), derived once from the regex's parse tree. A text that misses one of them cannot
match, so the regex is not run; otherwise it is, so the answer is always the regex's own.

The derivation is conservative: a sequence needs everything its parts need (runs of literal
characters, groups, branches, repeats of at least one, positive lookarounds); a branch needs,
for each way of picking one requirement from each alternative, one literal of their union;
anything else (classes, ``.``, optional parts, negative lookarounds, backreferences) needs
nothing. Fewer requirements are always safe, so the larger sets are dropped first.
Literals and text are compared lower-cased, which holds for case-insensitive regexes too as
long as both are ASCII (``re.IGNORECASE`` also folds a few non-ASCII letters onto ASCII ones),
so non-ASCII literals are never required and non-ASCII text always goes to the regex.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

# The parser behind ``re`` and its opcodes (private modules, unchanged in form since 3.11; the
# public aliases sre_parse / sre_constants are deprecated).
sre_parse: Any = importlib.import_module("re._parser")
sre: Any = importlib.import_module("re._constants")

Find = Callable[[str], "re.Match[str] | None"]
Clause = frozenset[str]  # one of these literals must occur
_REPEATS = (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT)
_MAX_CLAUSES = 4


def required(pattern: re.Pattern[str]) -> frozenset[Clause]:
    """Sets of lower-case ASCII strings such that every text ``pattern`` matches in holds one
    string of each set (no sets: nothing is known)."""
    try:
        tree = sre_parse.parse(pattern.pattern, pattern.flags)
    except Exception:  # the regex compiled, so this is not expected; stay unfiltered
        return frozenset()
    return _sequence(list(tree))


def _strongest(clauses: set[Clause]) -> frozenset[Clause]:
    """At most :data:`_MAX_CLAUSES`: the most selective (longest shortest literal, fewest)."""
    ranked = sorted(clauses, key=lambda c: (-min(len(n) for n in c), len(c), sorted(c)))
    return frozenset(ranked[:_MAX_CLAUSES])


def _sequence(items: list[tuple[Any, Any]]) -> frozenset[Clause]:
    clauses: set[Clause] = set()
    run: list[str] = []
    for op, av in items:
        if op is sre.LITERAL:
            run.append(chr(av))
            continue
        if op is sre.AT:  # zero-width: literals on both sides are still adjacent in the text
            continue
        clauses |= _run(run)
        run = []
        clauses |= _node(op, av)
    clauses |= _run(run)
    return _strongest(clauses)


def _run(chars: list[str]) -> frozenset[Clause]:
    text = "".join(chars)
    return frozenset({frozenset({text.lower()})}) if text and text.isascii() else frozenset()


def _node(op: Any, av: Any) -> frozenset[Clause]:
    if op is sre.BRANCH:
        combined: set[Clause] | None = None
        for branch in av[1]:
            needed = _sequence(list(branch))
            if not needed:
                return frozenset()  # this alternative needs nothing, so neither does the branch
            combined = (
                set(needed) if combined is None else {a | b for a in combined for b in needed}
            )
            combined = set(_strongest(combined))
        return frozenset(combined or ())
    if op is sre.SUBPATTERN:  # (group, add_flags, del_flags, pattern)
        return _sequence(list(av[3]))
    if op is sre.ATOMIC_GROUP:
        return _sequence(list(av))
    if op in _REPEATS:  # (min, max, pattern)
        return _sequence(list(av[2])) if av[0] >= 1 else frozenset()
    if op is sre.ASSERT:  # (direction, pattern): a positive lookaround is in the text too
        return _sequence(list(av[1]))
    return frozenset()


def finder(pattern: re.Pattern[str]) -> Find:
    """``pattern.search``, skipped (None) on ASCII text that misses a required literal set.
    Regexes that start with a case-sensitive literal are left alone: ``re`` already scans for
    that literal as fast as this would."""
    tree = sre_parse.parse(pattern.pattern, pattern.flags)
    if tree.data and tree.data[0][0] is sre.LITERAL and not tree.state.flags & re.IGNORECASE:
        return pattern.search
    clauses = required(pattern)
    if not clauses:
        return pattern.search
    # the most selective set first; in each, the longest literals first
    ordered = tuple(
        tuple(sorted(c, key=len, reverse=True))
        for c in sorted(clauses, key=lambda c: (-min(map(len, c)), len(c)))
    )
    search = pattern.search

    def find(text: str) -> re.Match[str] | None:
        if text.isascii():
            lower = text.lower()
            for clause in ordered:
                for needle in clause:
                    if needle in lower:
                        break
                else:
                    return None
        return search(text)

    return find
