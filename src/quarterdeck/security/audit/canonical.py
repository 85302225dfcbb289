"""Canonical JSON: the one byte encoding audit records are hashed in and checkpoints signed in.

A hash or a signature is over bytes, so "the same event" must always become the same bytes. The
rules (repeated in README.md, which is the reference):

* UTF-8 without a byte-order mark; no whitespace outside strings; ``,`` and ``:`` separators.
* Object keys are strings, sorted by Unicode code point, each at most once.
* Strings escape ``"`` as ``\\"``, ``\\`` as ``\\\\``, U+0008/0009/000A/000C/000D as ``\\b \\t \\n
  \\f \\r`` and every other character below U+0020 as ``\\u00xx`` (lowercase hex). Everything
  else is literal UTF-8 (no ``\\u`` escapes for non-ASCII). Lone surrogates are rejected.
* Integers are plain decimal (``-`` for negatives, no leading zeros), limited to +/-(2**53 - 1)
  so every JSON reader gets them back exactly (RFC 7493, I-JSON).
* Floats must be finite and are written as their shortest round-tripping decimal (Python's
  ``repr``: ``1.5``, ``1e-07``, ``1e+16``). NaN and infinities are rejected.
* ``true``, ``false``, ``null``; tuples become arrays.
* Datetimes must be timezone-aware; they become RFC 3339 strings in UTC with exactly six
  fractional digits and a ``Z``: ``2026-01-01T00:00:00.000000Z`` (see :func:`timestamp`).

Verification never re-encodes a record: it hashes the stored bytes (see README.md), so these rules
matter when a record is written and when someone rebuilds one from parsed fields by hand.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

MAX_SAFE_INT = 2**53 - 1
_STR_ENCODER = json.encoder.encode_basestring  # the C implementation of the string rule above
_ORJSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER


def timestamp(value: datetime) -> str:
    """RFC 3339, UTC, microseconds, ``Z``; the same text Postgres ``to_char`` gives (see SQL)."""
    if value.tzinfo is not UTC:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("timestamps must be timezone-aware")
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")[:-6] + "Z"


def _default(value: Any) -> Any:
    """What the encoder calls for types JSON lacks: datetimes become timestamps, nothing else."""
    if isinstance(value, datetime):
        return timestamp(value)
    raise ValueError(f"{type(value).__name__} has no canonical JSON form")


_ENCODER = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":"), default=_default
)
# The C encoder made once and reused (``JSONEncoder.encode`` builds a new one per call, which
# costs more than encoding an event). No circular-reference markers: a cycle ends in
# RecursionError instead, which :func:`dumps` reports.
_make = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODER = (
    _make(None, _default, json.encoder.encode_basestring, None, ":", ",", True, False, False)
    if _make is not None
    else None
)


def _encode(value: Any) -> str:
    if _C_ENCODER is None or isinstance(value, str):
        return _ENCODER.encode(value)
    return "".join(_C_ENCODER(value, 0))


def encode_str(value: str) -> str:
    """One JSON string by the canonical rule (the C encoder, so it is cheap on hot paths)."""
    return _STR_ENCODER(value)


def check(value: Any) -> bool:
    """Raise ValueError for what ``json`` would silently get wrong; False if ``value`` holds
    mappings that are not dicts (which :func:`normalize` must convert first).

    ``json`` sorts non-string keys as numbers and then stringifies them (so the output would not
    be sorted), writes integers of any size, and writes NaN unless told not to (it then fails
    with a less helpful message). Unknown types are refused by :func:`_default`. Nothing is
    copied. Only values :func:`_plain` turns away come here; plain ones never need it.
    """
    kind = type(value)
    if kind is list or kind is tuple:
        items: Any = value
    elif kind is dict:
        for key in value:
            if type(key) is not str:
                raise ValueError(f"object keys must be strings, not {type(key).__name__}")
        items = value.values()
    elif isinstance(value, Mapping):
        check(dict(value))
        return False
    else:
        return _scalar(value)
    ok = True
    for item in items:
        kind = type(item)
        if kind is str or item is None or kind is bool:
            continue
        if kind is int and -MAX_SAFE_INT <= item <= MAX_SAFE_INT:
            continue
        ok = check(item) and ok
    return ok


def _scalar(value: Any) -> bool:
    kind = type(value)
    if kind is int and not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
        raise ValueError(f"integer {value} is outside +/-(2**53-1)")
    if kind is float and not math.isfinite(value):
        raise ValueError("NaN and infinity have no canonical JSON form")
    return True  # str, None, bool, datetimes, subclasses; the encoder refuses the rest


def normalize(value: Any) -> Any:
    """``value`` with every mapping turned into a dict (only needed when :func:`check` says so)."""
    if isinstance(value, Mapping):
        return {key: normalize(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [normalize(item) for item in value]
    return value


def _plain(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` holds only exact ``str``, ``None``, ``bool``, safe ``int``, ``list``,
    ``tuple`` and ``dict`` with string keys -- the shapes nearly every event has. For those
    orjson writes exactly the canonical bytes (string escapes, key order by code point and
    integers agree with the rules above; the tests compare it with the stdlib encoder), in a
    tenth of the time. Anything else goes the stdlib way: floats (orjson writes ``1e-7`` where
    the rule says ``1e-07``, and NaN as ``null``), datetimes, other mappings, subclasses, and
    nesting deeper than orjson allows."""
    if depth > 64:
        return False
    kind = type(value)
    if kind is dict:
        for key in value:
            if type(key) is not str:
                return False
        items: Any = value.values()
    elif kind is list or kind is tuple:
        items = value
    else:
        return (
            kind is str
            or value is None
            or kind is bool
            or (kind is int and -MAX_SAFE_INT <= value <= MAX_SAFE_INT)
        )
    for item in items:  # scalars inline: a call per value would cost more than the encoding
        kind = type(item)
        if kind is str or item is None or kind is bool:
            continue
        if kind is int and -MAX_SAFE_INT <= item <= MAX_SAFE_INT:
            continue
        if (kind is dict or kind is list or kind is tuple) and _plain(item, depth + 1):
            continue
        return False
    return True


def dumps(value: Any) -> bytes:
    """Canonical bytes of ``value``. Raises ValueError when it has no canonical form."""
    try:
        if _plain(value):
            try:
                return orjson.dumps(value, option=_ORJSON_OPTIONS)
            except orjson.JSONEncodeError:
                pass  # a lone surrogate: the stdlib route below names the problem
        if not check(value):
            value = normalize(value)
        return _encode(value).encode("utf-8")
    except (TypeError, RecursionError) as exc:  # unknown types are refused by _default
        raise ValueError(f"no canonical JSON form: {exc}") from exc
    except UnicodeEncodeError as exc:
        raise ValueError("strings must be valid Unicode (no lone surrogates)") from exc
