"""The record layout and the per-tenant hash chain: building links, and checking them.

A record is the canonical JSON object::

    {"body":{...},"head":{...},"prev_hash":"<64 hex>","seq":N,"tenant":"T","v":1}

``head`` holds the searchable fields (actor, event_type, session_id, severity, timestamp_us), each
stored in its own column; ``body`` holds the rest, stored as canonical bytes; ``prev_hash``,
``seq`` and ``tenant`` place the record in its chain. ``hash = SHA-256(record)``. The head's
timestamp is an integer (microseconds since the Unix epoch, UTC): exact, and cheap to produce in
both Python and SQL, which matters at a million events per verification.

Keys sort as ``body < head < prev_hash < seq < tenant < v``, so the record splits into a prefix
built from stored columns (``{"body":<body>,"head":<head>``; the repository assembles it in SQL)
and a suffix built from the position in the chain (:func:`suffix`). Checking a link needs only the
row, the stored hash of the row before it, and the seq: the check is local, which is what lets
verification stream rows without keeping state beyond one hash.
"""

from __future__ import annotations

import hashlib
from binascii import hexlify
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from quarterdeck.security.audit import canonical
from quarterdeck.security.audit.models import Problem, ProblemKind

GENESIS = bytes(32)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)
_WINDOW = 16  # how far a reordered event is searched for, in seqs each way


def timestamp_us(ts: datetime) -> int:
    """Microseconds since the Unix epoch, exactly (no float on the way): the timedelta's own
    fields, which is ``(ts - EPOCH) // ONE_US`` without a timedelta division per event."""
    delta = ts - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def head_bytes(
    actor: str | None, event_type: str, session_id: str | None, severity: str | None, ts_us: int
) -> bytes:
    """The ``head`` object; all five keys always present (``null`` when unset), in sorted order."""
    enc = canonical.encode_str
    return (
        f'{{"actor":{"null" if actor is None else enc(actor)},"event_type":{enc(event_type)},'
        f'"session_id":{"null" if session_id is None else enc(session_id)},'
        f'"severity":{"null" if severity is None else enc(severity)},"timestamp_us":{ts_us:d}}}'
    ).encode()


def prefix(body: bytes, head: bytes) -> bytes:
    return b'{"body":' + body + b',"head":' + head


SUFFIX = b',"prev_hash":"%s","seq":%d,"tenant":%s,"v":1}'


def suffix(prev_hash: bytes, seq: int, tenant_json: bytes) -> bytes:
    return SUFFIX % (prev_hash.hex().encode("ascii"), seq, tenant_json)


def tenant_json(tenant: str) -> bytes:
    return canonical.encode_str(tenant).encode("utf-8")


def link(pre: bytes, prev_hash: bytes, seq: int, tenant_js: bytes) -> tuple[bytes, bytes]:
    """The full record and its hash."""
    record = pre + suffix(prev_hash, seq, tenant_js)
    return record, hashlib.sha256(record).digest()


@dataclass(frozen=True, slots=True)
class Position:
    """A point in a chain: the event ``seq`` and its hash (``seq`` 0 is the empty chain)."""

    seq: int
    hash: bytes


@dataclass(slots=True)
class _Suspect:
    seq: int
    pre: bytes
    stored: bytes
    candidates: dict[bytes, int]
    wanted: int = _WINDOW


