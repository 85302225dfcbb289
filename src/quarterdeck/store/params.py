"""Numbered query parameters for SQL built from optional filters.

List endpoints add a ``WHERE`` clause per filter the caller gave; each value must go to asyncpg
as ``$n``, never into the text. :class:`Params` hands out the next ``$n`` and keeps the values
in order, so every repository builds such queries the same way.
"""

from __future__ import annotations

from typing import Any


class Params:
    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        """The placeholder for ``value`` (``$1``, ``$2``, ...), remembered for the query."""
        self.values.append(value)
        return f"${len(self.values)}"
