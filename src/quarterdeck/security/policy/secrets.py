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

REDACTED = "[REDACTED:{}]"
_PLACEHOLDERS = frozenset(
    {
        "password",
        "passwd",
        "pass",
        "secret",
        "changeme",
        "postgres",
        "root",
        "admin",
        "user",
        "example",
        "test",
        "redacted",
        "guest",
        "mysql",
        "default",
        "none",
        "null",
    }
)
_VALUE = r"[A-Za-z0-9+/=_\-.~]{12,200}"

# (type, pattern, group holding the secret or 0, extra check, needles). Every pattern starts
# with a literal so ``re`` can skip ahead quickly, and only runs when one of its lower-case
# needles occurs in the text; word boundaries are checked in code for the same reason.
_SPECIFIC: list[tuple[str, str, int, str, tuple[str, ...]]] = [
    (
        "private_key",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?:[\s\S]*?-----END "
        r"(?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|(?:\r?\n[A-Za-z0-9+/=:, -]*)*)",
        0,
        "",
        ("private key",),
    ),
    (
        "private_key",
        r"PuTTY-User-Key-File-\d+:[\s\S]*?(?:Private-MAC: [0-9a-f]+|\Z)",
        0,
        "",
        ("putty-user-key-file",),
    ),
    (
        "anthropic_api_key",
        r"sk-ant-(?:api|admin|sid|oat)\d{2}-[A-Za-z0-9_\-]{20,}",
        0,
        "b",
        ("sk-ant-",),
    ),
    (
        "openai_api_key",
        r"sk-(?:proj|svcacct|admin|None)-[A-Za-z0-9_\-]{20,}",
        0,
        "b",
        ("sk-proj-", "sk-svcacct-", "sk-admin-", "sk-none-"),
    ),
    ("openai_api_key", r"sk-[A-Za-z0-9]{32,}(?![A-Za-z0-9])", 0, "b", ("sk-",)),
    ("github_token", r"github_pat_[A-Za-z0-9_]{50,}", 0, "b", ("github_pat_",)),
    (
        "github_token",
        r"gh[pousr]_[A-Za-z0-9]{36,255}(?![A-Za-z0-9])",
        0,
        "b",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
    ),
    ("npm_token", r"npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])", 0, "b", ("npm_",)),
    ("google_api_key", r"AIza[0-9A-Za-z_\-]{35}(?![A-Za-z0-9])", 0, "b", ("aiza",)),
    (
        "stripe_key",
        r"[sr]k_(?:live|test)_[0-9a-zA-Z]{24,}(?![A-Za-z0-9])",
        0,
        "b",
        ("k_live_", "k_test_"),
    ),
    ("jwt", r"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}", 0, "b", ("eyj",)),
    (
        "aws_access_key_id",
        r"(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}(?![A-Za-z0-9])",
        0,
        "b",
        ("akia", "asia", "abia", "acca", "a3t"),
    ),
    (
        "aws_secret_access_key",
        r"(?i:aws)_?(?i:secret)_?(?i:access_?)?(?i:key)[\"']?\s*"
        r"(?:[:=]|\s)\s*[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
        1,
        "",
        ("secret",),
    ),
]
_ANCHORS = (
    "secret",
    "token",
    "passw",
    "pwd",
    "apikey",
    "api_key",
    "api-key",
    "access_key",
    "access-key",
    "accesskey",
    "auth_key",
    "private_key",
    "privatekey",
    "credential",
    "signing_key",
    "encryption_key",
)
# A secret-sounding name component (``tokenizer`` is not one: the word must end there, or
# continue in camelCase), then an assignment, then the value.
_NAME = (
    r"(?i:secret|token|passw(?:or)?d|pwd|api[_-]?key|apikey|access[_-]?key|auth[_-]?key|"
    r"private[_-]?key|credential|signing[_-]?key|encryption[_-]?key)[sS]?(?![a-z])"
    r"[\w.-]*[\"']?\s*(?::=|=>|[:=])\s*"
)
_GENERIC: list[tuple[str, str, int, str, tuple[str, ...]]] = [
    ("url_password", r"://[^\s:/@'\"]+:([^\s:/@'\"]{3,})@", 1, "url", ("://",)),
    # anchored (check "keyword"): tried only where a needle occurs
    (
        "generic_secret",
        r"(?i:authorization|x-api-key|api-key|x-auth-token|private-token)[\"']?"
        r"\s*[:=]\s*[\"']?(?i:bearer\s+|basic\s+|token\s+)?(" + _VALUE + ")",
        1,
        "keyword",
        ("authorization", "api-key", "auth-token", "private-token"),
    ),
    ("generic_secret", _NAME + r"[rbuf]?([\"'])([^\s\"'`\\]{12,200})\1", 2, "keyword", _ANCHORS),
    ("generic_secret", _NAME + r"(" + _VALUE + r")(?![\w(])", 1, "keyword", _ANCHORS),
    (
        "high_entropy_string",
        r"[\"']([A-Za-z0-9+/_\-]{32,100}={0,2})[\"']",
        1,
        "entropy",
        ('"', "'"),
    ),
]
_HARVEST: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # detect-secrets plugin -> (type of each denylist regex, needles)
    "AWSKeyDetector": (
        ("aws_access_key_id", "aws_secret_access_key"),
        ("akia", "asia", "abia", "acca", "a3t", "aws"),
    ),
    "AzureStorageKeyDetector": (("azure_storage_key",), ("accountkey=",)),
    "DiscordBotTokenDetector": (("discord_bot_token",), ("discord",)),
    "GitHubTokenDetector": (("github_token",), ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),
    "GitLabTokenDetector": (
        ("gitlab_token",),
        (
            "glpat-",
            "gldt-",
            "glft-",
            "glsoat-",
            "glrt-",
            "gr1348941",
            "glcbt-",
            "glimt-",
            "glptt-",
            "glagent-",
            "gloas-",
        ),
    ),
    "MailchimpDetector": (("mailchimp_key",), ("-us",)),
    "OpenAIDetector": (("openai_api_key",), ("t3blbkfj",)),
    "PypiTokenDetector": (("pypi_token",), ("pypi-",)),
    "SendGridDetector": (("sendgrid_key",), ("sg.",)),
    "SlackDetector": (("slack_token", "slack_webhook"), ("xox", "hooks.slack.com")),
    "SquareOAuthDetector": (("square_oauth_secret",), ("sq0csp-",)),
    "StripeDetector": (("stripe_key",), ("k_live_",)),
    "TelegramBotTokenDetector": (("telegram_bot_token",), ("telegram",)),
    "TwilioKeyDetector": (("twilio_key",), ("twilio",)),
}
_MODULES = (
    "aws",
    "azure_storage_key",
    "discord",
    "github_token",
    "gitlab_token",
    "mailchimp",
    "openai",
    "pypi_token",
    "sendgrid",
    "slack",
    "square_oauth",
    "stripe",
    "telegram_token",
    "twilio",
)
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
    modules = [importlib.import_module(f"detect_secrets.plugins.{name}") for name in _MODULES]
    specific = [_Pattern(t, re.compile(p), g, c, n) for t, p, g, c, n in _SPECIFIC]
    classes = {
        cls.__name__: cls
        for module in modules
        for cls in vars(module).values()
        if isinstance(cls, type) and cls.__name__ in _HARVEST
    }
    for name, (types, needles) in _HARVEST.items():
        if name not in classes:  # an older or newer detect-secrets without this plugin
            continue
        for index, regex in enumerate(classes[name]().denylist):
            kind = types[min(index, len(types) - 1)]
            group = 1 if (name == "AWSKeyDetector" and index == 1) else 0
            check = "b" if regex.pattern[:1].isalnum() else ""
            specific.append(_Pattern(kind, regex, group, check, needles))
    generic = [_Pattern(t, re.compile(p), g, c, n) for t, p, g, c, n in _GENERIC]
    _entropy()
    return (*specific, *generic)


def prepare() -> None:
    """Import detect-secrets and compile every pattern now (at startup), not on first use."""
    _needle_groups()
    _ranks_by_needle()


def _plausible(value: str, check: str) -> bool:
    """Second opinion for generic candidates (see the module docstring for the reasoning)."""
    if check == "url":
        return value.lower() not in _PLACEHOLDERS and not value.startswith(("$", "{", "<", "*"))
    b64, hexa = _entropy()
    if _UUID.match(value) or value.lower().strip("x") in _PLACEHOLDERS:
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
