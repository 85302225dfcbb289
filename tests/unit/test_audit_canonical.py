"""Canonical JSON: the byte encoding audit records are hashed in (rules in canonical.py)."""

from __future__ import annotations

import json
import random
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


# -- the fast paths against a straightforward reference ------------------------------------
def _reference(value: Any) -> bytes:
    """The rules of canonical.py spelled the slow, obvious way: normalise, then ``json.dumps``
    with sorted keys. The fast paths (orjson for plain values, the inlined checks) must give
    these bytes exactly; existing chains and the verifier depend on it."""

    def plain(v: Any) -> Any:
        if isinstance(v, datetime):
            return canonical.timestamp(v)
        if isinstance(v, dict | OrderedDict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        return v

    text = json.dumps(
        plain(value), ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
    )
    return text.encode("utf-8")


def _varied(rng: random.Random, depth: int = 0) -> Any:
    strings = ["", "a", "tool.call", "é漢🚀", 'q"b\\s\n\t\x01\x7f', "x" * 200, "key:k_1", "Z"]
    roll = rng.random()
    if depth > 3 or roll < 0.45:
        return rng.choice(
            [
                *strings,
                None,
                True,
                False,
                0,
                -7,
                2**53 - 1,
                -(2**53 - 1),
                0.5,
                1e-07,
                1e16,
                -0.0,
                5e-324,
                Colour.red,
                Level.high,
                datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
            ]
        )
    if roll < 0.65:
        return [_varied(rng, depth + 1) for _ in range(rng.randrange(4))]
    if roll < 0.7:
        return tuple(_varied(rng, depth + 1) for _ in range(rng.randrange(3)))
    keys = rng.sample(
        [
            "a",
            "B",
            "b",
            "é",
            "host",
            "port",
            "prompt",
            "output",
            "_",
            "z9",
            "\x00k",
            "\ue000",
            "\uffff",
            "\U00010000",
            "k\x7f",
        ],
        rng.randrange(6),
    )
    if rng.random() < 0.4:  # the small all-strings dicts the fast path takes
        return {k: rng.choice(strings) for k in keys}
    made = {k: _varied(rng, depth + 1) for k in keys}
    return OrderedDict(made) if rng.random() < 0.1 else made


def test_fast_paths_give_the_reference_bytes_on_varied_values() -> None:
    rng = random.Random(20261124)
    for _ in range(3000):
        value = {"v": _varied(rng)} if rng.random() < 0.5 else _varied(rng)
        assert canonical.dumps(value) == _reference(value), value


def _every_character() -> list[str]:
    """Every code point but the surrogates, in strings of 512."""
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    return ["".join(chars[i : i + 512]) for i in range(0, len(chars), 512)]


def test_every_character_is_escaped_by_the_rule_in_strings_and_keys() -> None:
    """Plain values are written by orjson, the rest by the stdlib encoder: both must follow the
    string rule for every character, or records would hash differently by route."""
    for text in _every_character():
        expected = json.encoder.encode_basestring(text).encode()
        assert canonical.dumps(text) == expected
        assert canonical.dumps([text]) == b"[" + expected + b"]"
        assert canonical.dumps({text: 1, "\x00": 0}) == _reference({text: 1, "\x00": 0})


def test_values_orjson_cannot_write_take_the_stdlib_route() -> None:
    assert canonical.dumps({"a": [1e-07]}) == b'{"a":[1e-07]}'  # orjson would write 1e-7
    deep: Any = "x"
    for _ in range(300):  # deeper than orjson nests
        deep = [deep]
    assert canonical.dumps(deep) == _reference(deep)
    with pytest.raises(ValueError, match="NaN"):
        canonical.dumps({"a": [float("nan")]})  # orjson would write null
    with pytest.raises(ValueError, match="outside"):
        canonical.dumps({"a": [2**53]})
    with pytest.raises(ValueError, match="keys must be strings"):
        canonical.dumps({"a": {1: "x"}})
    with pytest.raises(ValueError, match="lone surrogates"):
        canonical.dumps({"a": ["\ud800"]})
