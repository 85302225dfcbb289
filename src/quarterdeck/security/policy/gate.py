"""The policy gate: every tool call is checked here before it runs.

Construction does all the expensive work -- read and merge the rule files, expand lists and
macros, compile every glob and regex, compile each rule for each tool it can concern, index
rules by tool and by what can trigger them (:mod:`.prefilter`) -- and raises one
:class:`~quarterdeck.exceptions.ConfigError` listing every problem. :meth:`PolicyGate.check`
is then pure (no I/O, no clock, no randomness), never raises, and costs a normalisation of the
call, a glob "heat" pass over its paths, plus one predicate per candidate rule. If
normalisation itself hits a bug, the call is *denied* (fail closed) with rule id
``gate.internal-error``.

Pass the run's workspace root as an absolute path; relative paths in tool calls are judged
against it (``/workspace`` when none is given).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
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
from quarterdeck.security.policy.matchers import NEVER, Compiler, Invalid
from quarterdeck.security.policy.paths import DEFAULT_ROOT, compile_globs
from quarterdeck.security.policy.prefilter import ALWAYS, Need, Prefilter, RuleIndex, Summary

if TYPE_CHECKING:
    from quarterdeck.config import Settings

log = structlog.get_logger(__name__)
EgressMode = Literal["blocklist", "allowlist"]


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled, enabled rule. ``variants`` holds, for the tools named in its conditions,
    the predicate compiled for calls to that tool (``tool:`` tests settled, see
    :mod:`.matchers`; :data:`~.matchers.NEVER` when it cannot match that tool at all): the
    gate's per-tool indexes use those, ``predicate`` is the general one."""

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
    variants: dict[str, Pred] = field(default_factory=dict)

    def for_tool(self, tool: str) -> Rule | None:
        """This rule as the index of ``tool`` holds it; None if it cannot match that tool."""
        variant = self.variants.get(tool)
        if variant is None:
            return self
        return None if variant is NEVER else replace(self, predicate=variant)


def _compile(
    ruleset: R.RuleSet,
    compiler: Compiler,
    errors: list[tuple[str, str]],
) -> list[Rule]:
    prefilter = Prefilter(compiler.strings, ruleset.macros)
    per_tool = {tool: compiler.for_tool(tool) for tool in KNOWN_TOOLS}
    compiled: list[Rule] = []
    for order, spec in enumerate(ruleset.rules.values()):
        try:
            predicate = compiler.match(spec.match, f"{spec.source}.match")  # validates it all
            unless = tuple(
                compiler.match(u, f"{spec.source}.unless[{i}]") for i, u in enumerate(spec.unless)
            )
        except Invalid as exc:
            errors.append((exc.where, exc.why))
            continue
        if spec.enabled:
            tools = _static_tools(spec.match, ruleset.macros)
            variants = (
                {
                    tool: per_tool[tool].match(spec.match, f"{spec.source}.match")
                    for tool in (KNOWN_TOOLS if tools is None else sorted(tools))
                }
                if _names_tool(spec.match, ruleset.macros)
                else {}
            )
            compiled.append(
                Rule(
                    spec.id,
                    " ".join(spec.description.split()),
                    cast(Action, spec.decision),
                    cast(Severity, spec.severity),
                    tuple(spec.tags),
                    order,
                    tools,
                    predicate,
                    unless,
                    prefilter.of_match(spec.match),
                    variants,
                )
            )
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


def _names_tool(node: Any, macros: dict[str, tuple[Any, str]], depth: int = 0) -> bool:
    """Does the match test the tool anywhere (itself, nested, or in a macro it uses)?"""
    if depth > 16:
        return True  # too deep to tell (the compiler would have refused a macro cycle)
    if isinstance(node, list):
        return any(_names_tool(item, macros, depth + 1) for item in node)
    if not isinstance(node, dict):
        return False
    if "tool" in node:
        return True
    names = node.get("macro")
    for name in names if isinstance(names, list) else [names]:
        if (
            isinstance(name, str)
            and name in macros
            and _names_tool(macros[name][0], macros, depth + 1)
        ):
            return True
    return any(
        _names_tool(node[key], macros, depth + 1) for key in ("any", "all", "not") if key in node
    )


