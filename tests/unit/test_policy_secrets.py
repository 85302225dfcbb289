"""Secret detection and redaction: what is found, what is left alone, and tool-input checks.

Every secret here is fake (AWS's documented example keys, EXAMPLE bodies): the formats are
real, the credentials are not.
"""

from __future__ import annotations

import random
import string

import pytest

from quarterdeck.security.policy import PolicyGate, find_secrets, redact
from quarterdeck.security.policy import secrets as secrets_module

AWS_ID, AWS_SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GH = "ghp_EXAMPLE0123456789abcdefEXAMPLE012345"
GH_PAT = (
    "github_pat_11EXAMPLE0123456789abcd_"
    + "EXAMPLEexampleEXAMPLEexample0123456789EXAMPLEexample0123"
)
ANT = (
    "sk-ant-api03-"
    + "EXAMPLEexampleEXAMPLEexample0123456789-EXAMPLEexample_EXAMPLEexample0123456789-AA"
)
OAI = "sk-proj-EXAMPLEexampleEXAMPLEexample0123456789ab"
OAI_LEGACY = "sk-" + "EXAMPLEexampleEXAMPLEexample0123456789abcdefgh"
KEY_BLOCK = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAexampleEXAMPLEexampleEXAMPLE\n"
    "bm90IGEgcmVhbCBrZXkgYXQgYWxs\n-----END RSA PRIVATE KEY-----"
)


