"""Rule files: parsing, validation and Falco-style merging of user files over the built-ins.

A rule file is a YAML mapping with three optional sections (the format is documented in
``RULES.md`` next to this module)::

    lists:                       # named string lists, referenced as "$name"
      paste_sites: [pastebin.com, hastebin.com]
      sensitive_file_names: {items: [.pgpass], append: true}    # extend a built-in list
    macros:                      # named match fragments, referenced with `macro: name`
      file_tools: {tool: [read_file, write_file, edit_file, list_files, search]}
    rules:
      - id: egress.paste-site
        description: why this is dangerous, in one or two sentences
        match: {host: {in: $paste_sites}}
        decision: deny           # allow | flag | require_approval | deny
        severity: high           # info | low | medium | high | critical
        tags: [T1567, LLM02]
      - id: elevated.sudo        # an existing id overrides that rule field by field
        decision: flag
      - id: destructive.mkfs
        enabled: false           # ...or switches it off

Everything wrong with a file is collected and raised at once as one
:class:`~quarterdeck.exceptions.ConfigError` naming the file, the rule and the field, so an
operator fixes a rules file in one pass instead of one error per restart.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from quarterdeck.security.policy.decision import ACTIONS, SEVERITIES

BUILTIN = "rules.yaml"
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
TAG_RE = re.compile(r"^(?:T\d{4}(?:\.\d{3})?|LLM\d{2}|[a-z][a-z0-9_.-]*)$")
_RULE_KEYS = {
    "id",
    "description",
    "match",
    "decision",
    "severity",
    "tags",
    "enabled",
    "unless",
    "append",
}
_REQUIRED = ("description", "match", "decision", "severity")

Errors = list[tuple[str, str]]


@dataclass(slots=True)
class RuleSpec:
    """One rule after merging, before compilation."""

    id: str
    description: str
    match: Any
    decision: str
    severity: str
    tags: list[str]
    enabled: bool = True
    unless: list[Any] = field(default_factory=list)
    source: str = ""


@dataclass(slots=True)
class RuleSet:
    lists: dict[str, list[str]] = field(default_factory=dict)
    macros: dict[str, tuple[Any, str]] = field(default_factory=dict)
    rules: dict[str, RuleSpec] = field(default_factory=dict)


def _load_yaml(text: str, source: str, errors: Errors) -> dict[str, Any] | None:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(text, Loader=loader)  # a safe loader (C if available)
    except yaml.YAMLError as exc:
        errors.append((source, f"not valid YAML: {exc}"))
        return None
    if data is None:
        return {}
    if not isinstance(data, dict):
        errors.append((source, "a rules file must be a mapping with lists:, macros:, rules:"))
        return None
    unknown = set(data) - {"lists", "macros", "rules"}
    if unknown:
        errors.append(
            (source, f"unknown top-level key(s) {sorted(unknown)}; expected lists, macros, rules")
        )
    return data


@cache
def _builtin_text() -> str:
    return resources.files("quarterdeck.security.policy").joinpath(BUILTIN).read_text()


def read_file(path: Path, errors: Errors) -> str | None:
    try:
        return path.read_text()
    except OSError as exc:
        errors.append((str(path), f"cannot read rules file: {exc.strerror or exc}"))
    except UnicodeDecodeError:
        errors.append((str(path), "rules file is not UTF-8 text"))
    return None


def _merge_lists(ruleset: RuleSet, section: Any, source: str, errors: Errors) -> None:
    if not isinstance(section, dict):
        errors.append((f"{source}: lists", "must be a mapping of name -> list of strings"))
        return
    for name, body in section.items():
        where = f"{source}: list {name}"
        append = False
        if isinstance(body, dict):
            unknown = set(body) - {"items", "append"}
            if unknown:
                errors.append((where, f"unknown key(s) {sorted(unknown)}; expected items, append"))
            append = body.get("append", False) is True
            body = body.get("items", [])
        if not isinstance(name, str) or not NAME_RE.match(name):
            errors.append((where, "list names are lower_snake_case"))
            continue
        if not isinstance(body, list) or not all(isinstance(i, (str, int)) for i in body):
            errors.append((where, "items must be a list of strings"))
            continue
        items = [str(i) for i in body]
        if append:
            if name not in ruleset.lists:
                errors.append((where, "append: true but no list of that name exists"))
                continue
            ruleset.lists[name] = ruleset.lists[name] + items
        else:
            ruleset.lists[name] = items


def _merge_macros(ruleset: RuleSet, section: Any, source: str, errors: Errors) -> None:
    if not isinstance(section, dict):
        errors.append((f"{source}: macros", "must be a mapping of name -> match"))
        return
    for name, body in section.items():
        where = f"{source}: macro {name}"
        if not isinstance(name, str) or not NAME_RE.match(name):
            errors.append((where, "macro names are lower_snake_case"))
            continue
        append = False
        if isinstance(body, dict) and "match" in body:
            unknown = set(body) - {"match", "append"}
            if unknown:
                errors.append((where, f"unknown key(s) {sorted(unknown)}; expected match, append"))
            append = body.get("append", False) is True
            body = body["match"]
        if not isinstance(body, dict):
            errors.append((where, "a macro is a match mapping"))
            continue
        if append:
            if name not in ruleset.macros:
                errors.append((where, "append: true but no macro of that name exists"))
                continue
            old, _ = ruleset.macros[name]
            ruleset.macros[name] = ({"any": [old, body]}, where)
        else:
            ruleset.macros[name] = (body, where)


def _check_fields(entry: dict[str, Any], where: str, errors: Errors) -> bool:
    ok = True
    unknown = set(entry) - _RULE_KEYS
    if unknown:
        errors.append((where, f"unknown key(s) {sorted(unknown)}; expected {sorted(_RULE_KEYS)}"))
        ok = False
    if "decision" in entry and entry["decision"] not in ACTIONS:
        errors.append((f"{where}.decision", f"{entry['decision']!r} is not one of {list(ACTIONS)}"))
        ok = False
    if "severity" in entry and entry["severity"] not in SEVERITIES:
        errors.append(
            (f"{where}.severity", f"{entry['severity']!r} is not one of {list(SEVERITIES)}")
        )
        ok = False
    if "description" in entry and (
        not isinstance(entry["description"], str) or not entry["description"].strip()
    ):
        errors.append((f"{where}.description", "must be a non-empty string"))
        ok = False
    if "tags" in entry:
        tags = entry["tags"]
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            errors.append((f"{where}.tags", "must be a list of strings"))
            ok = False
        else:
            for tag in tags:
                if not TAG_RE.match(tag):
                    errors.append(
                        (
                            f"{where}.tags",
                            f"{tag!r} is not an ATT&CK id (T1552.001), "
                            "an OWASP LLM id (LLM06) or a lower-case label",
                        )
                    )
                    ok = False
    for key in ("enabled", "append"):
        if key in entry and not isinstance(entry[key], bool):
            errors.append((f"{where}.{key}", "must be true or false"))
            ok = False
    if "unless" in entry and not isinstance(entry["unless"], (list, dict)):
        errors.append((f"{where}.unless", "must be a match or a list of matches"))
        ok = False
    return ok


def _merge_rules(ruleset: RuleSet, section: Any, source: str, errors: Errors) -> None:
    if not isinstance(section, list):
        errors.append((f"{source}: rules", "must be a list of rules"))
        return
    seen: set[str] = set()
    for index, entry in enumerate(section):
        if not isinstance(entry, dict):
            errors.append((f"{source}: rules[{index}]", "a rule is a mapping"))
            continue
        rule_id = entry.get("id")
        if not isinstance(rule_id, str) or not ID_RE.match(rule_id):
            errors.append(
                (
                    f"{source}: rules[{index}]",
                    "missing or malformed id (lower case, digits, '.', '_', '-')",
                )
            )
            continue
        where = f"{source}: rule {rule_id}"
        if rule_id in seen:
            errors.append((where, "defined twice in the same file"))
            continue
        seen.add(rule_id)
        if not _check_fields(entry, where, errors):
            continue
        unless = entry.get("unless", [])
        unless = unless if isinstance(unless, list) else [unless]
        existing = ruleset.rules.get(rule_id)
        if existing is None:
            missing = [k for k in _REQUIRED if k not in entry]
            if missing:
                errors.append(
                    (
                        where,
                        f"new rule is missing {missing} (to override a built-in "
                        "rule, use its exact id)",
                    )
                )
                continue
            ruleset.rules[rule_id] = RuleSpec(
                rule_id,
                entry["description"].strip(),
                entry["match"],
                entry["decision"],
                entry["severity"],
                list(entry.get("tags", [])),
                entry.get("enabled", True),
                list(unless),
                where,
            )
            continue
        append = entry.get("append", False)
        for key in ("description", "match", "decision", "severity", "enabled"):
            if key in entry:
                value = entry[key].strip() if key == "description" else entry[key]
                setattr(existing, key, value)
        if "tags" in entry:
            existing.tags = existing.tags + entry["tags"] if append else list(entry["tags"])
        if "unless" in entry:
            existing.unless = existing.unless + unless if append else list(unless)
        existing.source = where


def merge(ruleset: RuleSet, text: str, source: str, errors: Errors) -> None:
    """Apply one rules document to ``ruleset`` (lists, then macros, then rules)."""
    data = _load_yaml(text, source, errors)
    if data is None:
        return
    if "lists" in data:
        _merge_lists(ruleset, data["lists"] or {}, source, errors)
    if "macros" in data:
        _merge_macros(ruleset, data["macros"] or {}, source, errors)
    if "rules" in data:
        _merge_rules(ruleset, data["rules"] or [], source, errors)


@cache
def _builtin_ruleset() -> tuple[RuleSet, tuple[tuple[str, str], ...]]:
    ruleset = RuleSet()
    errors: Errors = []
    merge(ruleset, _builtin_text(), f"built-in {BUILTIN}", errors)
    return ruleset, tuple(errors)


def build(extra: Path | None, errors: Errors) -> RuleSet:
    """The built-in rules with ``extra`` merged over them (a fresh copy every time)."""
    builtin, builtin_errors = _builtin_ruleset()
    errors.extend(builtin_errors)
    ruleset = copy.deepcopy(builtin)
    if extra is not None:
        text = read_file(extra, errors)
        if text is not None:
            merge(ruleset, text, str(extra), errors)
    return ruleset
