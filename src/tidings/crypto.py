"""PII at rest: AES-GCM field encryption, and hashing of API keys.

The key comes from ``TIDINGS_ENCRYPTION_KEY`` (urlsafe base64 of 32 bytes) or, when absent, a key
file generated beside the database (``tidings.db.key``, mode 0600).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tidings.errors import ConfigError, StoreError

_PREFIX = "v1:"


class Cipher:
    """Encrypts and decrypts PII fields (email, phone, device tokens, webhook secrets)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ConfigError(
                "the encryption key must be 32 bytes (urlsafe base64)", "encryption_key"
            )
        self._aead = AESGCM(key)
        self._blind = hashlib.sha256(b"tidings-blind-index" + key).digest()

    @classmethod
    def from_text(cls, text: str) -> Cipher:
        """Build from urlsafe base64 text."""
        try:
            key = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
        except ValueError as exc:
            raise ConfigError("the encryption key is not base64", "encryption_key") from exc
        return cls(key)

    def encrypt(self, plaintext: str | None) -> str | None:
        """Encrypt ``plaintext`` (``None`` stays ``None``)."""
        if plaintext is None:
            return None
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), None)
        return _PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")

    def decrypt(self, ciphertext: str | None) -> str | None:
        """Decrypt what :meth:`encrypt` made."""
        if ciphertext is None:
            return None
        if not ciphertext.startswith(_PREFIX):
            raise StoreError("unrecognised ciphertext")
        raw = base64.urlsafe_b64decode(ciphertext[len(_PREFIX) :])
        try:
            return self._aead.decrypt(raw[:12], raw[12:], None).decode("utf-8")
        except InvalidTag as exc:
            raise StoreError("cannot decrypt a PII field: wrong TIDINGS_ENCRYPTION_KEY?") from exc

    def blind_index(self, value: str) -> str:
        """A keyed hash for equality look-ups without storing the value (device token dedup)."""
        return hmac.new(self._blind, value.encode("utf-8"), hashlib.sha256).hexdigest()


def load_or_create_key(configured: str | None, key_file: Path | None) -> Cipher:
    """The configured key, else the key file (created with a fresh key when missing)."""
    if configured:
        return Cipher.from_text(configured)
    if key_file is None:
        raise ConfigError("set TIDINGS_ENCRYPTION_KEY (no key file location)", "encryption_key")
    if key_file.exists():
        return Cipher.from_text(key_file.read_text("ascii"))
    text = generate_key()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return Cipher.from_text(text)


def generate_key() -> str:
    """A fresh 32-byte key as urlsafe base64."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")


def hash_api_key(key: str) -> str:
    """The stored form of an API key (SHA-256; keys are high-entropy, so no KDF is needed)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()
