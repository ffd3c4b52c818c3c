"""The SQLite writer's commits leave WAL checkpoints to the checkpointer thread."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.crypto import Cipher, generate_key
from tidings.store import Store

PAGE = 4096


def _wal_bytes(db: Path) -> int:
    return os.path.getsize(str(db) + "-wal")


async def _fill(store: Store, pages: int) -> None:
    async def write(conn: AsyncConnection) -> None:
        await conn.execute(
            text("INSERT INTO meta (key, value) VALUES (:k, :v)"),
            [{"k": f"k-{store.write.operations}-{n}", "v": "x" * 3000} for n in range(100)],
        )

    for _ in range(pages // 100):
        await store.write(write)


async def test_commits_do_not_checkpoint_the_checkpointer_does(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = Store(f"sqlite:///{db}", Cipher.from_text(generate_key()))
    checkpointer = store.write.checkpointer
    assert checkpointer is not None
    checkpointer.every = 3600.0  # it must not run on its own during the test
    await store.start()
    try:
        await _fill(store, 3000)
        # SQLite's automatic checkpoint would have recycled the WAL at ~1,000 pages
        assert _wal_bytes(db) > 2500 * PAGE
    finally:
        await store.aclose()
    assert checkpointer.runs == 1  # the last one, on close
    with sqlite3.connect(db) as reopened:
        (count,) = reopened.execute("SELECT count(*) FROM meta WHERE key LIKE 'k-%'").fetchone()
    assert count == 3000


async def test_a_long_wal_is_started_over(tmp_path: Path) -> None:
    # a passive checkpoint copies pages back but leaves the file as long as it grew; under a
    # steady load of several processes SQLite never starts it over by itself
    db = tmp_path / "t.db"
    store = Store(f"sqlite:///{db}", Cipher.from_text(generate_key()))
    checkpointer = store.write.checkpointer
    assert checkpointer is not None
    checkpointer.every = 3600.0
    checkpointer.restart_frames = 1000
    await store.start()
    try:
        await _fill(store, 3000)
        assert _wal_bytes(db) > 2500 * PAGE
        with sqlite3.connect(db) as conn:
            checkpointer._checkpoint(conn)
        assert checkpointer.restarts == 1
        assert _wal_bytes(db) == 0
        await _fill(store, 200)  # and writing goes on in the emptied file
    finally:
        await store.aclose()
    with sqlite3.connect(db) as reopened:
        (count,) = reopened.execute("SELECT count(*) FROM meta WHERE key LIKE 'k-%'").fetchone()
    assert count == 3200
