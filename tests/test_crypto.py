"""PII encryption at rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidings.crypto import Cipher, generate_key, load_or_create_key
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
