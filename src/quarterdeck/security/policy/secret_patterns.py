"""The secret patterns :mod:`quarterdeck.security.policy.secrets` runs, as data: our own precise
patterns, the generic ``name = value`` ones, and which detect-secrets plugins to harvest (see
there for why each exists and how they are matched). Kept apart so the table can grow without
the matcher's module doing so; adding a pattern means adding a corpus case
(``tests/unit/test_secrets*.py``).
"""

from __future__ import annotations

PLACEHOLDERS = frozenset(
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
VALUE = r"[A-Za-z0-9+/=_\-.~]{12,200}"

# (type, pattern, group holding the secret or 0, extra check, needles). Every pattern starts
# with a literal so ``re`` can skip ahead quickly, and only runs when one of its lower-case
# needles occurs in the text; word boundaries are checked in code for the same reason.
SPECIFIC: list[tuple[str, str, int, str, tuple[str, ...]]] = [
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
ANCHORS = (
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
NAME = (
    r"(?i:secret|token|passw(?:or)?d|pwd|api[_-]?key|apikey|access[_-]?key|auth[_-]?key|"
    r"private[_-]?key|credential|signing[_-]?key|encryption[_-]?key)[sS]?(?![a-z])"
    r"[\w.-]*[\"']?\s*(?::=|=>|[:=])\s*"
)
GENERIC: list[tuple[str, str, int, str, tuple[str, ...]]] = [
    ("url_password", r"://[^\s:/@'\"]+:([^\s:/@'\"]{3,})@", 1, "url", ("://",)),
    # anchored (check "keyword"): tried only where a needle occurs
    (
        "generic_secret",
        r"(?i:authorization|x-api-key|api-key|x-auth-token|private-token)[\"']?"
        r"\s*[:=]\s*[\"']?(?i:bearer\s+|basic\s+|token\s+)?(" + VALUE + ")",
        1,
        "keyword",
        ("authorization", "api-key", "auth-token", "private-token"),
    ),
    ("generic_secret", NAME + r"[rbuf]?([\"'])([^\s\"'`\\]{12,200})\1", 2, "keyword", ANCHORS),
    ("generic_secret", NAME + r"(" + VALUE + r")(?![\w(])", 1, "keyword", ANCHORS),
    (
        "high_entropy_string",
        r"[\"']([A-Za-z0-9+/_\-]{32,100}={0,2})[\"']",
        1,
        "entropy",
        ('"', "'"),
    ),
]
HARVEST: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
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
MODULES = (
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
