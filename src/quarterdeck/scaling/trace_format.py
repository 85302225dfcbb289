"""The trace format of the scaling simulator, its reader and its writer.

Why a format of our own: no public trace of agent runs can be downloaded here, and the simulator
needs only when each run arrived and how long it held a worker slot.  A trace is a list of runs:

========== ========================================================================
column     meaning
========== ========================================================================
arrival_s  seconds from the trace start at which the run was submitted (>= 0)
duration_s seconds the run holds one worker slot once started (>= 0); queue wait is
           *not* included: the simulator adds it
tenant     optional, free text (empty in CSV or absent in JSON: none)
kind       optional, free text, e.g. ``interactive``, ``ci``, ``agent``
========== ========================================================================

Two encodings, chosen by the file name (``.gz`` on top of either is gunzipped):

- **CSV** (``.csv``): a header row naming the columns (any order; ``tenant`` and ``kind`` may be
  left out), then one run per row::

      arrival_s,duration_s,tenant,kind
      0,180,acme,interactive
      12.5,95,,ci

- **JSON** (``.json``): ``{"name": "...", "runs": [{"arrival_s": 0, "duration_s": 180}, ...]}``.

Every value is checked: a negative, non-finite or non-numeric time is refused with a
``ValueError`` naming the row (``row 1`` is the first run; in CSV that is the line after the
header).  Rows need not be sorted; a loaded :class:`Trace` is sorted by arrival, stable.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Run",
    "Trace",
    "dump_csv",
    "dump_json",
    "load_trace",
    "parse_csv",
    "parse_json",
    "save_trace",
    "sorted_trace",
]

_COLUMNS = ("arrival_s", "duration_s", "tenant", "kind")


@dataclass(frozen=True, slots=True)
class Run:
    """One run of a trace; times in seconds."""

    arrival_s: float
    duration_s: float
    tenant: str | None = None
    kind: str | None = None


@dataclass(frozen=True, slots=True)
class Trace:
    """A named list of runs, sorted by arrival."""

    name: str
    runs: tuple[Run, ...]

    @property
    def span_s(self) -> float:
        """When the last run would end if none ever waited: the trace's natural length."""
        return max((r.arrival_s + r.duration_s for r in self.runs), default=0.0)


def _number(value: Any, column: str, row: int) -> float:
    """A finite, non-negative number, or a ``ValueError`` naming the row and column."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"row {row}: {column} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"row {row}: {column} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"row {row}: {column} must be finite, got {value!r}")
    if number < 0:
        raise ValueError(f"row {row}: {column} must be >= 0, got {value!r}")
    return number


def _label(value: Any, column: str, row: int) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"row {row}: {column} must be text, got {value!r}")
    return value


def _run(record: Mapping[str, Any], row: int) -> Run:
    for column in ("arrival_s", "duration_s"):
        if column not in record:
            raise ValueError(f"row {row}: {column} is missing")
    return Run(
        arrival_s=_number(record["arrival_s"], "arrival_s", row),
        duration_s=_number(record["duration_s"], "duration_s", row),
        tenant=_label(record.get("tenant"), "tenant", row),
        kind=_label(record.get("kind"), "kind", row),
    )


def sorted_trace(name: str, runs: Iterable[Run]) -> Trace:
    """A trace of ``runs`` sorted by arrival (stable: runs arriving together keep their order)."""
    return Trace(name=name, runs=tuple(sorted(runs, key=lambda r: r.arrival_s)))


def parse_csv(text: str, name: str = "trace") -> Trace:
    """Parse the CSV encoding (header first); see the module docstring."""
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = [c for c in ("arrival_s", "duration_s") if c not in header]
    if missing:
        raise ValueError(f"CSV header must name {', '.join(missing)}; got {header!r}")
    runs = []
    for row, record in enumerate(reader, start=1):
        if None in record:  # more fields than the header has
            raise ValueError(f"row {row}: more values than the header has columns")
        runs.append(_run(record, row))
    return sorted_trace(name, runs)


def parse_json(text: str, name: str = "trace") -> Trace:
    """Parse the JSON encoding; a ``name`` in the document wins over the ``name`` argument."""
    document = json.loads(text)
    if not isinstance(document, dict) or not isinstance(document.get("runs"), list):
        raise ValueError('a JSON trace must be an object with a "runs" list')
    runs = []
    for row, record in enumerate(document["runs"], start=1):
        if not isinstance(record, dict):
            raise ValueError(f"row {row}: a run must be an object, got {record!r}")
        runs.append(_run(record, row))
    doc_name = document.get("name")
    return sorted_trace(doc_name if isinstance(doc_name, str) and doc_name else name, runs)


def _fmt(value: float) -> str:
    """Shortest exact-enough text: whole seconds without ``.0``, else up to 3 decimals."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text or "0"


def dump_csv(trace: Trace) -> str:
    """The CSV encoding (times to the millisecond, which is all the simulator resolves)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_COLUMNS)
    for r in trace.runs:
        writer.writerow((_fmt(r.arrival_s), _fmt(r.duration_s), r.tenant or "", r.kind or ""))
    return out.getvalue()


def dump_json(trace: Trace) -> str:
    """The JSON encoding; absent labels are left out."""
    runs: list[dict[str, float | str]] = []
    for r in trace.runs:
        record: dict[str, float | str] = {"arrival_s": r.arrival_s, "duration_s": r.duration_s}
        if r.tenant is not None:
            record["tenant"] = r.tenant
        if r.kind is not None:
            record["kind"] = r.kind
        runs.append(record)
    return json.dumps({"name": trace.name, "runs": runs}, separators=(",", ":"))


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".csv", ".json"):
        name = name.removesuffix(suffix)
    return name


def load_trace(path: str | Path) -> Trace:
    """Read a trace file: ``.csv``/``.json``, optionally gzipped (``.csv.gz``/``.json.gz``)."""
    path = Path(path)
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    text = data.decode("utf-8")
    kind = path.with_suffix("").suffix if path.suffix == ".gz" else path.suffix
    if kind == ".csv":
        return parse_csv(text, _stem(path))
    if kind == ".json":
        return parse_json(text, _stem(path))
    raise ValueError("a trace file must end in .csv, .json, .csv.gz or .json.gz")


def save_trace(trace: Trace, path: str | Path) -> Path:
    """Write ``trace`` in the encoding its file name asks for; gzip with ``mtime=0`` (stable)."""
    path = Path(path)
    gz = path.suffix == ".gz"
    kind = path.with_suffix("").suffix if gz else path.suffix
    if kind == ".csv":
        text = dump_csv(trace)
    elif kind == ".json":
        text = dump_json(trace)
    else:
        raise ValueError("a trace file must end in .csv, .json, .csv.gz or .json.gz")
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path
