"""The API key format: generation, parsing, hashing and constant-time comparison."""

from __future__ import annotations

import hashlib
import math
import re

import pytest

from quarterdeck.security.auth import keys


def test_generated_keys_have_prefix_id_and_a_long_random_secret():
    new = keys.generate("production")
    match = re.fullmatch(r"qd_live_([0-9a-hjkmnp-tv-z]{8})_([A-Za-z0-9]{40})", new.token)
    assert match is not None, new.token
    assert new.parsed.key_id == match[1]
    assert new.parsed.display == f"qd_live_{match[1]}"
    # at least 128 bits of randomness in the secret part
    assert keys.SECRET_LENGTH * math.log2(len(keys.SECRET_ALPHABET)) >= 128
    assert keys.generate("development").token.startswith("qd_dev_")


def test_generated_keys_differ():
    tokens = {keys.generate("development").token for _ in range(200)}
    assert len(tokens) == 200


def test_only_the_digest_is_kept_and_it_is_sha256_of_the_whole_key():
    new = keys.generate("production")
    assert new.digest == hashlib.sha256(new.token.encode()).digest()
    assert keys.verify(new.token, new.digest)


def test_parse_round_trips_a_generated_key():
    new = keys.generate("development")
    assert keys.parse(new.token) == new.parsed


@pytest.mark.parametrize(
    "token",
    [
        "",
        "qd_live_",
        "sk-ant-api03-abcdef",
        "qd_test_abcdefgh_" + "a" * 40,  # unknown prefix
        "qd_live_abcdefg_" + "a" * 40,  # id too short
        "qd_live_abcdefgi_" + "a" * 40,  # 'i' is not in the id alphabet
        "qd_live_ABCDEFGH_" + "a" * 40,  # ids are lower case
        "qd_live_abcdefgh_" + "a" * 39,  # secret too short
        "qd_live_abcdefgh_" + "a" * 41,  # secret too long
        "qd_live_abcdefgh-" + "a" * 40,  # wrong separator
        "qd_live_abcdefgh_" + "a" * 39 + "-",  # not base62
        " qd_live_abcdefgh_" + "a" * 40,  # surrounding whitespace
    ],
)
def test_parse_rejects_anything_else(token: str):
    assert keys.parse(token) is None


def test_verify_rejects_a_changed_secret_id_or_prefix():
    new = keys.generate("production")
    secret = new.token.rsplit("_", 1)[1]
    other_secret = ("b" if secret[0] != "b" else "c") + secret[1:]
    assert not keys.verify(new.token.replace(secret, other_secret), new.digest)
    other_id = "0" * 8 if new.parsed.key_id != "0" * 8 else "1" * 8
    assert not keys.verify(new.token.replace(new.parsed.key_id, other_id), new.digest)
    assert not keys.verify(new.token.replace("qd_live_", "qd_dev_"), new.digest)


def test_same_secret_compares_whole_values():
    assert keys.same_secret("x" * 40, "x" * 40)
    assert not keys.same_secret("x" * 40, "x" * 39)
    assert not keys.same_secret("x" * 39 + "y", "x" * 40)
    assert not keys.same_secret("", "x")


def test_prefix_follows_the_environment():
    assert keys.prefix_for("production") == "qd_live_"
    assert keys.prefix_for("development") == "qd_dev_"
