"""API keys (stored hashed), and secrets kept in ``meta`` (the inbox secret, encrypted).

A key's ``label`` says where it came from: ``config`` (config or ``TIDINGS_API_KEYS``: the
rows follow the configured set at every start), ``generated`` (the admin key of a first start
with none configured) or ``created`` (``tidings keys create``).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.crypto import Cipher, hash_api_key
from tidings.store.tables import api_keys, meta

INBOX_SECRET = "inbox_secret"
"""The ``meta`` row of the generated inbox secret (ciphertext)."""


@dataclass(frozen=True)
class ApiKey:
    """A stored API key, without the key itself."""

    digest: str
    scopes: frozenset[str]
    label: str
    created_at: float
    name: str | None = None
    expires_at: float | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None

    @property
    def id(self) -> str:
        """The key's public id (``tidings keys list`` / ``revoke``)."""
        return key_id(self.digest)

    def allows(self, scope: str) -> bool:
        """Whether the key grants ``scope`` (``admin`` grants every scope)."""
        return "admin" in self.scopes or scope in self.scopes

    def expired(self, now: float) -> bool:
        """Whether the key's expiry has passed."""
        return self.expires_at is not None and now >= self.expires_at


def key_id(digest: str) -> str:
    """The public id of the key whose hash is ``digest``."""
    return "key_" + digest[:12]


async def get_meta(conn: AsyncConnection, key: str) -> str | None:
    """A stored setting (``inbox_secret`` …)."""
    return (await conn.execute(select(meta.c.value).where(meta.c.key == key))).scalar_one_or_none()


async def put_meta_if_absent(conn: AsyncConnection, key: str, value: str) -> str:
    """Store ``value`` unless ``key`` has one; return what is stored."""
    existing = await get_meta(conn, key)
    if existing is not None:
        return existing
    await conn.execute(insert(meta).values(key=key, value=value))
    return value


async def set_meta(conn: AsyncConnection, key: str, value: str) -> None:
    """Store ``value`` under ``key``, replacing any."""
    if await get_meta(conn, key) is None:
        await conn.execute(insert(meta).values(key=key, value=value))
    else:
        await conn.execute(update(meta).where(meta.c.key == key).values(value=value))


async def inbox_secret(conn: AsyncConnection, cipher: Cipher) -> str:
    """The generated inbox secret: made (and stored encrypted) on first use.

    A secret stored in plain text by an older version is encrypted in place.
    """
    stored = await get_meta(conn, INBOX_SECRET)
    if stored is None:
        secret = secrets.token_urlsafe(32)
        await conn.execute(insert(meta).values(key=INBOX_SECRET, value=cipher.encrypt(secret)))
        return secret
    if stored.startswith(("v1:", "v2:")):
        return cipher.decrypt(stored) or ""
    await set_meta(conn, INBOX_SECRET, cipher.encrypt(stored) or "")
    return stored


def _row_key(row: Any) -> ApiKey:
    return ApiKey(
        digest=row.key_hash,
        scopes=frozenset(row.scopes.split("+")),
        label=row.label,
        created_at=row.created_at,
        name=row.name,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


async def all_keys(conn: AsyncConnection) -> dict[str, ApiKey]:
    """Hash → key, for every stored key (revoked and expired ones too)."""
    rows = await conn.execute(select(api_keys).order_by(api_keys.c.created_at))
    return {row.key_hash: _row_key(row) for row in rows}


async def add_key(
    conn: AsyncConnection,
    key: str,
    scopes: Iterable[str],
    label: str,
    now: float,
    *,
    name: str | None = None,
    expires_at: float | None = None,
) -> ApiKey:
    """Store a key (hashed) with its scopes; re-adding one changes nothing."""
    digest = hash_api_key(key)
    found = (await conn.execute(select(api_keys).where(api_keys.c.key_hash == digest))).first()
    if found is not None:
        return _row_key(found)
    values = {
        "key_hash": digest,
        "scopes": "+".join(sorted(set(scopes))),
        "label": label,
        "created_at": now,
        "name": name,
        "expires_at": expires_at,
    }
    await conn.execute(insert(api_keys).values(**values))
    return ApiKey(digest, frozenset(scopes), label, now, name, expires_at)


async def sync_configured(
    conn: AsyncConnection, configured: Mapping[str, frozenset[str]], now: float
) -> None:
    """Make the ``config`` rows the configured set (key → scopes): the rest are deleted.

    A configured key revoked with ``tidings keys revoke`` stays revoked.
    """
    stored = {
        digest: key for digest, key in (await all_keys(conn)).items() if key.label == "config"
    }
    wanted = {hash_api_key(key): (key, scopes) for key, scopes in configured.items()}
    gone = [digest for digest in stored if digest not in wanted]
    if gone:
        await conn.execute(delete(api_keys).where(api_keys.c.key_hash.in_(gone)))
    for digest, (key, scopes) in wanted.items():
        if digest not in stored:
            await add_key(conn, key, scopes, "config", now)
        elif stored[digest].scopes != scopes:
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.key_hash == digest)
                .values(scopes="+".join(sorted(scopes)))
            )


def usable(keys: Mapping[str, ApiKey], now: float) -> dict[str, ApiKey]:
    """The keys that authenticate now: neither revoked nor expired."""
    return {
        digest: key
        for digest, key in keys.items()
        if key.revoked_at is None and not key.expired(now)
    }


async def revoke(conn: AsyncConnection, wanted: str, now: float) -> ApiKey | None:
    """Revoke the key with id ``wanted``; the key (``None`` when there is none)."""
    for digest, key in (await all_keys(conn)).items():
        if key.id == wanted:
            if key.revoked_at is None:
                await conn.execute(
                    update(api_keys).where(api_keys.c.key_hash == digest).values(revoked_at=now)
                )
            return key
    return None


async def stamp_used(conn: AsyncConnection, used: Mapping[str, float]) -> None:
    """Record when keys were last used (hash → time)."""
    for digest, when in used.items():
        await conn.execute(
            update(api_keys).where(api_keys.c.key_hash == digest).values(last_used_at=when)
        )
