"""State: tables, queries and the group-commit writer (SQLite or PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.crypto import Cipher, load_or_create_key
from tidings.store import migrations
from tidings.store.db import Writer, create_engine, sqlite_path


class Store:
    """The database: reads on pooled connections, writes through one group-commit writer."""

    def __init__(self, url: str, cipher: Cipher) -> None:
        self.url = url
        self.engine = create_engine(url)
        self.is_sqlite = url.startswith("sqlite")
        self.write = Writer(self.engine, lanes=1 if self.is_sqlite else 4)
        self.cipher = cipher

    @classmethod
    def open(cls, url: str, encryption_key: str | None) -> Store:
        """A store with the configured key, or a key file beside the SQLite database."""
        path = sqlite_path(url)
        key_file = None if path is None else Path(str(path) + ".key")
        return cls(url, load_or_create_key(encryption_key, key_file))

    async def start(self) -> None:
        """Migrate the schema to the newest revision and start the writer."""
        async with self.engine.begin() as conn:
            await conn.run_sync(migrations.upgrade)
        self.write.start()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads."""
        async with self.engine.connect() as conn:
            yield conn

    async def aclose(self) -> None:
        """Flush the writer and dispose of the engine."""
        await self.write.aclose()
        await self.engine.dispose()
