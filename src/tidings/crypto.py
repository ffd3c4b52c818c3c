"""PII at rest: AES-GCM field encryption under rotatable keys, and hashing of API keys.

The master key comes from ``TIDINGS_ENCRYPTION_KEY`` (urlsafe base64 of 32 bytes) or, when
absent, a key file generated beside the database (``tidings.db.key``, mode 0600). Data keys
made by ``tidings keys rotate-pii`` are stored in the database wrapped (encrypted) by the
master key. Every ciphertext names the key that sealed it::

    v2:<key id>:<urlsafe base64 of nonce + sealed>     (the key id is bound as associated data)
    v1:<urlsafe base64 of nonce + sealed>              (before key ids: the master key)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tidings.errors import ConfigError, StoreError

_LEGACY = "v1:"
_PREFIX = "v2:"


def key_id(key: bytes) -> str:
    """A key's public name in its ciphertexts (8 hex digits; says nothing about the key)."""
    return hashlib.sha256(b"tidings-key-id" + key).hexdigest()[:8]


def _decode(text: str) -> bytes:
    text = text.strip()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Cipher:
    """Encrypts and decrypts PII fields (email, phone, device tokens, webhook secrets).

    Encrypts with the active key (the master key until a data key is made active); decrypts
    with any key it holds, so that a rotation's old and new ciphertexts both read meanwhile.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ConfigError(
                "the encryption key must be 32 bytes (urlsafe base64)", "encryption_key"
            )
        self._master = AESGCM(key)
        self.master_id = key_id(key)
        self._keys: dict[str, AESGCM] = {self.master_id: self._master}
        self._active = self.master_id
        self._blind = hashlib.sha256(b"tidings-blind-index" + key).digest()

    @classmethod
    def from_text(cls, text: str) -> Cipher:
        """Build from urlsafe base64 text."""
        try:
            key = _decode(text)
        except ValueError as exc:
            raise ConfigError("the encryption key is not base64", "encryption_key") from exc
        return cls(key)

    @property
    def active_id(self) -> str:
        """The id of the key new ciphertexts are sealed with."""
        return self._active

    @property
    def key_ids(self) -> frozenset[str]:
        """Every key id this cipher can decrypt."""
        return frozenset(self._keys)

    def use(self, data_keys: Mapping[str, bytes], active: str | None) -> None:
        """Hold exactly ``data_keys`` (besides the master key); encrypt with ``active``."""
        held = self._keys
        keys = {self.master_id: self._master}
        for kid, key in data_keys.items():
            keys[kid] = held.get(kid) or AESGCM(key)
        self._keys = keys
        self._active = active if active in keys else self.master_id

    def encrypt(self, plaintext: str | None) -> str | None:
        """Encrypt ``plaintext`` with the active key (``None`` stays ``None``)."""
        if plaintext is None:
            return None
        kid = self._active
        return self._seal(self._keys[kid], kid, plaintext.encode("utf-8"))

    def decrypt(self, ciphertext: str | None) -> str | None:
        """Decrypt what :meth:`encrypt` made, under whichever held key sealed it."""
        if ciphertext is None:
            return None
        return self._open(ciphertext).decode("utf-8")

    def sealed_by(self, ciphertext: str) -> str:
        """The id of the key that sealed ``ciphertext``."""
        if ciphertext.startswith(_PREFIX):
            return ciphertext[len(_PREFIX) :].partition(":")[0]
        if ciphertext.startswith(_LEGACY):
            return self.master_id
        raise StoreError("unrecognised ciphertext")

    def wrap(self, key: bytes) -> str:
        """A data key sealed by the master key, for storing."""
        return self._seal(self._master, self.master_id, key)

    def unwrap(self, wrapped: str) -> bytes:
        """The data key :meth:`wrap` sealed."""
        if self.sealed_by(wrapped) != self.master_id:
            raise StoreError("a data key is wrapped by another master key")
        return self._open(wrapped)

    def blind_index(self, value: str) -> str:
        """A keyed hash for equality look-ups without storing the value (device token dedup)."""
        return hmac.new(self._blind, value.encode("utf-8"), hashlib.sha256).hexdigest()

    @staticmethod
    def _seal(aead: AESGCM, kid: str, plaintext: bytes) -> str:
        nonce = os.urandom(12)
        sealed = aead.encrypt(nonce, plaintext, kid.encode("ascii"))
        return f"{_PREFIX}{kid}:" + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")

    def _open(self, ciphertext: str) -> bytes:
        if ciphertext.startswith(_PREFIX):
            kid, _, body = ciphertext[len(_PREFIX) :].partition(":")
            associated: bytes | None = kid.encode("ascii")
        elif ciphertext.startswith(_LEGACY):
            kid, body, associated = self.master_id, ciphertext[len(_LEGACY) :], None
        else:
            raise StoreError("unrecognised ciphertext")
        aead = self._keys.get(kid)
        if aead is None:
            raise StoreError(
                f"no PII key {kid!r}: rotated away, or a wrong TIDINGS_ENCRYPTION_KEY?"
            )
        raw = _decode(body)
        try:
            return aead.decrypt(raw[:12], raw[12:], associated)
        except InvalidTag as exc:
            raise StoreError("cannot decrypt a PII field: wrong TIDINGS_ENCRYPTION_KEY?") from exc


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


def create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (a database file, before SQLite
    makes it with the process's umask; SQLite gives its WAL and shared-memory files the
    database file's mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def generate_key() -> str:
    """A fresh 32-byte key as urlsafe base64."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")


def hash_api_key(key: str) -> str:
    """The stored form of an API key (SHA-256; keys are high-entropy, so no KDF is needed)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()
