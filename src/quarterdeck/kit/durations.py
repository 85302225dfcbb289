"""Parsing of human duration strings such as ``250ms``, ``2s``, ``5m``, ``1h``, ``7y`` (a year is 365 days)."""

from __future__ import annotations

import re

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
