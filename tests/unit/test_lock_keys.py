"""Advisory lock keys are declared only in ``store/locks.py`` and are all distinct: two once
collided (the run repairs' and two leader elections'), silently turning the repairs off."""

from __future__ import annotations

import re
from pathlib import Path

from quarterdeck.store import locks

SRC = Path(__file__).parents[2] / "src" / "quarterdeck"
KEY_LITERAL = re.compile(r"0x51D_?[0-9A-Fa-f]{4}\b|\b8578\d{4}\b")


def test_every_key_is_distinct() -> None:
    assert len(set(locks.ALL.values())) == len(locks.ALL), locks.ALL
    assert {"MIGRATIONS", "HEALTH_MONITOR", "SCALER", "RUN_ORPHANS", "RUN_LAPSED"} <= set(locks.ALL)


def test_no_module_but_the_registry_writes_a_key() -> None:
    found = [
        f"{path.relative_to(SRC)}:{n}: {line.strip()}"
        for path in SRC.rglob("*.py")
        if path.name != "locks.py" or path.parent.name != "store"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if KEY_LITERAL.search(line)
    ]
    assert not found, found
