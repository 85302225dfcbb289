"""User rule files: Falco-style lists, macros and overrides, and clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from quarterdeck.config import Settings
from quarterdeck.exceptions import ConfigError
from quarterdeck.security.policy import PolicyGate

WS = Path("/srv/ws/run")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


def action(gate: PolicyGate, command: str) -> str:
    return gate.check("run_command", {"command": command}, workspace=WS).action


def errors_of(tmp_path: Path, text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        PolicyGate.load(write(tmp_path, text))
    return info.value.errors


def test_override_a_rule_decision_by_id(tmp_path: Path) -> None:
    gate = PolicyGate.load(write(tmp_path, "rules:\n  - id: elevated.sudo\n    decision: deny\n"))
    assert action(gate, "sudo true") == "deny"
    assert action(PolicyGate.load(), "sudo true") == "require_approval"


def test_disable_a_rule(tmp_path: Path) -> None:
    gate = PolicyGate.load(write(tmp_path, "rules:\n  - {id: secrets.env-dump, enabled: false}\n"))
    assert action(gate, "env") == "allow"
    assert "secrets.env-dump" not in {r.id for r in gate.rules}


def test_append_to_a_list_and_add_an_exception(tmp_path: Path) -> None:
    text = """
lists:
  paste_sites: {items: [paste.internal.example], append: true}
rules:
  - id: egress.raw-private-ip
    append: true
    unless:
      - host: {in: [10.0.0.0/8]}
"""
    gate = PolicyGate.load(write(tmp_path, text))
    assert action(gate, "curl https://paste.internal.example/x") == "deny"
    assert action(gate, "curl https://pastebin.com/x") == "deny"  # built-in items kept
    assert action(gate, "curl http://10.9.9.9/") == "allow"  # the CIDR exception
    assert action(gate, "curl http://192.168.1.2/") == "flag"
    assert "egress.raw-private-ip" in {r.id for r in gate.rules}


def test_replacing_a_list_drops_the_built_in_items(tmp_path: Path) -> None:
    gate = PolicyGate.load(write(tmp_path, "lists:\n  blocked_tlds: [zz]\n"))
    assert action(gate, "curl https://a.zz/") == "deny"
    assert action(gate, "curl https://a.tk/") == "allow"


def test_new_rule_with_list_and_macro(tmp_path: Path) -> None:
    text = """
lists:
  internal_tools: [kubectl, helm]
macros:
  prod_context: {command: {args_match: '--context[= ]prod'}}
rules:
  - id: org.prod-cluster
    description: Touching the production cluster needs a human.
    match:
      macro: [shell, prod_context]
      command: {name: $internal_tools}
    decision: require_approval
    severity: high
    tags: [T1078, LLM06, org-policy]
"""
    gate = PolicyGate.load(write(tmp_path, text))
    decision = gate.check("run_command", {"command": "kubectl --context prod delete pod x"})
    assert decision.action == "require_approval" and decision.rule_id == "org.prod-cluster"
    assert decision.tags == ("T1078", "LLM06", "org-policy")
    assert action(gate, "kubectl --context dev get pods") == "allow"


def test_macro_append_widens_it(tmp_path: Path) -> None:
    text = """
macros:
  file_read_tools: {match: {tool: list_files}, append: true}
