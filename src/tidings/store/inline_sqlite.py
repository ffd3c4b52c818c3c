"""An aiosqlite-compatible connection that runs SQLite calls inline, on the event loop thread.

aiosqlite runs every call on a worker thread and hands the result back through the event loop:
two thread wake-ups per statement. On this project's machines (gVisor) a wake-up costs hundreds
of microseconds, so a 3-statement transaction took ~3.6 ms and capped single-event ingest at a
few hundred commits per second — while SQLite itself does one in ~50 µs (WAL, synchronous=NORMAL:
no fsync on commit). SQLAlchemy's aiosqlite dialect accepts any object with aiosqlite's API via
``async_creator``; this one completes each awaitable at once, so a whole transaction runs without
leaving the loop thread and SQLAlchemy Core is used exactly as with aiosqlite.

The price is that the loop waits while SQLite works; statements here are index lookups and
batched inserts (tens of microseconds to a few milliseconds), cheaper than the wake-ups saved.

SQLAlchemy's dialect also reaches past aiosqlite's public API: it sets the isolation level by
putting ``(future, function)`` on the private ``_tx`` queue with a function of ``_conn``, and
terminates with ``stop()``. This class imitates those for the aiosqlite range pinned in
pyproject.toml; ``tests/store/test_inline_sqlite.py`` fails when an upgrade changes them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any


class InlineCursor:
    """An aiosqlite-style cursor over a :class:`sqlite3.Cursor`."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    @property
    def description(self) -> Any:
        """DB-API description."""
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        """Rows changed by the last statement."""
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        """The last inserted rowid."""
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        """DB-API arraysize."""
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        """Run one statement."""
        if parameters is None:
            self._cursor.execute(sql)
        else:
            self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> InlineCursor:
        """Run one statement for each parameter set."""
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        """One row."""
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        """Some rows."""
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> list[Any]:
        """Every remaining row."""
        return self._cursor.fetchall()

    async def close(self) -> None:
        """Close the cursor."""
        self._cursor.close()


class _Immediate:
    """Stands in for aiosqlite's work queue: runs the function at once."""

    def put_nowait(self, item: tuple[Any, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except Exception as exc:  # noqa: BLE001 - handed to the awaiting caller
            future.set_exception(exc)
        else:
            future.set_result(result)


class InlineConnection:
    """An aiosqlite-style connection whose calls complete without a thread hop."""

    def __init__(self, database: str, **kwargs: Any) -> None:
        self._conn: sqlite3.Connection = sqlite3.connect(
            database, check_same_thread=False, **kwargs
        )
        self._tx = _Immediate()

    @property
    def sqlite(self) -> sqlite3.Connection:
        """The ``sqlite3`` connection itself, for statements run without SQLAlchemy.

        Statements on it join the transaction SQLAlchemy holds on this connection (pysqlite
        begins one implicitly before the first write); SQLAlchemy commits or rolls it back.
        """
        return self._conn

    @property
    def isolation_level(self) -> str | None:
        """pysqlite's isolation level (SQLAlchemy manages transactions through it)."""
        level: str | None = self._conn.isolation_level
        return level

    async def cursor(self) -> InlineCursor:
        """A new cursor."""
        return InlineCursor(self._conn.cursor())

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        """Run one statement on a new cursor."""
        cursor = await self.cursor()
        return await cursor.execute(sql, parameters)

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        """Register a SQL function."""
        self._conn.create_function(*args, **kwargs)

    async def commit(self) -> None:
        """Commit."""
        self._conn.commit()

    async def rollback(self) -> None:
        """Roll back."""
        self._conn.rollback()

    async def close(self) -> None:
        """Close."""
        self._conn.close()

    def stop(self) -> None:
        """Terminate (there is no thread to stop)."""
        self._conn.close()


def creator(database: str) -> Callable[[], Any]:
    """An ``async_creator`` for :func:`sqlalchemy.ext.asyncio.create_async_engine`."""

    async def connect() -> InlineConnection:
        return InlineConnection(database)

    return connect
