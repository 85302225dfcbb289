"""The API key format: generating, parsing, hashing and comparing keys. Pure functions.

A key looks like ``qd_live_k7m2x9qa_<40 characters>``:

- ``qd_live_`` (production) or ``qd_dev_`` (development): says where a leaked key works, and
  gives secret scanners something to match;
- an 8-character public key id (lowercase Crockford base32, 40 bits): the primary key of its
  row, safe to log, shown by ``keys list`` and used to revoke;
- ``_`` and 40 characters of base62 from :mod:`secrets` (about 238 bits).

Only a SHA-256 digest of the whole key is stored. A slow password hash (bcrypt, scrypt,
argon2) exists to make guessing *low-entropy* secrets expensive; nobody can enumerate 2^238
candidates however fast the hash is, so a slow hash would only add tens of milliseconds to
every request and buy nothing. Hashing the whole key (not just the random part) binds the
digest to its id and environment prefix: a secret pasted under another id or prefix fails.

Digests are compared with :func:`hmac.compare_digest` so the time a comparison takes says
nothing about how much of a guess was right.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass

LIVE_PREFIX = "qd_live_"
DEV_PREFIX = "qd_dev_"
PREFIXES = (LIVE_PREFIX, DEV_PREFIX)
KEY_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
KEY_ID_LENGTH = 8
SECRET_ALPHABET = string.ascii_letters + string.digits
SECRET_LENGTH = 40
_KEY_RE = re.compile(
    rf"^(?P<prefix>qd_live_|qd_dev_)(?P<id>[{KEY_ID_ALPHABET}]{{{KEY_ID_LENGTH}}})"
    rf"_(?P<secret>[A-Za-z0-9]{{{SECRET_LENGTH}}})$"
)
KEY_ID_RE = re.compile(rf"^[{KEY_ID_ALPHABET}]{{{KEY_ID_LENGTH}}}$")


@dataclass(frozen=True)
class ParsedKey:
    prefix: str
    key_id: str

    @property
    def display(self) -> str:
        """The non-secret start of the key (``qd_live_k7m2x9qa``), to recognise it by."""
        return f"{self.prefix}{self.key_id}"


@dataclass(frozen=True)
class NewKey:
    token: str
    """The full key: shown to its owner once, never stored."""
    parsed: ParsedKey
    digest: bytes


def prefix_for(env: str) -> str:
    return LIVE_PREFIX if env == "production" else DEV_PREFIX


def new_key_id() -> str:
    return "".join(secrets.choice(KEY_ID_ALPHABET) for _ in range(KEY_ID_LENGTH))


def generate(env: str) -> NewKey:
    """A fresh key for ``env`` (``production`` gets ``qd_live_``, anything else ``qd_dev_``)."""
    prefix = prefix_for(env)
    key_id = new_key_id()
    secret = "".join(secrets.choice(SECRET_ALPHABET) for _ in range(SECRET_LENGTH))
    token = f"{prefix}{key_id}_{secret}"
    return NewKey(token, ParsedKey(prefix, key_id), digest(token))


def parse(token: str) -> ParsedKey | None:
    """The prefix and key id of a well-formed key; None for anything else."""
    match = _KEY_RE.fullmatch(token)
    if match is None:
        return None
    return ParsedKey(match["prefix"], match["id"])


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def verify(token: str, stored: bytes) -> bool:
    """Whether ``token`` hashes to ``stored``, in constant time."""
    return hmac.compare_digest(digest(token), stored)


def same_secret(presented: str, expected: str) -> bool:
    """Constant-time equality of two secrets of any lengths (for the bootstrap admin key).

    Both are hashed first so neither the content nor the length of ``expected`` shows in
    timing.
    """
    return hmac.compare_digest(digest(presented), digest(expected))