@dataclass(slots=True)
class SegmentVerifier:
    """Checks one tenant's rows, fed in ``seq`` order, from ``start`` onwards.

    ``checkpoints`` maps a seq to the head hash a *valid* signed checkpoint recorded there.
    Each row must (1) follow the previous seq without a gap, (2) hash, together with the stored
    hash of the row before it, to its own stored hash, and (3) at a checkpointed seq, carry the
    checkpointed hash. A failure of (2) is diagnosed when the segment ends: if the row is an
    intact record of another position nearby, events were reordered; otherwise it was edited.
    """

    tenant: str
    start: Position
    checkpoints: Mapping[int, bytes] = field(default_factory=dict)
    max_problems: int = 100
    problems: list[Problem] = field(default_factory=list)
    events: int = 0
    last: Position = field(init=False)
    _tenant_js: bytes = field(init=False)
    _recent: deque[tuple[bytes, int]] = field(init=False)
    _suspects: list[_Suspect] = field(default_factory=list)
    _open: list[_Suspect] = field(default_factory=list)
    _dropped: int = 0

    def __post_init__(self) -> None:
        self.last = self.start
        self._tenant_js = tenant_json(self.tenant)
        self._recent = deque([(self.start.hash, self.start.seq)], maxlen=2 * _WINDOW + 1)

    def feed(self, rows: Sequence[Any]) -> None:
        """Rows of ``(seq, stored_hash, record_prefix)`` in seq order (``chain_rows`` gives them).

        This loop is the hot path of ``verify``: per event one ``%`` format, one SHA-256 and a
        few comparisons.
        """
        sha256 = hashlib.sha256
        tjs = self._tenant_js
        fmt = SUFFIX
        checkpoints = self.checkpoints
        recent = self._recent
        last_seq, prev = self.last.seq, self.last.hash
        for seq, stored, pre in rows:
            if seq != last_seq + 1:
                self._gap(last_seq, seq)
            elif sha256(pre + fmt % (hexlify(prev), seq, tjs)).digest() != stored:
                self._suspect(seq, pre, stored)
            if checkpoints and seq in checkpoints and checkpoints[seq] != stored:
                self._problem(
                    ProblemKind.checkpoint_mismatch,
                    seq,
                    "the stored hash differs from the signed checkpoint's: the chain up to here "
                    "was rewritten",
                )
            if self._open:
                self._watch(seq, stored)
            recent.append((stored, seq))
            last_seq, prev = seq, stored
        self.events += len(rows)
        self.last = Position(last_seq, prev)

    def finish(self) -> list[Problem]:
        """Diagnose suspects and return every problem found (capped at ``max_problems``)."""
        for suspect in self._suspects:
            written_as = _diagnose(suspect, self._tenant_js)
            if written_as == suspect.seq:
                continue  # intact, but its predecessor was moved away: reported at that row
            if written_as is not None:
                self._problem(
                    ProblemKind.reordered,
                    suspect.seq,
                    f"holds the intact event written as seq {written_as}: events were reordered",
                )
            else:
                self._problem(
                    ProblemKind.edited,
                    suspect.seq,
                    "the event does not hash to its stored hash: it (or the stored hash of the "
                    "event before it) was changed",
                )
        self._suspects.clear()
        self.problems.sort(key=lambda p: p.seq or 0)
        if self._dropped:
            self.problems.append(
                Problem(
                    tenant=self.tenant,
                    kind=ProblemKind.too_many,
                    detail=f"{self._dropped} more problem(s) not listed",
                )
            )
            self._dropped = 0
        return self.problems

    def _gap(self, last_seq: int, seq: int) -> None:
        if seq > last_seq + 1:
            span = f"{last_seq + 1}" if seq == last_seq + 2 else f"{last_seq + 1}..{seq - 1}"
            self._problem(
                ProblemKind.deleted, last_seq + 1, f"event(s) {span} are missing: deleted"
            )
        else:  # only possible if the primary key was dropped and seqs duplicated
            self._problem(ProblemKind.reordered, seq, f"seq {seq} appears after {last_seq}")

    def _suspect(self, seq: int, pre: bytes, stored: bytes) -> None:
        if len(self._suspects) >= self.max_problems:
            self._dropped += 1
            return
        suspect = _Suspect(seq, pre, stored, dict(self._recent))
        self._suspects.append(suspect)
        self._open.append(suspect)

    def _watch(self, seq: int, stored: bytes) -> None:
        """Give open suspects the hashes of the rows that follow them (their window's far side)."""
        for suspect in self._open:
            suspect.candidates[stored] = seq
            suspect.wanted -= 1
        self._open = [s for s in self._open if s.wanted > 0]

    def _problem(self, kind: ProblemKind, seq: int | None, detail: str) -> None:
        if len(self.problems) >= self.max_problems:
            self._dropped += 1
            return
        self.problems.append(Problem(tenant=self.tenant, kind=kind, seq=seq, detail=detail))


def _diagnose(suspect: _Suspect, tenant_js: bytes) -> int | None:
    """The seq this row's record was written for, if it is intact and belongs nearby.

    Its own seq (with another predecessor from the window) means the row is intact and the event
    before it was moved elsewhere; another seq means the row itself was moved.
    """
    candidates = range(max(1, suspect.seq - _WINDOW), suspect.seq + _WINDOW + 1)
    for candidate in sorted(candidates, key=lambda c: abs(c - suspect.seq)):
        for prev in suspect.candidates:
            if link(suspect.pre, prev, candidate, tenant_js)[1] == suspect.stored:
                return candidate
    return None
