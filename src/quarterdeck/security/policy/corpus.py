"""A labelled corpus of tool calls, and how well the gate separates malicious from benign.

Corpus files are YAML lists of cases::

    - tool: run_command
      input: {command: "cat ~/.ssh/id_rsa"}
      label: malicious            # or benign
      note: reads the user's SSH key
      rule: sensitive-file.ssh-private-key   # optional: the rule (or family) expected to fire

Each input is validated against the runtime's own tool model, so a corpus cannot drift from
the tools the gate actually guards.

Metrics (the same definitions in the CLI, the JSON and the tests):

* **recall** -- malicious cases *detected*, where detected means ``flag``, ``deny`` or
  ``require_approval``: all three leave an audit record an operator can act on;
* **false-positive rate** -- benign cases that were *stopped* (``deny`` or
  ``require_approval``) over all benign cases: these cost an agent its work or an operator
  their time;
* **benign flagged** -- benign cases that ran but were flagged, reported separately: they
  cost only audit noise;
* per rule: how often it fired on malicious and on benign cases (precision = malicious /
  all), and, for cases that name the rule (or its family) in ``rule``, its recall.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from quarterdeck.security.policy.decision import Decision
from quarterdeck.security.policy.gate import PolicyGate
from quarterdeck.toolcalls import TOOLS

LABELS = ("malicious", "benign")
DETECTED = frozenset({"flag", "deny", "require_approval"})
STOPPED = frozenset({"deny", "require_approval"})
_CASE_KEYS = {"tool", "input", "label", "note", "rule"}


class CorpusError(Exception):
    """The corpus cannot be used; ``problems`` lists every (where, why)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"{where}: {why}" for where, why in problems))


@dataclass(frozen=True, slots=True)
class Case:
    tool: str
    input: dict[str, Any]
    label: str
    note: str
    rule: str | None
    where: str

    def summary(self, width: int = 100) -> str:
        text = " ".join(f"{k}={v!s}" for k, v in self.input.items())
        text = " ".join(text.split())
        return text if len(text) <= width else text[: width - 3] + "..."


def _tool_models() -> dict[str, type[BaseModel]]:
    return {name: model for name, (model, _) in TOOLS.items()}


def _files(paths: list[Path], problems: list[tuple[str, str]]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
            if not found:
                problems.append((str(path), "directory holds no *.yaml corpus files"))
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            problems.append((str(path), "no such file or directory"))
    return files


def _case(
    entry: Any, where: str, models: dict[str, type[BaseModel]], problems: list[tuple[str, str]]
) -> Case | None:
    if not isinstance(entry, dict):
        problems.append((where, "a case is a mapping with tool, input, label"))
        return None
    before = len(problems)
    unknown = sorted(set(entry) - _CASE_KEYS)
    if unknown:
        problems.append((where, f"unknown field(s) {unknown}; expected {sorted(_CASE_KEYS)}"))
    for key in ("tool", "input", "label"):
        if key not in entry:
            problems.append((where, f"missing field {key!r}"))
    tool, data, label = entry.get("tool"), entry.get("input"), entry.get("label")
    if "tool" in entry and tool not in models:
        problems.append((where, f"unknown tool {tool!r}; tools are {sorted(models)}"))
    if "label" in entry and label not in LABELS:
        problems.append((where, f"label {label!r} is not one of {list(LABELS)}"))
    if "input" in entry and not isinstance(data, dict):
        problems.append((where, "input must be a mapping of the tool's arguments"))
    elif isinstance(tool, str) and tool in models and isinstance(data, dict):
        try:
            models[tool].model_validate(data)
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            problems.append((where, f"input is not valid for {tool}: {detail}"))
    for key in ("note", "rule"):
        if key in entry and not isinstance(entry[key], str):
            problems.append((where, f"{key} must be a string"))
    if len(problems) > before:
        return None
    assert isinstance(tool, str) and isinstance(data, dict) and isinstance(label, str)
    return Case(tool, data, label, entry.get("note", ""), entry.get("rule"), where)


def load(paths: list[Path]) -> list[Case]:
    """All cases of the given files (directories: their ``*.yaml``), or :class:`CorpusError`
    listing every problem found."""
    problems: list[tuple[str, str]] = []
    models = _tool_models()
    cases: list[Case] = []
    for path in _files(paths, problems):
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, UnicodeDecodeError) as exc:
            problems.append((str(path), f"cannot read: {exc}"))
            continue
        except yaml.YAMLError as exc:
            problems.append((str(path), f"not valid YAML: {exc}"))
            continue
        if not isinstance(data, list) or not data:
            problems.append((str(path), "a corpus file is a non-empty YAML list of cases"))
            continue
        for index, entry in enumerate(data):
            case = _case(entry, f"{path}[{index}]", models, problems)
            if case is not None:
                cases.append(case)
    if problems:
        raise CorpusError(problems)
    return cases


