"""Parsing of human duration strings such as ``250ms``, ``2s``, ``5m``, ``1h``, ``7y`` (a year is 365 days)."""

from __future__ import annotations

import re

from quarterdeck.exceptions import ValidationFailed

_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "y": 31_536_000.0,
}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w|y)?\s*$")


def parse_duration(text: str | float | int) -> float:
    """Seconds for ``text``; a bare number means seconds. Raises ValueError with the reason."""
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError("duration must not be negative")
        return float(text)
    match = _DURATION_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration; use e.g. 500ms, 2s, 5m, 1h, 30d or 7y")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


CENTURY_S = 100 * 365 * 86_400.0
"""The longest duration a request may ask for: past it, dates computed from it overflow."""


def positive_duration(text: str | float | int, field: str, maximum: float = CENTURY_S) -> float:
    """``parse_duration`` for a request field that must be > 0 and at most ``maximum``: a bad
    value is the caller's mistake, so it becomes a 422 naming ``field`` (retention settings)."""
    try:
        seconds = parse_duration(text)
        if seconds <= 0:
            raise ValueError("must be greater than zero")
        if seconds > maximum:
            raise ValueError(f"must be at most {maximum:.0f} seconds (100 years)")
    except ValueError as exc:
        raise ValidationFailed(
            f"{field}: {exc}", errors=[{"field": field, "message": str(exc)}]
        ) from None
    return seconds
