"""Identifiers that sort by creation time.

Run ids double as pagination cursors, so they must order the same way as ``created_at``: a
48-bit millisecond timestamp followed by 80 random bits, in Crockford base32 (the ULID layout).
"""

from __future__ import annotations

import os
import re
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ULID_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def ulid(now_ms: int | None = None) -> str:
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    out = []
    for _ in range(26):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def new_id(prefix: str) -> str:
    return f"{prefix}_{ulid()}"


def is_id(value: str, prefix: str) -> bool:
    head, sep, tail = value.rpartition("_")
    return bool(sep) and head == prefix and bool(_ULID_RE.fullmatch(tail))
