"""AES-256-GCM for the sensitive part of events, under per-tenant data keys wrapped by the master key.

Two layers so that erasure is cheap: destroying one tenant's 32-byte data key makes every payload
of that tenant unreadable (crypto-shredding) without touching the events, whose hashes cover the
ciphertext and therefore still verify.

Associated data binds each ciphertext to where it belongs: a payload to its tenant and chain
``seq`` (moving it to another event makes it fail to open), a wrapped data key to its tenant and
key id. Payload nonces are a 4-byte random salt, drawn once per written batch, followed by the
8-byte ``seq``: ``seq`` never repeats within a tenant's chain, so a data key can never reuse a
nonce however many events it encrypts, and the salt keeps a rolled-back and retried batch (same
seqs, possibly other plaintexts) from reusing one either.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from quarterdeck.security.audit import canonical

ALG = "A256GCM"
_PAYLOAD_AAD = b"quarterdeck-audit-payload\x00v1\x00"
_WRAP_AAD = b"quarterdeck-audit-data-key\x00v1\x00"
SHREDDED: dict[str, Any] = {"shredded": True}
UNDECRYPTABLE: dict[str, Any] = {"undecryptable": True}


class DecryptError(Exception):
    """A ciphertext did not open: wrong key, wrong place, or altered."""


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def _wrap_aad(tenant: str, key_id: int) -> bytes:
    return _WRAP_AAD + tenant.encode() + b"\x00" + str(key_id).encode()


def wrap(master: bytes, tenant: str, key_id: int, data_key: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(master).encrypt(nonce, data_key, _wrap_aad(tenant, key_id))


def unwrap(master: bytes, tenant: str, key_id: int, wrapped: bytes) -> bytes:
    try:
        return AESGCM(master).decrypt(wrapped[:12], wrapped[12:], _wrap_aad(tenant, key_id))
    except (InvalidTag, ValueError) as exc:
        raise DecryptError(f"data key {key_id} of {tenant!r} does not unwrap") from exc


def _payload_aad(tenant: str, seq: int) -> bytes:
    return _PAYLOAD_AAD + tenant.encode() + b"\x00" + str(seq).encode()


class PayloadCipher:
    """Encrypts one tenant's payloads with one data key (the object caches the AES key schedule)."""

    __slots__ = ("_aad", "_aead", "_envelope", "key_id", "tenant")

    def __init__(self, tenant: str, key_id: int, data_key: bytes) -> None:
        self.tenant = tenant
        self.key_id = key_id
        self._aead = AESGCM(data_key)
        self._aad = _payload_aad(tenant, 0)[:-1]
        self._envelope = b'{"alg":"%s","ct":"%%s","key":%d}' % (ALG.encode(), key_id)

    def seal(self, seq: int, plaintext: bytes, salt: bytes) -> bytes:
        """The envelope stored in the record, as canonical JSON bytes::

            {"alg":"A256GCM","ct":"<base64 of nonce, ciphertext and tag>","key":<key id>}

        ``salt``: 4 random bytes, new for every batch (see the module docstring).
        """
        nonce = salt + seq.to_bytes(8, "big")
        sealed = nonce + self._aead.encrypt(nonce, plaintext, b"%s%d" % (self._aad, seq))
        return self._envelope % binascii.b2a_base64(sealed, newline=False)

    def open(self, seq: int, envelope: dict[str, Any]) -> dict[str, Any]:
        try:
            sealed = base64.b64decode(envelope["ct"])
            plain = self._aead.decrypt(sealed[:12], sealed[12:], _payload_aad(self.tenant, seq))
            value = json.loads(plain)
        except (InvalidTag, ValueError, KeyError, TypeError) as exc:
            raise DecryptError(f"payload of {self.tenant!r} seq {seq} does not decrypt") from exc
        if not isinstance(value, dict):
            raise DecryptError("payload is not an object")
        return value


def plaintext(sensitive: Any) -> bytes:
    """The bytes that get encrypted: canonical JSON, so equal payloads encrypt equal lengths."""
    return canonical.dumps(sensitive)
