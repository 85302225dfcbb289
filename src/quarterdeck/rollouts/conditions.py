"""Argo-style success and failure conditions on one scalar ``result``, parsed, never ``eval``-ed.

A rollout spec carries conditions such as ``result < 0.05`` or ``isNaN(result) or result >= 0.95``
written by whoever submits it. Handing that text to ``eval`` (or to ``ast`` plus a walker that
forgets a node type) would run a stranger's code in the controller, so this module accepts only
a tiny grammar and rejects everything else with the position of the first bad token:

    expr       := and_expr ( ("or" | "||") and_expr )*
    and_expr   := atom ( ("and" | "&&") atom )*
    atom       := "(" expr ")" | "isNaN" "(" "result" ")" | comparison
    comparison := "result" OP number | number OP "result"
    OP         := "<" | "<=" | ">" | ">=" | "==" | "!="

``&&`` and ``||`` are accepted because Argo's own examples use them (``isNaN(result) ||
result >= 0.95``), so a condition copied from an Argo AnalysisTemplate keeps working. A
comparison with NaN is false (``!=`` true), as in Go and Python: a condition that wants to treat
"no data" specially says so with ``isNaN(result)``.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeAlias

MAX_LENGTH = 500  # a condition is one line; a longer one is a mistake or an attack
MAX_DEPTH = 16  # parentheses deep enough for any real condition, far from Python's recursion limit

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<op><=|>=|==|!=|<|>)
  | (?P<bool>&&|\|\|)
  | (?P<paren>[()])
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE,
)
_WORDS = {"result", "isNaN", "and", "or"}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # number, op, and, or, (, ), result, isNaN, end
    text: str
    pos: int


@dataclass(frozen=True, slots=True)
class _Compare:
    op: str  # always read as ``result OP value``
    value: float


@dataclass(frozen=True, slots=True)
class _IsNaN:
    pass


@dataclass(frozen=True, slots=True)
class _Bool:
    op: str  # "and" | "or"
    parts: tuple[_Node, ...]


_Node: TypeAlias = _Compare | _IsNaN | _Bool


def _fail(condition: str, token: _Token, expected: str) -> ValueError:
    shown = "end of condition" if token.kind == "end" else repr(token.text)
    return ValueError(
        f"condition {condition!r}: unexpected {shown} at position {token.pos}; expected {expected}"
    )


def _tokenize(condition: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(condition):
        match = _TOKEN.match(condition, pos)
        if match is None:
            raise ValueError(
                f"condition {condition!r}: unexpected {condition[pos]!r} at position {pos}"
            )
        kind = match.lastgroup or ""
        text = match.group()
        if kind == "word":
            if text not in _WORDS:
                raise ValueError(
                    f"condition {condition!r}: unexpected {text!r} at position {pos}; "
                    "only result, isNaN(result), numbers, comparisons, and, or are allowed"
                )
            kind = text
        elif kind == "bool":
            kind = "and" if text == "&&" else "or"
        elif kind == "paren":
            kind = text
        if kind != "space":
            tokens.append(_Token(kind, text, pos))
        pos = match.end()
    tokens.append(_Token("end", "", len(condition)))
    return tokens


class _Parser:
    """Recursive descent over the token list; one method per grammar rule."""

    def __init__(self, condition: str) -> None:
        self.condition = condition
        self.tokens = _tokenize(condition)
        self.i = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self, kind: str, expected: str) -> _Token:
        token = self.peek()
        if token.kind != kind:
            raise _fail(self.condition, token, expected)
        self.i += 1
        return token

    def parse(self) -> _Node:
        node = self.expr(0)
        self.take("end", "and, or or the end of the condition")
        return node

    def expr(self, depth: int) -> _Node:
        return self.joined("or", lambda: self.joined("and", lambda: self.atom(depth)))

    def joined(self, op: str, part: Callable[[], _Node]) -> _Node:
        parts = [part()]
        while self.peek().kind == op:
            self.i += 1
            parts.append(part())
        return parts[0] if len(parts) == 1 else _Bool(op, tuple(parts))

    def atom(self, depth: int) -> _Node:
        token = self.peek()
        if token.kind == "(":
            if depth >= MAX_DEPTH:
                raise _fail(self.condition, token, f"at most {MAX_DEPTH} nested parentheses")
            self.i += 1
            node = self.expr(depth + 1)
            self.take(")", "')'")
            return node
        if token.kind == "isNaN":
            self.i += 1
            self.take("(", "'(' after isNaN")
            self.take("result", "result inside isNaN(...)")
            self.take(")", "')'")
            return _IsNaN()
        if token.kind == "result":
            self.i += 1
            op = self.take("op", "a comparison (< <= > >= == !=) after result")
            number = self.take("number", "a number")
            return _Compare(op.text, float(number.text))
        if token.kind == "number":
            self.i += 1
            op = self.take("op", "a comparison (< <= > >= == !=) after the number")
            self.take("result", "result (a comparison is between result and a number)")
            return _Compare(_FLIPPED[op.text], float(token.text))
        raise _fail(self.condition, token, "result, a number, isNaN(result) or '('")


@lru_cache(maxsize=256)
def _parse(condition: str) -> _Node:
    if len(condition) > MAX_LENGTH:
        raise ValueError(f"condition is {len(condition)} characters; at most {MAX_LENGTH}")
    if not condition.strip():
        raise ValueError("condition is empty")
    return _Parser(condition).parse()


def validate(condition: str) -> None:
    """Raise ``ValueError`` naming the position and token of the first error (a 422 on submit)."""
    _parse(condition)


def evaluate(condition: str, result: float) -> bool:
    """Whether ``condition`` holds for ``result``; raises ``ValueError`` for a bad condition."""
    return _eval(_parse(condition), float(result))


def _eval(node: _Node, result: float) -> bool:
    if isinstance(node, _Compare):
        return _OPS[node.op](result, node.value)
    if isinstance(node, _IsNaN):
        return math.isnan(result)
    if node.op == "and":
        return all(_eval(part, result) for part in node.parts)
    return any(_eval(part, result) for part in node.parts)
