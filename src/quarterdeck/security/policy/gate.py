"""The policy gate: every tool call is checked here before it runs.

Construction does all the expensive work -- read and merge the rule files, expand lists and
macros, compile every glob and regex, index rules by tool and by the programs that can trigger
them (:mod:`.prefilter`) -- and raises one :class:`~quarterdeck.exceptions.ConfigError`
listing every problem. :meth:`PolicyGate.check` is then pure (no I/O, no clock, no
randomness), never raises, and costs a normalisation of the call plus one predicate per
candidate rule. If normalisation itself hits a bug, the call is *denied* (fail closed) with
rule id ``gate.internal-error``.

Pass the run's workspace root as an absolute path; relative paths in tool calls are judged
against it (``/workspace`` when none is given).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import structlog

from quarterdeck.exceptions import ConfigError
from quarterdeck.security.policy import rules as R
from quarterdeck.security.policy import secrets
from quarterdeck.security.policy.combinators import Pred
from quarterdeck.security.policy.decision import (
    Action,
    Decision,
    RuleMatch,
    Severity,
    combine,
    internal_error,
)
from quarterdeck.security.policy.facts import KNOWN_TOOLS, normalise
from quarterdeck.security.policy.hosts import HostList
from quarterdeck.security.policy.matchers import Compiler, Invalid
from quarterdeck.security.policy.paths import DEFAULT_ROOT, compile_globs
from quarterdeck.security.policy.prefilter import ALWAYS, Need, Prefilter, RuleIndex, Summary

if TYPE_CHECKING:
    from quarterdeck.config import Settings

log = structlog.get_logger(__name__)
EgressMode = Literal["blocklist", "allowlist"]


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled, enabled rule."""

    id: str
    description: str
    action: Action
    severity: Severity
    tags: tuple[str, ...]
    order: int
    tools: frozenset[str] | None
    predicate: Pred
    unless: tuple[Pred, ...]
    need: Need = field(default_factory=lambda: list(ALWAYS))


def _compile(ruleset: R.RuleSet, compiler: Compiler, errors: list[tuple[str, str]],
             ) -> list[Rule]:  # fmt: skip
    prefilter = Prefilter(compiler.strings, ruleset.macros)
    compiled: list[Rule] = []
    for order, spec in enumerate(ruleset.rules.values()):
        try:
            predicate = compiler.match(spec.match, f"{spec.source}.match")
            unless = tuple(compiler.match(u, f"{spec.source}.unless[{i}]")
                           for i, u in enumerate(spec.unless))  # fmt: skip
        except Invalid as exc:
            errors.append((exc.where, exc.why))
            continue
        if spec.enabled:
            compiled.append(Rule(
                spec.id, " ".join(spec.description.split()), cast(Action, spec.decision),
                cast(Severity, spec.severity), tuple(spec.tags), order,
                _static_tools(spec.match, ruleset.macros), predicate, unless,
                prefilter.of_match(spec.match),
            ))  # fmt: skip
    for body, where in ruleset.macros.values():
        try:  # unused macros are still checked, so a typo does not lurk until first use
            compiler.match(body, where)
        except Invalid as exc:
            errors.append((exc.where, exc.why))
    return compiled


def _static_tools(match: Any, macros: dict[str, tuple[Any, str]]) -> frozenset[str] | None:
    """The tools a rule can ever match, from a top-level ``tool:`` (directly or through a
    top-level macro), so ``check`` only evaluates rules that can apply; None means any."""
    if not isinstance(match, dict):
        return None
    if "tool" in match:
        value = match["tool"]
        return frozenset(value if isinstance(value, list) else [value])
    names = match.get("macro")
    for name in names if isinstance(names, list) else [names]:
        if isinstance(name, str) and name in macros:
            found = _static_tools(macros[name][0], macros)
            if found is not None:
                return found
    return None


class PolicyGate:
    """Decides ``allow`` / ``flag`` / ``require_approval`` / ``deny`` for each tool call."""

    def __init__(self, rules: list[Rule], *, egress_mode: EgressMode,
                 egress_allowlist: Iterable[str], sources: list[str],
                 hot_globs: Iterable[str] = ("**",)) -> None:  # fmt: skip
        self.rules = rules
        self._hot = compile_globs(sorted(set(hot_globs)) or ["**"])
        self.egress_mode: EgressMode = egress_mode
        self.egress_allowlist = tuple(egress_allowlist)
        self.sources = sources
        self._allow = HostList(self.egress_allowlist)
        self._by_tool = {
            tool: RuleIndex([(r, r.need) for r in rules if r.tools is None or tool in r.tools])
            for tool in KNOWN_TOOLS
        }
        self._generic = RuleIndex([(r, r.need) for r in rules if r.tools is None])

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def load(cls, extra_rules: Path | None = None, *, egress_mode: str = "blocklist",
             egress_allowlist: Iterable[str] = ()) -> PolicyGate:  # fmt: skip
        """Built-in rules, with ``extra_rules`` merged over them (Falco style)."""
        errors: list[tuple[str, str]] = []
        if egress_mode not in ("blocklist", "allowlist"):
            errors.append(("policy_egress_mode", f"{egress_mode!r} is not blocklist or allowlist"))
        allowlist = [str(h) for h in egress_allowlist]
        for host in allowlist:
            if not host.strip() or any(c in host for c in " /\t"):
                errors.append(("policy_egress_allowlist", f"{host!r} is not a host name or glob"))
        secrets.prepare()  # import detect-secrets and compile its patterns now, not mid-run
        ruleset = R.build(extra_rules, errors)
        compiler = Compiler(ruleset.lists, ruleset.macros)
        compiled = _compile(ruleset, compiler, errors)
        if errors:
            raise ConfigError(sorted(set(errors), key=errors.index))
        sources = ["built-in rules.yaml"] + ([str(extra_rules)] if extra_rules else [])
        return cls(compiled, egress_mode=cast(EgressMode, egress_mode),
                   egress_allowlist=allowlist, sources=sources,
                   hot_globs=compiler.hot_globs)  # fmt: skip

    @classmethod
    def from_settings(cls, settings: Settings) -> PolicyGate:
        """The gate as configured: ``policy_rules_file``, ``policy_egress_mode``,
        ``policy_egress_allowlist``."""
        return cls.load(
            settings.policy_rules_file,
            egress_mode=settings.policy_egress_mode,
            egress_allowlist=settings.policy_egress_allowlist,
        )

    # -- checking -------------------------------------------------------------------------
    def check(self, tool: str, tool_input: Mapping[str, Any], *,
              workspace: Path | None = None) -> Decision:  # fmt: skip
        """The decision for one tool call. Pure and never raises (fails closed)."""
        try:
            root = posixpath.normpath(str(workspace)) if workspace is not None else DEFAULT_ROOT
            if not isinstance(tool_input, Mapping):
                tool_input = {}
            facts = normalise(tool, tool_input, root, self._allow, self.egress_mode)
            heat = self._hot.heat
            for path in facts.paths:
                heat(path)
            matches: list[RuleMatch] = []
            for rule in self._by_tool.get(tool, self._generic).candidates(Summary.of(facts)):
                evidence = rule.predicate(facts)
                if evidence is None:
                    continue
                if rule.unless and any(u(facts) is not None for u in rule.unless):
                    continue
                matches.append(RuleMatch(rule.id, rule.action, rule.severity, rule.description,
                                         rule.tags, evidence, rule.order))  # fmt: skip
            return combine(matches)
        except Exception as exc:  # fail closed; a gate bug must not open the gate
            log.exception("policy.check_failed", tool=tool)
            return internal_error(exc)
