"""Cheap necessary conditions, so ``check`` only evaluates rules that can match.

Most rules are about particular programs (``rm``, ``chmod``, ``nc``...) and most calls run
none of them, yet evaluating a rule's full predicate over every segment costs a chain of
Python calls. From each ``match`` mapping we derive, at load time, a *necessary* condition
over a tiny :class:`Summary` of the call (which program names occur, whether there are paths
or hosts at all), in the spirit of Falco indexing rules by event type. It may say "maybe" when
the rule cannot match, never "no" when it can: ``any`` is the union of its branches; ``not``,
``secret`` and ``input_matches`` are "always maybe".

A condition is kept in disjunctive normal form -- a list of :class:`Clause`, any of which may
hold -- so that rules whose only requirement is "one of these programs runs" can be indexed by
program name (:class:`RuleIndex`) and never even looked at otherwise.

Besides program names, a clause can require what the summary records about the call's items,
because a ``path``, ``host`` or ``command`` condition can only hold for an item that has it:
a path with one of the ``access`` kinds or ``location`` values it names (and, for ``matches``,
a path the gate found *hot* for those globs' kind, see :meth:`~.paths.GlobSet.heat`), a host
with one of the ``scope`` values, an IP literal (``ip: true``) or, for ``in:``, a host on some
rule's ``in`` list (``Facts.listed``), a segment with a boolean fact set (``elevated: true``,
``runs_downloaded: true``...), ``truncated: true``; ``egress_mode`` is settled when the index
is built, since a gate has one mode. Every segment a rule can reach
through ``executes`` / ``fed_by`` is itself one of the call's segments, and every path and host
of a segment is one of the call's, so the summary of the whole call is a sound bound.

Summaries and clauses are bit sets (:data:`BIT`), so testing a clause is integer arithmetic.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from quarterdeck.security.policy.facts import Facts
from quarterdeck.security.policy.hosts import SCOPES
from quarterdeck.security.policy.paths import glob_regex

R = TypeVar("R")


SEGMENT_FLAGS = ("elevated", "stdin_script", "runs_downloaded", "uploads", "decoded")
"""Boolean segment facts a ``command`` condition can require (``elevated: true``...)."""

# One bit per thing a call can have; a Summary is their union, a Clause a test over them.
_FEATURES = (
    "paths",
    "hosts",
    "truncated",
    "ip",
    "hot_anchored",
    "hot_searched",
    "listed",
    *SEGMENT_FLAGS,
    *(f"access:{a}" for a in ("read", "write", "list")),
    *(f"location:{x}" for x in ("workspace", "outside", "unknown")),
    *(f"scope:{x}" for x in SCOPES),
)
BIT = {name: 1 << i for i, name in enumerate(_FEATURES)}
_ACCESS = {k[7:]: v for k, v in BIT.items() if k.startswith("access:")}
_LOCATION = {k[9:]: v for k, v in BIT.items() if k.startswith("location:")}
_SCOPE = {k[6:]: v for k, v in BIT.items() if k.startswith("scope:")}
_ELEVATED, _STDIN, _RUNS, _UPLOADS, _DECODED = (BIT[k] for k in SEGMENT_FLAGS)
_HOT_ANCHORED, _HOT_SEARCHED = BIT["hot_anchored"], BIT["hot_searched"]


class Summary:
    """What a call has, in brief: its program ``names`` and a bit set (:data:`BIT`) of the
    rest -- paths, hosts, the access kinds and locations of its paths, the scopes of its hosts
    and whether one is an IP literal, the boolean segment facts true of some segment, and
    ``truncated``. Built once per call, so it is a plain object, not a dataclass."""

    __slots__ = ("bits", "names")

    def __init__(self, names: set[str], bits: int) -> None:
        self.names = names
        self.bits = bits

    @classmethod
    def of(cls, facts: Facts) -> Summary:
        bits = BIT["truncated"] if facts.truncated else 0
        names = set()
        for s in facts.segments:
            names.add(s.name)
            if s.elevated:
                bits |= _ELEVATED
            if s.stdin_script:
                bits |= _STDIN
            if s.runs_downloaded:
                bits |= _RUNS
            if s.uploads:
                bits |= _UPLOADS
            if s.decoded:
                bits |= _DECODED
        if facts.paths:
            bits |= BIT["paths"]
            for p in facts.paths:
                bits |= _ACCESS[p.access] | _LOCATION[p.location]
                if p.hot_anchored:
                    bits |= _HOT_ANCHORED
                if p.hot_searched:
                    bits |= _HOT_SEARCHED
        if facts.hosts:
            bits |= BIT["hosts"] | (BIT["listed"] if facts.listed else 0)
            for h in facts.hosts:
                bits |= _SCOPE[h.scope] | (BIT["ip"] if h.is_ip else 0)
        return cls(names, bits)


@dataclass(frozen=True, slots=True)
class Clause:
    """All of: for each entry of ``names``, some program name is in it (or matches its glob
    regex); every feature in ``required`` (a bit set); for each entry of ``one_of`` (a bit set
    too), at least one of its features; the gate runs in ``egress`` mode, if set."""

    names: tuple[tuple[frozenset[str], re.Pattern[str] | None], ...] = ()
    required: int = 0
    one_of: tuple[int, ...] = ()
    egress: str | None = None

    def holds(self, s: Summary) -> bool:
        bits = s.bits
        if bits & self.required != self.required:
            return False
        for wanted in self.one_of:
            if not bits & wanted:
                return False
        return _names_hold(self.names, s.names)

    def __and__(self, other: Clause) -> Clause:
        if self.egress is not None and other.egress not in (None, self.egress):
            egress: str | None = "<never>"  # both modes at once: cannot hold
        else:
            egress = self.egress or other.egress
        return Clause(
            self.names + other.names,
            self.required | other.required,
            self.one_of + other.one_of,
            egress,
        )

    @property
    def trivial(self) -> bool:
        """Requires nothing: the rule is always a candidate."""
        return self == _EMPTY


def _names_hold(
    wanted: tuple[tuple[frozenset[str], re.Pattern[str] | None], ...], names: set[str]
) -> bool:
    for exact, pattern in wanted:
        if exact.isdisjoint(names) and not (
            pattern is not None and any(pattern.match(n) for n in names)
        ):
            return False
    return True


_EMPTY = Clause()
Need = list[Clause]  # any clause may hold; [] is "never", [Clause()] is "always maybe"
ALWAYS: Need = [_EMPTY]


def _and(needs: Iterable[Need]) -> Need:
    out = ALWAYS
    for need in needs:
        out = [a & b for a in out for b in need][:32]  # bounded: a wider OR is still sound
    return out if len(out) < 32 else ALWAYS


class Prefilter:
    """Derives the :data:`Need` of a match. ``strings`` expands ``$list`` references and
    ``macros`` resolves ``macro:`` (both shared with the :class:`~.matchers.Compiler`, which
    has already validated everything)."""

    def __init__(
        self, strings: Callable[[Any, str], list[str]], macros: dict[str, tuple[Any, str]]
    ) -> None:
        self.strings = strings
        self.macros = macros

    def of_match(self, node: Any, depth: int = 0) -> Need:
        if not isinstance(node, dict) or depth > 16:
            return ALWAYS
        return _and(self._top(k, v, depth) for k, v in node.items())

    def _top(self, key: str, value: Any, depth: int) -> Need:
        if key == "command":
            return self._command(value)
        if key in ("pipeline", "sequence") and isinstance(value, list):
            return _and(self._command(v) for v in value)
        if key == "path":
            return [self._path(value)]
        if key == "host":
            return [self._host(value)]
        if key == "truncated" and value is True:
            return [Clause(required=BIT["truncated"])]
        if key == "egress_mode" and isinstance(value, str):
            return [Clause(egress=value)]
        if key == "all" and isinstance(value, list):
            return _and(self.of_match(v, depth + 1) for v in value)
        if key == "any" and isinstance(value, list):
            union = [c for v in value for c in self.of_match(v, depth + 1)]
            return union if len(union) < 32 else ALWAYS
        if key == "macro":
            names = value if isinstance(value, list) else [value]
            return _and(
                self.of_match(self.macros[n][0], depth + 1) for n in names if n in self.macros
            )
        return ALWAYS

    def _command(self, node: Any) -> Need:
        if not isinstance(node, dict):
            return ALWAYS
        needs: list[Need] = []
        if "name" in node:
            names = self.strings(node["name"], "name")
            exact = frozenset(n for n in names if not any(c in n for c in "*?["))
            globs = [n for n in names if n not in exact]
            pattern = re.compile("|".join(fnmatch.translate(g) for g in globs)) if globs else None
            needs.append([Clause(names=((exact, pattern),))])
        for key in ("executes", "fed_by"):
            if key in node:
                needs.append(self._command(node[key]))
        if "path" in node:
            needs.append([self._path(node["path"])])
        if "host" in node:
            needs.append([self._host(node["host"])])
        flags = [BIT[k] for k in SEGMENT_FLAGS if node.get(k) is True]
        if flags:
            needs.append([Clause(required=sum(flags))])
        return _and(needs)

    def _one_of(self, node: Any, key: str, bits: dict[str, int]) -> tuple[int, ...]:
        """The bits of the values ``node[key]`` allows (one of them must be present); nothing
        when the key is absent, or names a value we have no bit for (then any item may do)."""
        if not isinstance(node, dict) or key not in node:
            return ()
        values = self.strings(node[key], key)
        if not all(v in bits for v in values):
            return ()
        return (sum({bits[v] for v in values}),)

    def _path(self, node: Any) -> Clause:
        return Clause(
            required=BIT["paths"],
            one_of=self._one_of(node, "access", _ACCESS)
            + self._one_of(node, "location", _LOCATION)
            + self._hot(node),
        )

    def _hot(self, node: Any) -> tuple[int, ...]:
        """``matches`` globs only match a path the gate found hot for their kind (anchored or
        searched): the gate heats every path against every rule's ``matches`` globs."""
        if not isinstance(node, dict) or "matches" not in node:
            return ()
        try:
            kinds = {glob_regex(glob)[0] for glob in self.strings(node["matches"], "matches")}
        except ValueError:  # not a glob: the compiler refused the rule already
            return ()
        return ((_HOT_ANCHORED if True in kinds else 0) | (_HOT_SEARCHED if False in kinds else 0),)

    def _host(self, node: Any) -> Clause:
        """``in:`` needs a host on some rule's ``in`` list (the gate checks the call's hosts
        against all of them at once: ``Facts.listed``)."""
        ip = isinstance(node, dict) and node.get("ip") is True
        listed = isinstance(node, dict) and "in" in node
        return Clause(
            required=BIT["hosts"] | (BIT["ip"] if ip else 0) | (BIT["listed"] if listed else 0),
            one_of=self._one_of(node, "scope", _SCOPE),
        )


