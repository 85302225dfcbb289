"""The policy gate: every tool call an agent makes is judged here before it runs.

::

    from quarterdeck.security.policy import PolicyGate, Decision, redact

    gate = PolicyGate.from_settings(settings)      # built-ins + settings.policy_rules_file
    decision = gate.check("run_command", {"command": "cat ~/.ssh/id_rsa"}, workspace=ws)
    decision.action        # "allow" | "deny" | "flag" | "require_approval"
    redact(tool_output)    # Redaction(text with [REDACTED:<type>], findings)

Rules are data (``rules.yaml``, format in ``RULES.md``); users extend or override them with a
Falco-style file. Modules: :mod:`.shell` / :mod:`.argv` / :mod:`.programs` /
:mod:`.commands` parse commands, :mod:`.paths` and :mod:`.hosts` normalise paths and
destinations (:mod:`.globs` matches paths against globs), :mod:`.facts` reduces a call to
facts, :mod:`.rules` loads and merges rule files, :mod:`.matchers`, :mod:`.conditions` and
:mod:`.combinators` compile them (:mod:`.literals` puts costly regexes behind a literal test),
:mod:`.prefilter` skips rules that cannot match, :mod:`.gate` decides, :mod:`.decision` is its answer, :mod:`.secrets` finds and
redacts secrets, :mod:`.corpus` and :mod:`.cli` evaluate the gate against a labelled corpus.

The names below are imported on first use (:mod:`quarterdeck.kit.lazy`): every ``quarterdeck``
command goes through this package for ``policy.cli``, and the gate loads its rules and YAML.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quarterdeck.kit.lazy import lazy_exports

if TYPE_CHECKING:
    from quarterdeck.security.policy.decision import Action, Decision, RuleMatch, Severity
    from quarterdeck.security.policy.gate import PolicyGate, Rule
    from quarterdeck.security.policy.secrets import Finding, Redaction, find_secrets, redact

__all__ = [
    "Action",
    "Decision",
    "Finding",
    "PolicyGate",
    "Redaction",
    "Rule",
    "RuleMatch",
    "Severity",
    "find_secrets",
    "redact",
]
__getattr__ = lazy_exports(
    __name__,
    {
        "quarterdeck.security.policy.decision": ("Action", "Decision", "RuleMatch", "Severity"),
        "quarterdeck.security.policy.gate": ("PolicyGate", "Rule"),
        "quarterdeck.security.policy.secrets": ("Finding", "Redaction", "find_secrets", "redact"),
    },
)
