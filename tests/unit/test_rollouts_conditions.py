"""The safe condition evaluator: the grammar it accepts, what it rejects, and where."""

from __future__ import annotations

import math

import pytest

from quarterdeck.rollouts.conditions import MAX_DEPTH, MAX_LENGTH, evaluate, validate

NAN = float("nan")


@pytest.mark.parametrize(
    ("condition", "result", "expected"),
    [
        ("result < 0.05", 0.04, True),
        ("result < 0.05", 0.05, False),
        ("result <= 0.05", 0.05, True),
        ("result > 1", 2, True),
        ("result >= 1", 1, True),
        ("result == 3", 3, True),
        ("result != 3", 3, False),
        ("0.95 <= result", 0.96, True),  # number OP result is flipped, not mis-read
        ("0.95 <= result", 0.5, False),
        ("1 > result", 0.5, True),
        ("1 > result", 1.5, False),
        ("result > -1.5", -1, True),
        ("result < 1e-3", 0.0005, True),
        ("result < .5", 0.4, True),
        ("result > 0 and result < 1", 0.5, True),
        ("result > 0 and result < 1", 1.5, False),
        ("result < 0 or result > 1", 1.5, True),
        ("result < 0 or result > 1", 0.5, False),
        ("result > 0 && result < 1", 0.5, True),
        ("result < 0 || result > 1", -1, True),
        # and binds tighter than or: false or (true and true)
        ("result > 10 or result > 0 and result < 1", 0.5, True),
        ("(result > 10 or result > 0) and result < 1", 5, False),
        ("((result > 0))", 1, True),
        ("isNaN(result)", NAN, True),
        ("isNaN(result)", 0.0, False),
        ("isNaN(result) || result >= 0.95", NAN, True),  # Argo's own example
        ("isNaN(result) || result >= 0.95", 0.9, False),
    ],
)
def test_evaluates(condition: str, result: float, expected: bool) -> None:
    assert evaluate(condition, result) is expected


def test_nan_compares_false_except_not_equal() -> None:
    assert not evaluate("result < 1", NAN)
    assert not evaluate("result >= 1", NAN)
    assert not evaluate("result == 1", NAN)
    assert evaluate("result != 1", NAN)
    assert evaluate("result > 1", math.inf)


@pytest.mark.parametrize(
    ("condition", "position", "token"),
    [
        ("result > ", 9, "end of condition"),
        ("result > x", 9, "'x'"),
        ("__import__('os').system('true')", 0, "'__import__'"),
        ("result.__class__ > 1", 6, "'.'"),
        ("(result > 1", 11, "end of condition"),
        ("result > 1)", 10, "')'"),
        ("result > 1 result", 11, "'result'"),
        ("1 < 2", 4, "'2'"),  # a comparison must involve result
        ("result < result", 9, "'result'"),
        ("result[0] > 1", 6, "'['"),
        ("result", 6, "end of condition"),
        ("result > 1 and", 14, "end of condition"),
        ("not result > 1", 0, "'not'"),
        ("isNaN(1)", 6, "'1'"),
        ("result = 1", 7, "'='"),
        ("result > 1 and or result < 0", 15, "'or'"),
    ],
)
def test_rejects_naming_position_and_token(condition: str, position: int, token: str) -> None:
    with pytest.raises(ValueError, match=f"at position {position}") as info:
        validate(condition)
    assert token in str(info.value)
    with pytest.raises(ValueError):
        evaluate(condition, 1.0)


def test_rejects_empty_overlong_and_deep() -> None:
    with pytest.raises(ValueError, match="empty"):
        validate("   ")
    with pytest.raises(ValueError, match="characters"):
        validate("result > 1 or " * (MAX_LENGTH // 10) + "result > 1")
    deep = "(" * (MAX_DEPTH + 1) + "result > 1" + ")" * (MAX_DEPTH + 1)
    with pytest.raises(ValueError, match="nested parentheses"):
        validate(deep)
    ok = "(" * MAX_DEPTH + "result > 1" + ")" * MAX_DEPTH
    validate(ok)
    assert evaluate(ok, 2)


def test_validate_accepts_good_conditions() -> None:
    for good in ("result < 0.05", "isNaN(result) or result >= 0.95", "2 >= result and result > 1"):
        validate(good)  # raises on a bad one