class RuleIndex(Generic[R]):
    """Rules bucketed by what can trigger them: by program name when that is their only need;
    always when they need nothing; the rest grouped by their :data:`Need` (rules often share
    one, such as "a path written to"), which is tested once per group, clause by clause.
    Clauses that need another ``egress_mode`` than the gate's are dropped here, once.

    A clause's program-name requirements become bits too, above the :data:`BIT` features:
    each distinct (names, globs) requirement gets one, set for a call when one of its program
    names meets it, so a clause is tested with integer operations only."""

    def __init__(self, rules: list[tuple[R, Need]], egress_mode: str | None = None) -> None:
        self.by_name: dict[str, list[R]] = {}
        self.always: list[R] = []
        groups: dict[tuple[Clause, ...], list[R]] = {}
        for rule, need in rules:
            if not need:  # "never" is not expected from Prefilter; be conservative anyway
                self.always.append(rule)
                continue
            if egress_mode is not None:
                need = [c for c in need if c.egress in (None, egress_mode)]
                if not need:
                    continue  # needs the other egress mode: can never match in this gate
            if all(c.names and c.names[0][1] is None for c in need):
                # sound: whichever clause holds, its first program-name set meets the call's
                for name in {n for clause in need for n in clause.names[0][0]}:
                    self.by_name.setdefault(name, []).append(rule)
            elif any(clause.trivial for clause in need):
                self.always.append(rule)
            else:
                groups.setdefault(tuple(need), []).append(rule)
        self._name_bit: dict[tuple[frozenset[str], re.Pattern[str] | None], int] = {}
        self.groups = [
            (tuple((c.required | self._bits_of(c.names), c.one_of) for c in need), rules)
            for need, rules in groups.items()
        ]
        self._exact: dict[str, int] = {}
        self._globs: list[tuple[re.Pattern[str], int]] = []
        for (exact, pattern), bit in self._name_bit.items():
            for name in exact:
                self._exact[name] = self._exact.get(name, 0) | bit
            if pattern is not None:
                self._globs.append((pattern, bit))
        joined = "|".join(pattern.pattern for pattern, _ in self._globs)
        self._any_glob = re.compile(joined) if joined else None

    def _bits_of(self, wanted: tuple[tuple[frozenset[str], re.Pattern[str] | None], ...]) -> int:
        bits = 0
        for requirement in wanted:
            if requirement not in self._name_bit:
                self._name_bit[requirement] = 1 << (len(_FEATURES) + len(self._name_bit))
            bits |= self._name_bit[requirement]
        return bits

    def _names_bits(self, names: set[str]) -> int:
        """The name-requirement bits the call's program names meet (:func:`_names_hold`)."""
        bits = 0
        exact, any_glob = self._exact, self._any_glob
        for name in names:
            bits |= exact.get(name, 0)
            if any_glob is not None and any_glob.match(name):
                for pattern, bit in self._globs:
                    if pattern.match(name):
                        bits |= bit
        return bits

    def candidates(self, summary: Summary) -> list[R]:
        """Rules that may match; each appears once. (:meth:`Clause.holds`, as bit tests.)"""
        found = list(self.always)
        names = summary.names
        bits = summary.bits | self._names_bits(names) if self._name_bit else summary.bits
        for clauses, rules in self.groups:
            for required, one_of in clauses:
                if bits & required != required:
                    continue
                for mask in one_of:
                    if not bits & mask:
                        break
                else:
                    found.extend(rules)
                    break
        if len(names) == 1:
            for name in names:
                found.extend(self.by_name.get(name, ()))
            return found
        seen: set[int] = set()
        for name in names:
            for rule in self.by_name.get(name, ()):
                if id(rule) not in seen:
                    seen.add(id(rule))
                    found.append(rule)
        return found