class PolicyGate:
    """Decides ``allow`` / ``flag`` / ``require_approval`` / ``deny`` for each tool call."""

    def __init__(
        self,
        rules: list[Rule],
        *,
        egress_mode: EgressMode,
        egress_allowlist: Iterable[str],
        sources: list[str],
        hot_globs: Iterable[str] = ("**",),
        hot_hosts: Iterable[str] | None = None,
    ) -> None:
        self.rules = rules
        self._hot = compile_globs(sorted(set(hot_globs)) or ["**"])
        # None: unknown, so every host counts as listed (see Facts.listed)
        self._listed = HostList(sorted(set(hot_hosts))) if hot_hosts is not None else None
        self.egress_mode: EgressMode = egress_mode
        self.egress_allowlist = tuple(egress_allowlist)
        self.sources = sources
        self._allow = HostList(self.egress_allowlist)
        self._by_tool = {tool: RuleIndex(self._for_tool(tool), egress_mode) for tool in KNOWN_TOOLS}
        self._generic = RuleIndex([(r, r.need) for r in rules if r.tools is None], egress_mode)
        self._roots: dict[str, str] = {}

    def _for_tool(self, tool: str) -> list[tuple[Rule, Need]]:
        """The rules a call to ``tool`` can trigger, with their predicates for that tool."""
        found: list[tuple[Rule, Need]] = []
        for rule in self.rules:
            if rule.tools is None or tool in rule.tools:
                variant = rule.for_tool(tool)
                if variant is not None:
                    found.append((variant, variant.need))
        return found

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        extra_rules: Path | None = None,
        *,
        egress_mode: str = "blocklist",
        egress_allowlist: Iterable[str] = (),
    ) -> PolicyGate:
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
        return cls(
            compiled,
            egress_mode=cast(EgressMode, egress_mode),
            egress_allowlist=allowlist,
            sources=sources,
            hot_globs=compiler.hot_globs,
            hot_hosts=compiler.hot_hosts,
        )

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
    def _root(self, workspace: Path) -> str:
        """The normalised workspace root: a run checks every call against the same one, so
        it is worked out once per workspace (a handful per process), not once per call."""
        key = str(workspace)
        root = self._roots.get(key)
        if root is None:
            if len(self._roots) >= 1024:
                self._roots.clear()
            root = self._roots[key] = posixpath.normpath(key)
        return root

    def check(
        self, tool: str, tool_input: Mapping[str, Any], *, workspace: Path | None = None
    ) -> Decision:
        """The decision for one tool call. Pure and never raises (fails closed)."""
        try:
            root = self._root(workspace) if workspace is not None else DEFAULT_ROOT
            if not isinstance(tool_input, Mapping):
                tool_input = {}
            facts = normalise(tool, tool_input, root, self._allow, self.egress_mode)
            heat = self._hot.heat
            for path in facts.paths:
                heat(path)
            if facts.hosts and self._listed is not None:
                listed = self._listed
                facts.listed = any(h.host in listed for h in facts.hosts)
            matches: list[RuleMatch] = []
            for rule in self._by_tool.get(tool, self._generic).candidates(Summary.of(facts)):
                evidence = rule.predicate(facts)
                if evidence is None:
                    continue
                if rule.unless and any(u(facts) is not None for u in rule.unless):
                    continue
                matches.append(
                    RuleMatch(
                        rule.id,
                        rule.action,
                        rule.severity,
                        rule.description,
                        rule.tags,
                        evidence,
                        rule.order,
                    )
                )
            return combine(matches)
        except Exception as exc:  # fail closed; a gate bug must not open the gate
            log.exception("policy.check_failed", tool=tool)
            return internal_error(exc)
