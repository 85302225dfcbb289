"""Secret detection and redaction for tool output, model text and tool input.

Two sources of patterns, merged into one ordered list:

* **our own precise patterns** where ``detect-secrets`` is weak or silent: Anthropic keys,
  project/service OpenAI keys, fine-grained GitHub PATs, npm tokens, Google API keys, JWTs,
  whole private-key *blocks* (the library only spots the header line), AWS secret keys written
  without quotes (``AWS_SECRET_ACCESS_KEY=...`` in a ``.env``), passwords in URLs, and secrets
  assigned to secret-sounding names (``api_key = "..."``, ``Authorization: Bearer ...``);
* the **regex detectors of detect-secrets** (AWS, GitHub, GitLab, Slack, Stripe, SendGrid,
  Twilio, PyPI, Telegram, Discord, Square, Mailchimp, Azure storage), taken from the plugins
  themselves so they improve when the library does (plus a word-boundary check). Its
  entropy calculation judges generic candidates.

Precision matters as much as recall: output is redacted before it is stored or sent, and a
redacted git SHA or lockfile hash breaks the agent's work. So a context-free string is only a
``high_entropy_string`` when it is quoted, 32-100 characters, mixes upper, lower and digits,
passes detect-secrets' base64 entropy limit (4.5) and is not hex (SHAs, sha256 digests), a
UUID, or an ``sha512-...`` integrity hash. Unquoted random-looking text is left alone unless a
secret-sounding name or a known prefix says otherwise: that trades recall on naked tokens for
not mangling base64 fixtures.

:func:`redact` has a fast path: each pattern has *needles* (lower-case literals, such as
``ghp_`` or ``secret``) and runs only when one occurs; the needles are checked once per text,
so ordinary output costs a few substring searches and no regex. Generic ``name = value``
patterns are *anchored*: they are tried only at the positions where a needle occurs, instead of
at every character.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from re import Match
from typing import Any

from quarterdeck.security.policy.secret_patterns import (
    GENERIC,
    HARVEST,
    MODULES,
    PLACEHOLDERS,
    SPECIFIC,
)

REDACTED = "[REDACTED:{}]"
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_DOTTED = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass(frozen=True, slots=True)
class Finding:
    """One secret: its type and where it sits in the scanned text (``text[start:end]``)."""

    type: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Redaction:
    text: str
    findings: list[Finding]


@dataclass(frozen=True, slots=True)
class _Pattern:
    type: str
    regex: re.Pattern[str]
    group: int
    check: str
    needles: tuple[str, ...]


@cache
def _entropy() -> tuple[Any, Any]:
    from detect_secrets.plugins.high_entropy_strings import (
        Base64HighEntropyString,
        HexHighEntropyString,
    )

    return Base64HighEntropyString(), HexHighEntropyString()


@cache
def _needles() -> tuple[str, ...]:
    return tuple(sorted({n for p in patterns() for n in p.needles}))


# Characters by how many tool inputs of the policy corpus hold them, most first: a needle is
# only looked for when its rarest character occurs in the text.
_COMMONNESS = "etsraoc inp./lmdh-ugyfkbvx:_w1'02=43q|()5\"6j9z8&~>7$;*@,[]}"


def _rareness(char: str) -> int:
    found = _COMMONNESS.find(char)
    return len(_COMMONNESS) if found < 0 else found


@cache
def _needle_groups() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The needles grouped by their rarest character (per :data:`_COMMONNESS`). ``needle in
    text`` costs about its call on a short text, and there are dozens of needles: one test of
    a character rules out its whole group."""
    groups: dict[str, list[str]] = {}
    for needle in _needles():
        key = max(needle, key=_rareness)
        groups.setdefault(key, []).append(needle)
    return tuple((key, tuple(found)) for key, found in sorted(groups.items()))


def _present(lower: str) -> set[str]:
    """``{needle for needle in _needles() if needle in lower}``, group by group."""
    present: set[str] = set()
    for key, needles in _needle_groups():
        if key in lower:
            for needle in needles:
                if needle in lower:
                    present.add(needle)
    return present


@cache
def _ranks_by_needle() -> dict[str, tuple[int, ...]]:
    """For each needle, the ranks (positions in :func:`patterns`) of the patterns it gates, so
    a text only visits the patterns of the needles it holds."""
    ranks: dict[str, list[int]] = {}
    for rank, pattern in enumerate(patterns()):
        for needle in pattern.needles:
            ranks.setdefault(needle, []).append(rank)
    return {needle: tuple(found) for needle, found in ranks.items()}


@cache
def patterns() -> tuple[_Pattern, ...]:
    """Every pattern, compiled once. Order is precedence on overlaps: our specific patterns,
    then detect-secrets', then the generic ones."""
    modules = [importlib.import_module(f"detect_secrets.plugins.{name}") for name in MODULES]
    specific = [_Pattern(t, re.compile(p), g, c, n) for t, p, g, c, n in SPECIFIC]
    classes = {
        cls.__name__: cls
        for module in modules
        for cls in vars(module).values()
        if isinstance(cls, type) and cls.__name__ in HARVEST
    }
    for name, (types, needles) in HARVEST.items():
        if name not in classes:  # an older or newer detect-secrets without this plugin
            continue
        for index, regex in enumerate(classes[name]().denylist):
            kind = types[min(index, len(types) - 1)]
            group = 1 if (name == "AWSKeyDetector" and index == 1) else 0
            check = "b" if regex.pattern[:1].isalnum() else ""
            specific.append(_Pattern(kind, regex, group, check, needles))
    generic = [_Pattern(t, re.compile(p), g, c, n) for t, p, g, c, n in GENERIC]
    _entropy()
    return (*specific, *generic)


