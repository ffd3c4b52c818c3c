"""PII encryption at rest."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tidings.crypto import Cipher, generate_key, key_id, load_or_create_key
from tidings.errors import StoreError


def test_round_trip_and_nondeterminism() -> None:
    cipher = Cipher.from_text(generate_key())
    first, second = cipher.encrypt("li@shop.test"), cipher.encrypt("li@shop.test")
    assert first != second and "li@shop.test" not in (first or "")
    assert cipher.decrypt(first) == "li@shop.test"
    assert cipher.encrypt(None) is None


def test_wrong_key_is_an_error_not_garbage() -> None:
    sealed = Cipher.from_text(generate_key()).encrypt("+8613800138000")
    with pytest.raises(StoreError):
        Cipher.from_text(generate_key()).decrypt(sealed)


def test_key_file_is_created_once_with_private_mode(tmp_path: Path) -> None:
    key_file = tmp_path / "tidings.db.key"
    first = load_or_create_key(None, key_file)
    assert key_file.stat().st_mode & 0o777 == 0o600
    second = load_or_create_key(None, key_file)
    assert second.decrypt(first.encrypt("x")) == "x"


def test_every_ciphertext_names_its_key_and_the_name_is_bound() -> None:
    cipher = Cipher.from_text(generate_key())
    sealed = cipher.encrypt("li@shop.test") or ""
    assert sealed.startswith(f"v2:{cipher.master_id}:")
    assert cipher.sealed_by(sealed) == cipher.master_id
    # the key id is authenticated: a ciphertext relabelled to another key id does not open
    other = Cipher.from_text(generate_key())
    relabelled = sealed.replace(cipher.master_id, other.master_id, 1)
    with pytest.raises(StoreError):
        other.decrypt(relabelled)


def test_data_keys_encrypt_when_active_and_old_ones_read_until_dropped() -> None:
    master = Cipher.from_text(generate_key())
    before = master.encrypt("+8613800138000") or ""
    data_key = os.urandom(32)
    kid = key_id(data_key)
    master.use({kid: master.unwrap(master.wrap(data_key))}, kid)
    after = master.encrypt("+8613800138000") or ""
    assert master.sealed_by(after) == kid
    assert master.decrypt(before) == master.decrypt(after) == "+8613800138000"
    master.use({}, None)  # the data key retired: back to the master key
    with pytest.raises(StoreError, match="no PII key"):
        master.decrypt(after)


def test_the_format_before_key_ids_still_reads() -> None:
    key = os.urandom(32)
    nonce = os.urandom(12)
    legacy = "v1:" + base64.urlsafe_b64encode(
        nonce + AESGCM(key).encrypt(nonce, b"li@shop.test", None)
    ).decode("ascii")
    assert Cipher(key).decrypt(legacy) == "li@shop.test"