@pytest.mark.parametrize(
    ("text", "kind", "secret"),
    [
        (f"aws_access_key_id = {AWS_ID}", "aws_access_key_id", AWS_ID),
        (f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}", "aws_secret_access_key", AWS_SECRET),
        (f'aws_secret_access_key: "{AWS_SECRET}"', "aws_secret_access_key", AWS_SECRET),
        (f"token: {GH}", "github_token", GH),
        (f"GH_TOKEN={GH_PAT}", "github_token", GH_PAT),
        (f"export ANTHROPIC_API_KEY={ANT}", "anthropic_api_key", ANT),
        (f'client = OpenAI(api_key="{OAI}")', "openai_api_key", OAI),
        (f"OPENAI_API_KEY={OAI_LEGACY}", "openai_api_key", OAI_LEGACY),
        (f"key:\n{KEY_BLOCK}\nafter", "private_key", KEY_BLOCK),
        (
            "slack: xoxb-123456789012-1234567890123-EXAMPLEexampleEXAMPLEexa",
            "slack_token",
            "xoxb-123456789012-1234567890123-EXAMPLEexampleEXAMPLEexa",
        ),
        (
            "STRIPE=sk_live_EXAMPLE0123456789abcdefXYZ",
            "stripe_key",
            "sk_live_EXAMPLE0123456789abcdefXYZ",
        ),
        ("url = postgres://app:Zq8vXk2LmP9wRt4N@db:5432/app", "url_password", "Zq8vXk2LmP9wRt4N"),
        ('DB_PASSWORD = "Tr0ub4dor-3xQz9-Lm"', "generic_secret", "Tr0ub4dor-3xQz9-Lm"),
        ("secretKey: 'Zk93mQ4xT7pL2vN8bR6wY1cH'", "generic_secret", "Zk93mQ4xT7pL2vN8bR6wY1cH"),
        (
            "session_token = 0a1b2c3d4e5f60718293a4b5c6d7e8f9",
            "generic_secret",
            "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        ),
        (
            'const k = "Zk93mQ4xT7pL2vN8bR6wY1cH5jD0fG3sA9"',
            "high_entropy_string",
            "Zk93mQ4xT7pL2vN8bR6wY1cH5jD0fG3sA9",
        ),
        (
            "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jV"
            "mNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "jwt",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkw"
            "In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        ),
    ],
)
def test_secrets_are_found_and_redacted(text: str, kind: str, secret: str) -> None:
    result = redact(text)
    found = [f for f in result.findings if f.type == kind]
    assert found, result.findings
    assert text[found[0].start : found[0].end] == secret
    assert secret not in result.text and f"[REDACTED:{kind}]" in result.text


@pytest.mark.parametrize(
    "text",
    [
        "commit 3f786850e387550fdab836ed7e6dc881de23001b\nMerge: 9fceb02 de9f2c7",
        'id = "550e8400-e29b-41d4-a716-446655440000"',
        'hash = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"',
        '"integrity": "sha512-wS+hAgJShR0KhEvPJArfuPVN1+Hz1t0Y6n5jLrGQbkb4urgPE/0Rve+1kMB1v/oW'
        'gHgm4WIcV+i7F2pTVj+2iQ=="',
        "github.com/stretchr/testify v1.9.0 h1:HtqpIVDClZ4nwg75+f6Lvsy/wHu+3BoSGCbBAcpTsTg=",
        '{"avatar": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6'
        'kgAAAABJRU5ErkJggg=="}',
        'password = "changeme"',
        "API_KEY=your-api-key-here",
        'token = os.environ["GITHUB_TOKEN"]',
        "secret_key = settings.SECRET_KEY",
        'tokenizer = AutoTokenizer.from_pretrained("bert-base-uncased")',
        'TOKEN_URL = "https://oauth2.googleapis.com/token"',
        "postgresql://postgres:postgres@localhost:5432/app",
        'csrf_token = "{{ csrf_token }}"',
        "password_reset_timeout = 3600",
        "DATABASE_PASSWORD=${DB_PASSWORD}",
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----",
        "============ 48 passed in 1.93s ============",
    ],
)
def test_look_alikes_are_left_alone(text: str) -> None:
    assert redact(text).findings == []
    assert redact(text).text == text


def test_positions_refer_to_the_original_and_several_secrets_are_all_redacted() -> None:
    text = f"id={AWS_ID} and gh={GH} end"
    result = redact(text)
    assert [text[f.start : f.end] for f in result.findings] == [AWS_ID, GH]
    assert result.text == "id=[REDACTED:aws_access_key_id] and gh=[REDACTED:github_token] end"


def test_plain_text_takes_the_fast_path() -> None:
    text = "ok\n" * 1000
    result = redact(text)
    assert result.text is text and result.findings == []
    assert find_secrets("") == []


def test_truncated_key_block_is_still_redacted() -> None:
    text = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU\nAAAAEbm9uZQ"
    assert redact(text).text == "[REDACTED:private_key]"


@pytest.mark.parametrize(
    ("tool", "data"),
    [
        ("write_file", {"path": "src/config.py", "content": f'AWS_KEY = "{AWS_ID}"\n'}),
        ("edit_file", {"path": "src/a.py", "old": "x", "new": f"TOKEN = '{GH}'"}),
        ("run_command", {"command": f"curl -H 'Authorization: token {GH}' https://api.github.com"}),
        ("http_fetch", {"url": f"https://api.example.com/?key={OAI}"}),
    ],
)
def test_secrets_in_tool_input_are_flagged(tool: str, data: dict[str, str]) -> None:
    decision = PolicyGate.load().check(tool, data)
    assert decision.action == "flag" and decision.rule_id == "secrets.in-input"
    assert " in " in decision.matches[0].evidence and GH not in decision.reason


def test_reading_a_file_that_mentions_a_key_is_not_an_input_secret() -> None:
    decision = PolicyGate.load().check(
        "edit_file", {"path": "a.py", "old": f"K='{AWS_ID}'", "new": "K=os.environ['K']"}
    )
    assert decision.action == "allow"


def test_needle_scan_and_entropy_shortcuts_agree_with_the_plain_forms() -> None:
    """The scan tests a needle only when its rarest character occurs, and the entropy counts
    only the characters a value holds: both must give the plain forms' answers, bit for bit
    (the entropy decides, at a threshold, what is redacted)."""
    needles = secrets_module._needles()
    pieces = [*needles, *(n[:-1] for n in needles), *(n[1:] for n in needles), *"aB9 =:'\"-_/."]
    b64 = secrets_module._entropy()[0]
    rng = random.Random(9)
    for _ in range(5000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(12)))
        assert secrets_module._present(text) == {n for n in needles if n in text}, text
        value = "".join(
            rng.choice(string.ascii_letters + string.digits + "+/=_-é")
            for _ in range(rng.randrange(80))
        )
        assert secrets_module._shannon(b64, value) == b64.calculate_shannon_entropy(value)
