"""PII data keys (``tidings keys rotate-pii``): stored wrapped, loaded, rotated, re-encrypted.

Data keys live in ``meta`` as ``pii_key:<id>`` (sealed by the master key); ``pii_active``
names the one new ciphertexts use. A rotation adds a key, lets every process learn it, makes
it active, lets every process learn that, re-encrypts every PII column (each ``*_enc`` column
of :mod:`tidings.store.tables`, and the generated inbox secret) in small transactions, and
only then deletes the old keys: until that last step every ciphertext, old or new, reads.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import (
    Column,
    Table,
    and_,
    bindparam,
    delete,
    insert,
    not_,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.crypto import Cipher, key_id
from tidings.errors import Conflict
from tidings.store.keys import INBOX_SECRET, get_meta, set_meta
from tidings.store.tables import meta, metadata

_KEY = "pii_key:"
_ACTIVE = "pii_active"
_ROTATING = "pii_rotating"
_SEALED = ("v1:", "v2:")


async def load(conn: AsyncConnection, cipher: Cipher) -> None:
    """Give ``cipher`` the stored data keys and the active one."""
    rows = await conn.execute(
        select(meta.c.key, meta.c.value).where(meta.c.key.startswith(_KEY, autoescape=True))
    )
    keys = {row.key[len(_KEY) :]: cipher.unwrap(row.value) for row in rows}
    cipher.use(keys, await get_meta(conn, _ACTIVE))


async def begin(conn: AsyncConnection, cipher: Cipher, now: float, force: bool = False) -> str:
    """Start a rotation: store a fresh data key (not active yet); its id.

    One rotation at a time (two would each retire the other's key): :class:`Conflict` while
    another is unfinished, unless ``force`` (that one was interrupted).
    """
    running = await get_meta(conn, _ROTATING)
    if running is not None and not force:
        raise Conflict(
            f"a PII key rotation ({running}) is unfinished: if none runs any more"
            " (interrupted), rotate again with --force"
        )
    key = os.urandom(32)
    kid = key_id(key)
    await conn.execute(insert(meta).values(key=_KEY + kid, value=cipher.wrap(key)))
    await set_meta(conn, _ROTATING, f"to key {kid}, started at {now:.0f}")
    return kid


async def activate(conn: AsyncConnection, kid: str) -> None:
    """Make ``kid`` the key new ciphertexts use."""
    await set_meta(conn, _ACTIVE, kid)


async def finish(conn: AsyncConnection, keep: str) -> list[str]:
    """End a rotation: delete every data key but ``keep`` (the active one); the ids deleted."""
    if await get_meta(conn, _ACTIVE) != keep:
        raise Conflict(f"PII key {keep} is no longer the active one: another rotation ran")
    rows = await conn.execute(
        select(meta.c.key).where(meta.c.key.startswith(_KEY, autoescape=True))
    )
    gone = [row.key for row in rows if row.key != _KEY + keep]
    await conn.execute(delete(meta).where(meta.c.key.in_([*gone, _ROTATING])))
    return [name[len(_KEY) :] for name in gone]


def encrypted_tables() -> list[tuple[Table, list[Column[Any]]]]:
    """Every table with PII columns (``*_enc``), and those columns."""
    found = []
    for table in metadata.sorted_tables:
        columns = [column for column in table.columns if column.name.endswith("_enc")]
        if columns:
            found.append((table, columns))
    return found


async def reencrypt_batch(
    conn: AsyncConnection,
    cipher: Cipher,
    table: Table,
    columns: list[Column[Any]],
    after: tuple[Any, ...] | None,
    size: int = 200,
) -> tuple[tuple[Any, ...] | None, int]:
    """Re-encrypt up to ``size`` rows past ``after`` (primary key order) under the active key.

    Returns the last primary key seen (``None``: the table is done) and the fields changed.
    A field changed meanwhile by someone else is left as they wrote it.
    """
    current = f"v2:{cipher.active_id}:"
    keys = list(table.primary_key.columns)
    stale = or_(
        *(and_(c.is_not(None), not_(c.startswith(current, autoescape=True))) for c in columns)
    )
    query = select(*keys, *columns).where(stale).order_by(*keys).limit(size)
    if after is not None:
        query = query.where(tuple_(*keys) > tuple_(*after))
    rows = (await conn.execute(query)).all()
    changed = 0
    for column in columns:
        updates = []
        for row in rows:
            old = row._mapping[column]
            # a value that is no ciphertext (an empty string …) is not ours to change
            if old and old.startswith(_SEALED) and cipher.sealed_by(old) != cipher.active_id:
                match = {f"k_{k.name}": row._mapping[k] for k in keys}
                updates.append({**match, "old": old, "new": cipher.encrypt(cipher.decrypt(old))})
        if updates:
            await conn.execute(_swap(table, keys, column), updates)
            changed += len(updates)
    last = tuple(rows[-1]._mapping[k] for k in keys) if len(rows) == size else None
    return last, changed


def _swap(table: Table, keys: list[Column[Any]], column: Column[Any]) -> Any:
    where = [k == bindparam(f"k_{k.name}") for k in keys]
    return (
        update(table)
        .where(*where, column == bindparam("old"))
        .values({column.name: bindparam("new")})
    )


async def reencrypt_secrets(conn: AsyncConnection, cipher: Cipher) -> int:
    """Re-encrypt the generated inbox secret under the active key (0 or 1 changed)."""
    stored = await get_meta(conn, INBOX_SECRET)
    if stored is None or not stored.startswith(_SEALED):
        return 0
    if cipher.sealed_by(stored) == cipher.active_id:
        return 0
    await set_meta(conn, INBOX_SECRET, cipher.encrypt(cipher.decrypt(stored)) or "")
    return 1
