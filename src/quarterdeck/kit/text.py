"""Text a caller sends that Postgres cannot store, and where a parse error sits in a document.

Postgres ``text`` and ``jsonb`` cannot hold U+0000: a NUL byte anywhere in a value (a prompt, a
metadata key, a query parameter) used to reach an INSERT or a WHERE clause and come back as a
500. Every request is checked once, centrally (``security/inputs.py``), with the pure functions
here, so the answer is a 422 naming the field instead, and no route has to remember it.
"""

from __future__ import annotations

from typing import Any

NUL = "\x00"
NUL_MESSAGE = "text must not contain NUL (\\u0000) characters"
JSON_NUL_ESCAPE = b"\\u0000"
"""How a NUL appears in a JSON document (a raw NUL byte is not valid JSON). A body without
these six bytes has no NUL in any string: the cheap test that skips the walk below."""


def shown(name: str) -> str:
    """A key as a field path shows it: NUL escaped, so the problem document stays readable."""
    return name.replace(NUL, "\\u0000")


def nul_fields(value: Any, path: str = "") -> list[str]:
    """Dotted paths of every string in a JSON value that holds a NUL, in document order.

    A key holding a NUL is named by its own (escaped) path; list items by their index:
    ``{"runs": [{}, {"prompt": "a\\x00"}]}`` gives ``["runs.1.prompt"]``."""
    found: list[str] = []
    if isinstance(value, str):
        if NUL in value:
            found.append(path or "body")
    elif isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{shown(str(key))}" if path else shown(str(key))
            if NUL in str(key):
                found.append(child)
            found += nul_fields(item, child)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += nul_fields(item, f"{path}.{index}" if path else str(index))
    return found


def line_column(doc: str | bytes, pos: int) -> tuple[int, int]:
    """1-based (line, column) of character offset ``pos`` in ``doc``, as editors count them."""
    text = doc.decode("utf-8", "replace") if isinstance(doc, bytes) else doc
    pos = max(0, min(pos, len(text)))
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return line, column


def json_syntax_message(doc: str | bytes | None, pos: object, reason: object) -> str:
    """What a malformed JSON body is told: where (line and column, not a bare byte offset,
    which clients took for a field name) and why (the decoder's reason)."""
    why = f": {reason}" if reason else ""
    if doc is None or not isinstance(pos, int):
        return f"invalid JSON{why}"
    line, column = line_column(doc, pos)
    return f"invalid JSON at line {line} column {column}{why}"
