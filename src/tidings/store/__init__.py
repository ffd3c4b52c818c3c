"""State: tables, queries and the group-commit writer (SQLite or PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.crypto import Cipher, create_private, load_or_create_key
from tidings.store import migrations
from tidings.store.db import Writer, create_engine, sqlite_path


class Store:
    """The database: reads on pooled connections, writes through one group-commit writer."""

    def __init__(self, url: str, cipher: Cipher) -> None:
        self.url = url
        self.engine = create_engine(url)
        self.is_sqlite = url.startswith("sqlite")
        self.reader = self.engine if self.is_sqlite else create_engine(url, reads=True)
        self.write = Writer(self.engine, lanes=1 if self.is_sqlite else 4)
        self.cipher = cipher

    @classmethod
    def open(cls, url: str, encryption_key: str | None) -> Store:
        """A store with the configured key, or a key file beside the SQLite database."""
        path = sqlite_path(url)
        key_file = None if path is None else Path(str(path) + ".key")
        if path is not None:
            create_private(path)  # PII and key hashes: readable by this user alone
        return cls(url, load_or_create_key(encryption_key, key_file))

    async def start(self, *, migrate: bool = True) -> None:
        """Migrate the schema to the newest revision, load the PII keys, start the writer.

        ``migrate=False``: a process of ``tidings serve --processes N``, whose supervisor
        migrated before starting it (and which then never loads Alembic at all).
        """
        if migrate:
            async with self.engine.begin() as conn:
                await conn.run_sync(migrations.upgrade)
        await self.load_keys()
        self.write.start()

    async def load_keys(self) -> None:
        """(Re)load the PII data keys (``tidings keys rotate-pii`` adds and retires them)."""
        from tidings.store import pii_keys

        async with self.read() as conn:
            await pii_keys.load(conn, self.cipher)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads (on PostgreSQL, in autocommit: see :func:`create_engine`)."""
        async with self.reader.connect() as conn:
            yield conn

    async def aclose(self) -> None:
        """Flush the writer and dispose of the engine."""
        await self.write.aclose()
        await self.engine.dispose()
        if self.reader is not self.engine:
            await self.reader.dispose()
