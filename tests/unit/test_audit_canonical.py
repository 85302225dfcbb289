"""Canonical JSON: the byte encoding audit records are hashed in (rules in canonical.py)."""

from __future__ import annotations

import json
from collections import OrderedDict
from datetime import UTC, datetime, timedelta, timezone
from enum import IntEnum, StrEnum
from typing import Any

import pytest

from quarterdeck.security.audit import canonical


class Colour(StrEnum):
    red = "red"


class Level(IntEnum):
    high = 3


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"b": 1, "a": [True, None, 2.5]}, b'{"a":[true,null,2.5],"b":1}'),
        ({"z": {"y": 1, "x": 2}}, b'{"z":{"x":2,"y":1}}'),  # nested keys sorted too
        ({"\u00e9": 1, "e": 2, "E": 3}, '{"E":3,"e":2,"\u00e9":1}'.encode()),  # by code point
        ('q"b\\s\n\t\x01\x7f é 漢 🚀', '"q\\"b\\\\s\\n\\t\\u0001\x7f é 漢 🚀"'.encode()),
        ([1e-07, 1e16, -0.5, 2**53 - 1], b"[1e-07,1e+16,-0.5,9007199254740991]"),
        ((1, "a"), b'[1,"a"]'),  # tuples are arrays
        ({"c": Colour.red, "l": Level.high}, b'{"c":"red","l":3}'),  # enums by value
        (OrderedDict([("b", 1), ("a", 2)]), b'{"a":2,"b":1}'),  # any Mapping
    ],
)
def test_encoding_rules(value: Any, expected: bytes) -> None:
    assert canonical.dumps(value) == expected


def test_datetimes_become_utc_microsecond_strings() -> None:
    plus2 = timezone(timedelta(hours=2))
    assert canonical.dumps({"t": datetime(2026, 1, 1, 1, 2, 3, 5, tzinfo=plus2)}) == (
        b'{"t":"2025-12-31T23:02:03.000005Z"}'
    )
    assert canonical.timestamp(datetime(2026, 5, 1, tzinfo=UTC)) == "2026-05-01T00:00:00.000000Z"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({1: "x"}, "keys must be strings"),
        ({"a": [{2: 3}]}, "keys must be strings"),
        (float("nan"), "NaN"),
        ([float("inf")], "NaN"),
        (2**53, "outside"),
        ({"a": -(2**60)}, "outside"),
        ({"t": datetime(2026, 1, 1)}, "timezone-aware"),
        ({"b": b"bytes"}, "no canonical JSON form"),
        ({"s": {1, 2}}, "no canonical JSON form"),
        ("\ud800", "lone surrogates"),
    ],
)
def test_values_without_a_canonical_form_are_refused(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        canonical.dumps(value)


def test_a_cycle_is_refused_rather_than_looping() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(ValueError, match="no canonical JSON form"):
        canonical.dumps(cycle)


def test_output_round_trips_to_the_same_bytes() -> None:
    value = {"ops": [{"tool": "bash", "exit": 0, "t": 1.25}], "note": "ünïcode", "n": None}
    once = canonical.dumps(value)
    assert canonical.dumps(json.loads(once)) == once
    assert b" " not in once  # no insignificant whitespace