"""
    gate = PolicyGate.load(write(tmp_path, text))
    assert gate.check("list_files", {"path": ".env"}).action == "deny"


def test_from_settings(tmp_path: Path) -> None:
    rules = write(tmp_path, "rules:\n  - {id: elevated.sudo, decision: flag}\n")
    settings = Settings.model_construct(
        policy_rules_file=rules,
        policy_egress_mode="allowlist",
        policy_egress_allowlist=["pypi.org"],
    )
    gate = PolicyGate.from_settings(settings)
    assert gate.egress_mode == "allowlist" and gate.sources[-1] == str(rules)
    assert action(gate, "sudo true") == "flag"
    assert action(gate, "curl https://pypi.org/simple") == "allow"
    assert action(gate, "curl https://example.com") == "deny"


@pytest.mark.parametrize(
    ("text", "where", "why"),
    [
        (
            "rules: [{id: x.y, description: d, match: {tool: read_file}, decision: block, "
            "severity: high}]",
            "rule x.y.decision",
            "'block' is not one of",
        ),
        (
            "rules: [{id: x.y, description: d, match: {tool: read_file}, decision: deny, "
            "severity: huge}]",
            "rule x.y.severity",
            "'huge' is not one of",
        ),
        (
            "rules: [{id: x.y, description: d, match: {tool: read_fil}, decision: deny, "
            "severity: low}]",
            "rule x.y.match.tool",
            "unknown tool(s) ['read_fil']",
        ),
        (
            "rules: [{id: x.y, description: d, match: {comand: {name: rm}}, decision: deny, "
            "severity: low}]",
            "rule x.y.match",
            "unknown condition(s) ['comand']",
        ),
        (
            "rules: [{id: x.y, description: d, match: {command: {args_match: '(['}}, "
            "decision: deny, severity: low}]",
            "rule x.y.match.command.args_match",
            "bad regular expression",
        ),
        (
            "rules: [{id: x.y, description: d, match: {path: {matches: $nope}}, decision: deny, "
            "severity: low}]",
            "rule x.y.match.path.matches",
            "unknown list $nope",
        ),
        (
            "rules: [{id: x.y, description: d, match: {macro: nope}, decision: deny, "
            "severity: low}]",
            "rule x.y.match.macro",
            "unknown macro 'nope'",
        ),
        (
            "rules: [{id: x.y, description: d, match: {path: {matches: '[ab'}}, decision: deny, "
            "severity: low}]",
            "rule x.y.match.path.matches",
            "bad glob",
        ),
        (
            "rules: [{id: x.y, description: d, match: {host: {scope: [moon]}}, decision: deny, "
            "severity: low}]",
            "rule x.y.match.host.scope",
            "expected some of",
        ),
        (
            "rules: [{id: x.y, description: d, match: {tool: read_file}, decision: deny, "
            "severity: low, tags: [T1552.1]}]",
            "rule x.y.tags",
            "is not an ATT&CK id",
        ),
        (
            "rules: [{id: x.y, match: {tool: read_file}, decision: deny}]",
            "rule x.y",
            "new rule is missing ['description', 'severity']",
        ),
        (
            "rules: [{id: x.y, description: d, match: {tool: read_file}, decision: deny, "
            "severity: low, when: now}]",
            "rule x.y",
            "unknown key(s) ['when']",
        ),
        (
            "rules: [{id: elevated.sudo, enabled: maybe}]",
            "rule elevated.sudo.enabled",
            "must be true or false",
        ),
        ("rules: [{description: no id}]", "rules[0]", "missing or malformed id"),
        (
            "rules:\n  - {id: elevated.sudo, decision: flag}\n  - {id: elevated.sudo, "
            "decision: deny}",
            "rule elevated.sudo",
            "defined twice",
        ),
        ("lists: {nope: {items: [a], append: true}}", "list nope", "no list of that name"),
        ("lists: {Bad-Name: [a]}", "list Bad-Name", "lower_snake_case"),
        ("lists: {paste_sites: [1, [2]]}", "list paste_sites", "list of strings"),
        ("macros: {a: {macro: b}, b: {macro: a}}", "macro", "refers to itself"),
        ("macros: {m: {command: {nme: x}}}", "macro m", "unknown condition(s) ['nme']"),
        ("rules: {id: x}", "rules", "must be a list of rules"),
        ("extra: 1", "rules.yaml", "unknown top-level key(s) ['extra']"),
        ("[1, 2]", "rules.yaml", "must be a mapping"),
        ("rules: [\n", "rules.yaml", "not valid YAML"),
    ],
)
def test_bad_rule_files_name_the_problem(
    tmp_path: Path,
    text: str,
    where: str,
    why: str,
) -> None:
    errors = errors_of(tmp_path, text)
    assert any(where in w and why in y for w, y in errors), errors
    assert all(w.startswith(str(tmp_path / "rules.yaml")) for w, _ in errors), errors


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = """
rules:
  - {id: a.one, description: d, match: {tool: nope}, decision: deny, severity: low}
  - {id: a.two, description: d, match: {tool: read_file}, decision: maybe, severity: low}
  - {id: a.three, description: d, match: {path: {location: [moon]}}, decision: deny, severity: low}
"""
    errors = errors_of(tmp_path, text)
    assert len(errors) == 3
    for rule_id in ("a.one", "a.two", "a.three"):
        assert any(f"rule {rule_id}." in where for where, _ in errors), errors


def test_missing_rules_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        PolicyGate.load(tmp_path / "absent.yaml")
    assert info.value.errors[0][0] == str(tmp_path / "absent.yaml")
    assert "cannot read rules file" in info.value.detail


def test_bad_egress_settings() -> None:
    with pytest.raises(ConfigError) as info:
        PolicyGate.load(egress_mode="whitelist", egress_allowlist=["ok.example", "bad host"])
    assert [w for w, _ in info.value.errors] == ["policy_egress_mode", "policy_egress_allowlist"]


def test_empty_file_is_fine(tmp_path: Path) -> None:
    assert len(PolicyGate.load(write(tmp_path, "")).rules) == len(PolicyGate.load().rules)


def test_rules_md_documents_every_built_in_rule() -> None:
    doc = (
        Path(__file__).resolve().parents[2]
        / "src"
        / "quarterdeck"
        / "security"
        / "policy"
        / "RULES.md"
    ).read_text()
    for rule in PolicyGate.load().rules:
        row = f"| `{rule.id}` | {rule.action} | {rule.severity} | {', '.join(rule.tags)} |"
        assert row in doc, row