def prepare() -> None:
    """Import detect-secrets and compile every pattern now (at startup), not on first use."""
    _needle_groups()
    _ranks_by_needle()


def _plausible(value: str, check: str) -> bool:
    """Second opinion for generic candidates (see the module docstring for the reasoning)."""
    if check == "url":
        return value.lower() not in PLACEHOLDERS and not value.startswith(("$", "{", "<", "*"))
    b64, hexa = _entropy()
    if _UUID.match(value) or value.lower().strip("x") in PLACEHOLDERS:
        return False
    if check == "keyword":
        if value.startswith(("$", "<", "{", "%", "/", "./", "~")) or "://" in value:
            return False  # a variable, template, path or URL, not a secret literal
        if _DOTTED.match(value):
            return False  # an attribute access (settings.SECRET_KEY)
        if _HEX.match(value):
            return len(value) >= 16 and hexa.calculate_shannon_entropy(value) >= hexa.entropy_limit
        if not any(c.isdigit() for c in value) and not (
            len(value) >= 20 and any(c.isupper() for c in value) and any(c.islower() for c in value)
        ):
            return False
        return bool(_shannon(b64, value) >= 3.3)
    if _HEX.match(value) or value.startswith(("sha1-", "sha256-", "sha384-", "sha512-")):
        return False
    if not (
        any(c.isdigit() for c in value)
        and any(c.isupper() for c in value)
        and any(c.islower() for c in value)
    ):
        return False
    return bool(_shannon(b64, value) >= b64.entropy_limit)


def _shannon(plugin: Any, data: str) -> float:
    """``plugin.calculate_shannon_entropy(data)``, to the last bit: the same terms added in the
    same order (the plugin's charset), but ``data`` is only counted for the characters it
    holds, not scanned once per charset character. Used only while the plugin keeps the base
    class's formula (the hex plugin adjusts it)."""
    if getattr(type(plugin), "calculate_shannon_entropy", None) is not _base_formula():
        return float(plugin.calculate_shannon_entropy(data))
    if not data:
        return 0
    held = set(data)
    size = len(data)
    entropy = 0.0
    for x in plugin.charset:
        if x in held:
            p_x = float(data.count(x)) / size
            entropy += -p_x * math.log(p_x, 2)
    return entropy


@cache
def _base_formula() -> Any:
    from detect_secrets.plugins.high_entropy_strings import HighEntropyStringsPlugin

    return HighEntropyStringsPlugin.calculate_shannon_entropy


def _matches(pattern: _Pattern, text: str, lower: str, present: set[str]) -> Iterator[Match[str]]:
    if pattern.check != "keyword":
        yield from pattern.regex.finditer(text)
        return
    for needle in present.intersection(pattern.needles):
        at = lower.find(needle)
        for _ in range(256):  # bound the work on pathological text
            if at < 0:
                break
            found = pattern.regex.match(text, at)
            if found:
                yield found
            at = lower.find(needle, at + 1)


def find_secrets(text: str) -> list[Finding]:
    """Every secret in ``text``, non-overlapping, in order of position."""
    if not text:
        return []
    lower = text.lower()
    present = _present(lower)
    if not present:
        return []
    ranks_by_needle = _ranks_by_needle()
    ranks = sorted({rank for needle in present for rank in ranks_by_needle[needle]})
    candidates: list[tuple[int, int, int, str]] = []
    judged: dict[tuple[str, str], bool] = {}  # keyword patterns meet one value at each needle
    table = patterns()
    for rank in ranks:  # the patterns whose needles occur, in precedence order
        pattern = table[rank]
        for found in _matches(pattern, text, lower, present):
            start, end = found.span(pattern.group)
            if start >= end:
                continue
            if pattern.check == "b":
                if start and text[start - 1].isalnum():
                    continue
            elif pattern.check:
                key = (found.group(pattern.group), pattern.check)
                plausible = judged.get(key)
                if plausible is None:
                    plausible = judged[key] = _plausible(*key)
                if not plausible:
                    continue
            candidates.append((rank, start, end, pattern.type))
    if not candidates:
        return []
    candidates.sort()
    taken: list[Finding] = []
    for _, start, end, kind in candidates:
        if all(end <= f.start or start >= f.end for f in taken):
            taken.append(Finding(kind, start, end))
    return sorted(taken, key=lambda f: f.start)


def redact(text: str) -> Redaction:
    """``text`` with every secret replaced by ``[REDACTED:<type>]``, and what was found
    (positions refer to the original text)."""
    findings = find_secrets(text)
    if not findings:
        return Redaction(text, [])
    parts: list[str] = []
    cursor = 0
    for finding in findings:
        parts.append(text[cursor : finding.start])
        parts.append(REDACTED.format(finding.type))
        cursor = finding.end
    parts.append(text[cursor:])
    return Redaction("".join(parts), findings)
