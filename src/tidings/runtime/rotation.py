"""``tidings keys rotate-pii``: PII re-encrypted under a new data key while the service runs.

Every step keeps every ciphertext readable by every process (see
:mod:`tidings.store.pii_keys`): the new key is stored and, after ``settle`` seconds (more than
the services' key refresh, :data:`tidings.runtime.keyring.REFRESH`), made active; after
another ``settle`` every process encrypts with it, and the rows are re-encrypted batch by
batch, in passes until one finds nothing left; then the old data keys are deleted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.runtime.keyring import REFRESH
from tidings.store import Store, pii_keys

SETTLE = 3 * REFRESH
"""Seconds to wait for every running process to learn a key change."""


@dataclass
class Rotation:
    """What a rotation did."""

    key_id: str
    fields: int = 0
    retired: list[str] = field(default_factory=list)


async def rotate_pii(
    store: Store,
    settle: float = SETTLE,
    say: Callable[[str], None] = lambda _: None,
    batch: int = 200,
    force: bool = False,
) -> Rotation:
    """Re-encrypt every PII field of ``store`` under a fresh data key; retire the old ones.

    Rows are re-encrypted ``batch`` at a time, each batch one short write transaction.
    :class:`~tidings.errors.Conflict` while another rotation is unfinished (``force``: it
    was interrupted).
    """
    now = time.time()
    kid = await store.write(lambda conn: pii_keys.begin(conn, store.cipher, now, force))
    await store.load_keys()
    say(f"new PII key {kid}: waiting {settle:g}s for every process to learn it")
    await asyncio.sleep(settle)
    await store.write(lambda conn: pii_keys.activate(conn, kid))
    await store.load_keys()
    say(f"PII key {kid} active: waiting {settle:g}s for every process to use it")
    await asyncio.sleep(settle)
    done = Rotation(kid)
    for _ in range(5):
        changed = await _sweep(store, batch)
        done.fields += changed
        say(f"re-encrypted {changed} fields")
        if not changed:
            break
    done.retired = await store.write(lambda conn: pii_keys.finish(conn, kid))
    await store.load_keys()
    return done


async def _sweep(store: Store, size: int) -> int:
    """One pass over every PII column; the fields re-encrypted."""
    changed = await store.write(lambda conn: pii_keys.reencrypt_secrets(conn, store.cipher))
    for table, columns in pii_keys.encrypted_tables():
        after: tuple[Any, ...] | None = None
        while True:

            async def batch(
                conn: AsyncConnection, t: Table = table, c: Any = columns, a: Any = after
            ) -> tuple[tuple[Any, ...] | None, int]:
                return await pii_keys.reencrypt_batch(conn, store.cipher, t, c, a, size)

            after, count = await store.write(batch)
            changed += count
            if after is None:
                break
    return int(changed)