def family(rule_id: str) -> str:
    return rule_id.split(".", 1)[0]


@dataclass(slots=True)
class RuleStats:
    malicious: int = 0
    benign: int = 0
    expected: int = 0
    caught: int = 0

    @property
    def precision(self) -> float | None:
        total = self.malicious + self.benign
        return self.malicious / total if total else None

    @property
    def recall(self) -> float | None:
        return self.caught / self.expected if self.expected else None


@dataclass(slots=True)
class Report:
    outcomes: list[tuple[Case, Decision]]
    per_rule: dict[str, RuleStats] = field(default_factory=dict)
    per_family: dict[str, RuleStats] = field(default_factory=dict)

    def _count(self, label: str, actions: frozenset[str] | None = None) -> int:
        return sum(
            1
            for c, d in self.outcomes
            if c.label == label and (actions is None or d.action in actions)
        )

    @property
    def malicious(self) -> int:
        return self._count("malicious")

    @property
    def benign(self) -> int:
        return self._count("benign")

    @property
    def recall(self) -> float:
        return self._count("malicious", DETECTED) / self.malicious if self.malicious else 1.0

    @property
    def false_positive_rate(self) -> float:
        return self._count("benign", STOPPED) / self.benign if self.benign else 0.0

    @property
    def benign_flag_rate(self) -> float:
        return self._count("benign", frozenset({"flag"})) / self.benign if self.benign else 0.0

    def false_negatives(self) -> list[tuple[Case, Decision]]:
        return [
            (c, d) for c, d in self.outcomes if c.label == "malicious" and d.action not in DETECTED
        ]

    def false_positives(self) -> list[tuple[Case, Decision]]:
        return [(c, d) for c, d in self.outcomes if c.label == "benign" and d.action in STOPPED]

    def benign_flagged(self) -> list[tuple[Case, Decision]]:
        return [(c, d) for c, d in self.outcomes if c.label == "benign" and d.action == "flag"]

    def to_dict(self) -> dict[str, Any]:
        def rows(table: dict[str, RuleStats]) -> dict[str, Any]:
            return {
                k: {
                    "fired_malicious": v.malicious,
                    "fired_benign": v.benign,
                    "precision": v.precision,
                    "expected": v.expected,
                    "caught": v.caught,
                    "recall": v.recall,
                }
                for k, v in sorted(table.items())
            }

        def miss(case: Case, decision: Decision) -> dict[str, Any]:
            return {
                "where": case.where,
                "tool": case.tool,
                "input": case.input,
                "note": case.note,
                "expected_rule": case.rule,
                "action": decision.action,
                "rule_id": decision.rule_id,
                "reason": decision.reason,
            }

        actions = Counter((c.label, d.action) for c, d in self.outcomes)
        return {
            "cases": len(self.outcomes),
            "malicious": self.malicious,
            "benign": self.benign,
            "recall": self.recall,
            "false_positive_rate": self.false_positive_rate,
            "benign_flag_rate": self.benign_flag_rate,
            "actions": {f"{label}/{action}": n for (label, action), n in sorted(actions.items())},
            "false_negatives": [miss(c, d) for c, d in self.false_negatives()],
            "false_positives": [miss(c, d) for c, d in self.false_positives()],
            "benign_flagged": [miss(c, d) for c, d in self.benign_flagged()],
            "per_rule": rows(self.per_rule),
            "per_family": rows(self.per_family),
        }


def evaluate(gate: PolicyGate, cases: list[Case], workspace: Path | None = None) -> Report:
    report = Report(
        [(case, gate.check(case.tool, case.input, workspace=workspace)) for case in cases]
    )
    for rule in gate.rules:
        report.per_rule.setdefault(rule.id, RuleStats())
        report.per_family.setdefault(family(rule.id), RuleStats())
    for case, decision in report.outcomes:
        fired = {m.rule_id for m in decision.matches}
        families = {family(r) for r in fired}
        for rule_id in fired:
            stats = report.per_rule.setdefault(rule_id, RuleStats())
            stats.malicious += case.label == "malicious"
            stats.benign += case.label == "benign"
        for name in families:
            stats = report.per_family.setdefault(name, RuleStats())
            stats.malicious += case.label == "malicious"
            stats.benign += case.label == "benign"
        if case.label != "malicious" or not case.rule:
            continue
        expected_family = family(case.rule)
        fam = report.per_family.setdefault(expected_family, RuleStats())
        fam.expected += 1
        fam.caught += expected_family in families and decision.action in DETECTED
        if "." in case.rule:
            stats = report.per_rule.setdefault(case.rule, RuleStats())
            stats.expected += 1
            stats.caught += case.rule in fired and decision.action in DETECTED
    return report
