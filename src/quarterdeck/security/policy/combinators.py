"""How compiled predicates combine, and the evidence they report.

A predicate returns ``None`` for "no match" or the evidence of a match (a path, a host, a
command line; possibly ``""``). Conjunctions collect the distinct evidence of their parts,
disjunctions report the first branch that matched, and evidence is clipped so a decision's
``reason`` stays one readable line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from quarterdeck.security.policy.commands import Segment
from quarterdeck.security.policy.facts import Facts

Pred = Callable[[Facts], str | None]
SegPred = Callable[[Segment], str | None]
Item = TypeVar("Item")
EVIDENCE_CHARS = 160


def clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= EVIDENCE_CHARS else text[: EVIDENCE_CHARS - 3] + "..."


def every(tests: list[Callable[[Item], bool]]) -> Callable[[Item], bool]:
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first_test, second_test = tests
        return lambda item: first_test(item) and second_test(item)

    def test(item: Item) -> bool:
        for t in tests:
            if not t(item):
                return False
        return True

    return test


def all_of(preds: list[Pred]) -> Pred:
    """Predicates are called per rule per call: the one- and two-part cases (most rules) get
    their own closures, with the same evidence as the general loop."""
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        return _both(*preds)

    def test(f: Facts) -> str | None:
        evidence: list[str] = []
        for pred in preds:
            found = pred(f)
            if found is None:
                return None
            if found and found not in evidence:
                evidence.append(found)
        return "; ".join(evidence)

    return test


def _both(a: Pred, b: Pred) -> Pred:
    def test(f: Facts) -> str | None:
        x = a(f)
        if x is None:
            return None
        y = b(f)
        if y is None:
            return None
        if not x:
            return y
        return x if not y or y == x else f"{x}; {y}"

    return test


def any_of(preds: list[Pred]) -> Pred:
    def test(f: Facts) -> str | None:
        for pred in preds:
            found = pred(f)
            if found is not None:
                return found
        return None

    return test


def first(
    items: list[Item],
    test: Callable[[Item], bool],
    show: Callable[[Item], str],
) -> str | None:
    for item in items:
        if test(item):
            return clip(show(item))
    return None


def first_ev(segments: list[Segment], test: SegPred) -> str | None:
    for segment in segments:
        found = test(segment)
        if found is not None:
            return found
    return None


def upstream_chain(segment: Segment, steps: list[SegPred]) -> str | None:
    """``segment`` matches the last step and, walking upstream, the earlier steps in order."""
    last = steps[-1](segment)
    if last is None:
        return None
    if len(steps) == 1:
        return last
    for source in segment.upstream:
        found = upstream_chain(source, steps[:-1])
        if found is not None:
            return f"{found} | {last}"
    return None
