"""Loading, generating and checking the audit master and signing keys."""

from __future__ import annotations

import base64
import os
import stat
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from quarterdeck.config import Settings, load_settings
from quarterdeck.exceptions import ConfigError
from quarterdeck.security.audit.keys import AuditKeys, load_master_key


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("QUARTERDECK_AUDIT") or name == "QUARTERDECK_ENV":
            monkeypatch.delenv(name, raising=False)


def settings(tmp_path: Path, **overrides: object) -> Settings:
    return load_settings(None, data_dir=tmp_path, **overrides)


def test_development_generates_private_keys_once(tmp_path: Path) -> None:
    first = AuditKeys.from_settings(settings(tmp_path))
    for name in ("audit-master.key", "audit-signing.pem"):
        mode = stat.S_IMODE((tmp_path / "keys" / name).stat().st_mode)
        assert mode == 0o600, name
    again = AuditKeys.from_settings(settings(tmp_path))
    assert again.master == first.master and again.key_fingerprint == first.key_fingerprint
    assert first.key_fingerprint.startswith("sha256:") and len(first.key_fingerprint) == 71


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    found: list[bytes] = []
    s = settings(tmp_path)
    threads = [threading.Thread(target=lambda: found.append(load_master_key(s))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(found)) == 1 and len(found) == 8
    assert [p.name for p in (tmp_path / "keys").iterdir()] == ["audit-master.key"]


def test_configured_keys_are_used(tmp_path: Path) -> None:
    master = os.urandom(32)
    signing = Ed25519PrivateKey.generate()
    pem = tmp_path / "signing.pem"
    pem.write_bytes(
        signing.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    keys = AuditKeys.from_settings(
        settings(
            tmp_path, audit_master_key=base64.b64encode(master).decode(), audit_signing_key_file=pem
        )
    )
    assert keys.master == master
    assert keys.verify(keys.key_fingerprint, b"x", signing.sign(b"x"))
    assert not (tmp_path / "keys").exists()  # nothing generated
    key_file = tmp_path / "master.b64"
    key_file.write_text(base64.b64encode(master).decode() + "\n")
    assert load_master_key(settings(tmp_path, audit_master_key_file=key_file)) == master


@pytest.mark.parametrize("value", ["not base64!", base64.b64encode(b"short").decode()])
def test_a_malformed_master_key_is_a_config_error(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_master_key(settings(tmp_path, audit_master_key=value))
    assert info.value.errors[0][0] == "QUARTERDECK_AUDIT_MASTER_KEY"
    assert value not in info.value.detail  # a secret is never echoed


def test_signatures_only_verify_under_our_own_key(tmp_path: Path) -> None:
    ours, theirs = AuditKeys.generate(), AuditKeys.generate()
    sig = theirs.sign(b"payload")
    assert not ours.verify(theirs.key_fingerprint, b"payload", sig)  # stored key not trusted
    assert not ours.verify(ours.key_fingerprint, b"payload", sig)
    assert ours.verify(ours.key_fingerprint, b"payload", ours.sign(b"payload"))


def test_production_refuses_to_generate_keys(tmp_path: Path) -> None:
    master = base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(ConfigError) as info:  # refused already when the settings load
        prod = settings(
            tmp_path,
            env="production",
            audit_master_key=master,
            admin_api_key="a" * 40,
            postgres_url="postgresql://db/qd",
        )
        AuditKeys.from_settings(prod)
    assert info.value.errors[0][0] == "QUARTERDECK_AUDIT_SIGNING_KEY_FILE"
    assert not (tmp_path / "keys").exists()
