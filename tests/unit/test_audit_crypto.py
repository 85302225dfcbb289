"""Payload encryption and data-key wrapping: round trips, and what the associated data binds."""

from __future__ import annotations

import base64
import json
import os

import pytest

from quarterdeck.security.audit import canonical, crypto

MASTER = os.urandom(32)


def test_payloads_round_trip_and_are_bound_to_tenant_and_seq() -> None:
    key = crypto.new_data_key()
    cipher = crypto.PayloadCipher("acme", 3, key)
    plain = crypto.plaintext({"prompt": "fix the test", "n": 1})
    envelope_bytes = cipher.seal(42, plain, os.urandom(4))
    envelope = json.loads(envelope_bytes)
    assert canonical.dumps(envelope) == envelope_bytes  # stored inside a hashed record
    assert envelope["alg"] == "A256GCM" and envelope["key"] == 3
    assert b"fix the test" not in envelope_bytes
    assert cipher.open(42, envelope) == {"n": 1, "prompt": "fix the test"}
    with pytest.raises(crypto.DecryptError):
        cipher.open(43, envelope)  # moved to another event
    with pytest.raises(crypto.DecryptError):
        crypto.PayloadCipher("globex", 3, key).open(42, envelope)  # moved to another tenant
    with pytest.raises(crypto.DecryptError):
        crypto.PayloadCipher("acme", 3, crypto.new_data_key()).open(42, envelope)


def test_nonces_carry_the_seq_so_one_key_never_repeats_one() -> None:
    cipher = crypto.PayloadCipher("acme", 1, crypto.new_data_key())
    salt = b"salt"
    a = json.loads(cipher.seal(1, b"{}", salt))["ct"]
    b = json.loads(cipher.seal(2, b"{}", salt))["ct"]
    assert base64.b64decode(a)[:12] == salt + (1).to_bytes(8, "big")
    assert base64.b64decode(b)[:12] == salt + (2).to_bytes(8, "big")


def test_a_tampered_ciphertext_does_not_open() -> None:
    cipher = crypto.PayloadCipher("acme", 1, crypto.new_data_key())
    envelope = json.loads(cipher.seal(7, b'{"a":1}', os.urandom(4)))
    ct = bytearray(base64.b64decode(envelope["ct"]))
    ct[-1] ^= 1
    envelope["ct"] = base64.b64encode(bytes(ct)).decode()
    with pytest.raises(crypto.DecryptError):
        cipher.open(7, envelope)


def test_data_keys_unwrap_only_for_their_tenant_and_id() -> None:
    key = crypto.new_data_key()
    wrapped = crypto.wrap(MASTER, "acme", 2, key)
    assert crypto.unwrap(MASTER, "acme", 2, wrapped) == key
    for tenant, key_id, master in (
        ("globex", 2, MASTER),
        ("acme", 1, MASTER),
        ("acme", 2, os.urandom(32)),
    ):
        with pytest.raises(crypto.DecryptError):
            crypto.unwrap(master, tenant, key_id, wrapped)
