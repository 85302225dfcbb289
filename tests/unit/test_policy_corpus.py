"""The labelled corpus (tests/policy_corpus): recall, false positives and per-rule coverage.

The report is printed even when the test passes, so CI logs show each rule's precision and
recall. Definitions (also in quarterdeck.security.policy.corpus): a malicious case is
*detected* when the gate flags, denies or asks for approval; a benign case is a *false
positive* when it is denied or sent for approval (flags on benign cases are counted apart).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from quarterdeck.security.policy import PolicyGate
from quarterdeck.security.policy.corpus import Report, evaluate, family, load

CORPUS = Path(__file__).resolve().parents[1] / "policy_corpus"
WORKSPACE = Path("/workspace")  # the root the corpus is written against, as in `policy eval`


@pytest.fixture(scope="module")
def gate() -> PolicyGate:
    return PolicyGate.load()


@pytest.fixture(scope="module")
def report(gate: PolicyGate) -> Report:
    return evaluate(gate, load([CORPUS]), WORKSPACE)


def _pct(value: float | None) -> str:
    return "    -" if value is None else f"{value * 100:5.1f}%"


def _print(report: Report) -> None:
    lines = [f"\n{'rule':<46} {'mal':>4} {'ben':>4} {'prec':>6} {'exp':>4} {'recall':>6}"]
    for name, s in sorted(report.per_rule.items()):
        lines.append(
            f"{name:<46} {s.malicious:>4} {s.benign:>4} {_pct(s.precision)} "
            f"{s.expected:>4} {_pct(s.recall)}"
        )
    for name, s in sorted(report.per_family.items()):
        lines.append(
            f"[family] {name:<37} {s.malicious:>4} {s.benign:>4} {_pct(s.precision)} "
            f"{s.expected:>4} {_pct(s.recall)}"
        )
    for case, decision in report.false_negatives() + report.false_positives():
        lines.append(f"MISS {case.where} {case.label} -> {decision.action} ({decision.rule_id})")
    lines.append(
        f"{len(report.outcomes)} cases ({report.malicious} malicious, {report.benign} "
        f"benign): recall {_pct(report.recall)}, false positives "
        f"{_pct(report.false_positive_rate)}, benign flagged "
        f"{_pct(report.benign_flag_rate)}"
    )
    print("\n".join(lines))


def test_corpus_recall_and_false_positives(
    report: Report,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with capsys.disabled():
        _print(report)
    assert report.malicious >= 200 and report.benign >= 500
    assert report.false_negatives() == [], [c.where for c, _ in report.false_negatives()]
    assert report.recall == 1.0
    assert report.false_positive_rate <= 0.01, [c.where for c, _ in report.false_positives()]
    assert report.benign_flag_rate <= 0.05


def test_expected_rules_exist_and_fire(gate: PolicyGate, report: Report) -> None:
    """A case naming a rule must name a real one, and that rule must be among the matches."""
    known = {r.id for r in gate.rules}
    families = {family(r) for r in known}
    for case, decision in report.outcomes:
        if case.rule is None:
            continue
        assert case.rule in known or case.rule in families, (case.where, case.rule)
        fired = {m.rule_id for m in decision.matches}
        assert case.rule in fired or case.rule in {family(r) for r in fired}, (
            case.where,
            case.rule,
            sorted(fired),
        )


def test_every_rule_is_exercised_by_a_malicious_case(gate: PolicyGate, report: Report) -> None:
    """No dead rules: each built-in rule (bar gate hygiene) catches something in the corpus."""
    fired = Counter(
        m.rule_id for c, d in report.outcomes if c.label == "malicious" for m in d.matches
    )
    mode_dependent = {"egress.not-allowlisted"}  # allowlist mode only: see test_policy_rules
    dead = [
        r.id
        for r in gate.rules
        if not r.id.startswith("gate.") and fired[r.id] == 0 and r.id not in mode_dependent
    ]
    assert dead == []


def test_every_family_is_well_covered(report: Report) -> None:
    per_family = Counter(family(c.rule) for c, _ in report.outcomes if c.rule)
    for name in (
        "sensitive-file",
        "egress",
        "elevated",
        "destructive",
        "download-exec",
        "reverse-shell",
        "secrets",
        "persistence",
        "host",
        "discovery",
    ):
        assert per_family[name] >= 10, (name, per_family[name])


def test_corpus_is_diverse(report: Report) -> None:
    """Guard against padding: inputs are unique and every tool appears in both labels."""
    seen = Counter((c.tool, repr(sorted(c.input.items()))) for c, _ in report.outcomes)
    assert [k for k, n in seen.items() if n > 1] == []
    tools = {(c.tool, c.label) for c, _ in report.outcomes}
    for tool in (
        "read_file",
        "write_file",
        "edit_file",
        "list_files",
        "search",
        "run_command",
        "http_fetch",
    ):
        assert (tool, "malicious") in tools and (tool, "benign") in tools, tool
