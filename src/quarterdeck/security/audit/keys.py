"""The two long-lived audit keys: the master key that wraps tenant data keys, and the checkpoint
signing key.

Production must set ``QUARTERDECK_AUDIT_MASTER_KEY`` (or ``_FILE``) and
``QUARTERDECK_AUDIT_SIGNING_KEY_FILE``. Development may leave them unset: a key is then generated
once into ``<data_dir>/keys`` (mode 0600) with a warning, created with a hard link from a temporary
file so that two processes starting together agree on one key instead of each writing its own.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from quarterdeck.config import Settings
from quarterdeck.exceptions import ConfigError

log = structlog.get_logger(__name__)
MASTER_FILE = "audit-master.key"
SIGNING_FILE = "audit-signing.pem"


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """``sha256:<hex>`` of the raw public key: what a checkpoint names its signer by."""
    return "sha256:" + hashlib.sha256(raw_public(public_key)).hexdigest()


def raw_public(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True, slots=True)
class AuditKeys:
    master: bytes
    signing: Ed25519PrivateKey

    def __post_init__(self) -> None:
        if len(self.master) != 32:
            raise ValueError("the audit master key must be 32 bytes")

    @property
    def master_fingerprint(self) -> str:
        """Names the master key a data key was wrapped with (a hash: reveals nothing usable)."""
        return hashlib.sha256(b"quarterdeck-audit-master\x00" + self.master).hexdigest()[:16]

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.signing.public_key()

    @property
    def key_fingerprint(self) -> str:
        return fingerprint(self.public_key)

    def sign(self, payload: bytes) -> bytes:
        return self.signing.sign(payload)

    def verify(self, key_fingerprint: str, payload: bytes, signature: bytes) -> bool:
        """True only for a valid signature by *our* key: a stored public key is never trusted."""
        if key_fingerprint != self.key_fingerprint:
            return False
        try:
            self.public_key.verify(signature, payload)
        except InvalidSignature:
            return False
        return True

    @classmethod
    def generate(cls) -> AuditKeys:
        return cls(master=secrets.token_bytes(32), signing=Ed25519PrivateKey.generate())

    @classmethod
    def from_settings(cls, settings: Settings) -> AuditKeys:
        return cls(master=load_master_key(settings), signing=load_signing_key(settings))


def _decode_master(text: str, source: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise ConfigError(
            [(source, "must be 32 random bytes, base64-encoded (e.g. `openssl rand -base64 32`)")]
        )
    return key


def load_master_key(settings: Settings) -> bytes:
    if settings.audit_master_key is not None:
        return _decode_master(
            settings.audit_master_key.get_secret_value(), "QUARTERDECK_AUDIT_MASTER_KEY"
        )
    if settings.audit_master_key_file is not None:
        try:
            text = settings.audit_master_key_file.read_text()
        except OSError as exc:
            raise ConfigError([("QUARTERDECK_AUDIT_MASTER_KEY_FILE", str(exc))]) from exc
        return _decode_master(text, "QUARTERDECK_AUDIT_MASTER_KEY_FILE")
    if settings.env == "production":
        raise ConfigError([("QUARTERDECK_AUDIT_MASTER_KEY", "must be set in production")])
    path = settings.data_dir / "keys" / MASTER_FILE
    stored = _read_or_create(path, lambda: base64.b64encode(secrets.token_bytes(32)))
    return _decode_master(stored.decode(), str(path))


def load_signing_key(settings: Settings) -> Ed25519PrivateKey:
    path = settings.audit_signing_key_file
    if path is not None:
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise ConfigError([("QUARTERDECK_AUDIT_SIGNING_KEY_FILE", str(exc))]) from exc
        return _parse_signing(pem, "QUARTERDECK_AUDIT_SIGNING_KEY_FILE")
    if settings.env == "production":  # replicas generating their own keys would each call the
        # others' checkpoints forged; the key must also live away from the database it vouches for
        raise ConfigError(
            [("QUARTERDECK_AUDIT_SIGNING_KEY_FILE", "must be set in production (an Ed25519 PEM)")]
        )
    path = settings.data_dir / "keys" / SIGNING_FILE

    def new_pem() -> bytes:
        return Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    return _parse_signing(_read_or_create(path, new_pem), str(path))


def _parse_signing(pem: bytes, source: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError([(source, f"not a PEM private key: {exc}")]) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError([(source, "must be an Ed25519 private key")])
    return key


def _read_or_create(path: Path, make: Callable[[], bytes]) -> bytes:
    """The key file's bytes, generating it first (0600, atomically) when it does not exist."""
    if path.exists():
        if path.stat().st_mode & 0o077:
            log.warning("audit_key_file_permissive", path=str(path), hint="chmod 600")
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(make())
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails if another process won the race: use its key
            log.warning(
                "audit_key_generated",
                path=str(path),
                hint="development only: set the audit key settings in production and back "
                "the key up; without it encrypted audit payloads cannot be read",
            )
        except FileExistsError:
            pass
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return path.read_bytes()
