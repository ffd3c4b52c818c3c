"""API keys (stored hashed) and generated secrets (``meta``)."""

from __future__ import annotations

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.crypto import hash_api_key
from tidings.store.tables import api_keys, meta


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


async def count_keys(conn: AsyncConnection) -> int:
    """How many API keys are stored."""
    return len((await conn.execute(select(api_keys.c.key_hash))).all())


async def add_key(
    conn: AsyncConnection, key: str, scopes: list[str], label: str, now: float
) -> None:
    """Store a key (hashed) with its scopes; re-adding updates nothing."""
    digest = hash_api_key(key)
    found = await conn.execute(select(api_keys.c.key_hash).where(api_keys.c.key_hash == digest))
    if found.first() is None:
        await conn.execute(
            insert(api_keys).values(
                key_hash=digest, scopes="+".join(scopes), label=label, created_at=now
            )
        )


async def all_keys(conn: AsyncConnection) -> dict[str, frozenset[str]]:
    """Hash → scopes, for every stored key."""
    rows = await conn.execute(select(api_keys.c.key_hash, api_keys.c.scopes))
    return {row.key_hash: frozenset(row.scopes.split("+")) for row in rows}
