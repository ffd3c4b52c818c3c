"""Database engine, schema creation and the group-commit writer.

Every write goes through :class:`Writer`: concurrent callers' operations are run in one
transaction and committed together, so durability (a commit before ``202``) costs one fsync
per batch rather than one per request. A failed batch is replayed one operation at a time
so that one bad operation fails alone.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import JSON, Table, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from tidings import json_output
from tidings.config import sqlalchemy_url
from tidings.errors import StoreError
from tidings.store.inline_sqlite import InlineConnection, creator

log = logging.getLogger(__name__)
T = TypeVar("T")
Operation = Callable[[AsyncConnection], Awaitable[Any]]


def sqlite_path(url: str) -> Path | None:
    """The file behind a ``sqlite:///`` URL, or ``None`` for another backend / memory."""
    parsed = make_url(sqlalchemy_url(url))
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def create_engine(url: str, *, reads: bool = False) -> AsyncEngine:
    """An async engine; SQLite gets WAL and a busy timeout on every connection.

    ``reads=True`` on PostgreSQL: an engine for :meth:`Store.read`, whose connections run in
    autocommit. Under READ COMMITTED each statement sees its own snapshot inside a
    transaction too, so a read transaction bought nothing but its ``BEGIN`` and
    ``ROLLBACK``, and the pool's liveness ping wrapped its ``;`` in another pair: six round
    trips for one query, two now. (SQLite starts no transaction for a read anyway.)
    """
    full = sqlalchemy_url(url)
    if full.startswith("sqlite"):
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            full,
            poolclass=NullPool if path is None else None,
            async_creator=creator(str(path) if path is not None else ":memory:"),
            json_serializer=json_output.text,
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives any process crash (kill -9); only power loss
            # may roll back the last transactions.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.close()

        return engine
    if reads:
        return create_async_engine(
            full,
            pool_size=8,
            max_overflow=8,
            pool_pre_ping=True,
            isolation_level="AUTOCOMMIT",
            json_serializer=json_output.text,
        )
    return create_async_engine(
        full, pool_size=6, max_overflow=6, pool_pre_ping=True, json_serializer=json_output.text
    )


class Checkpointer:
    """Checkpoints a SQLite WAL on a thread of its own, so that no commit of the writer does.

    SQLite's automatic checkpoint runs inside the commit that crosses 1,000 WAL pages: it
    copies the pages into the database and fsyncs both files, which here took 5-40 ms — on
    the event loop thread, since the connection is inline — and set every in-flight request's
    p99. This thread runs a ``PASSIVE`` checkpoint (it never waits for, nor blocks, readers
    and the writer) every ``every`` seconds on its own connection; the sqlite3 module
    releases the GIL while SQLite works. Durability is unchanged: a commit is in the WAL, and
    survives a crash, before it returns, with or without a checkpoint.

    A passive checkpoint copies pages back but never starts the WAL over: SQLite does that
    only when a writer begins at a moment when every frame is copied and no reader still
    needs one, which under a steady load of several processes (``--processes N``) never
    comes — the WAL grew past 1 GB in 10 s of load, and every page read searched an index
    over all of it. So once the WAL holds ``restart_frames`` frames, the thread asks for a
    ``TRUNCATE`` checkpoint: it waits (at most ``restart_wait`` seconds, else it tries again
    next round) for the readers of old frames to finish, holding off writers meanwhile, then
    empties the file. Readers here are short, so the pause is typically well under 1 ms.
    """

    def __init__(
        self,
        path: str,
        every: float = 0.5,
        restart_frames: int = 8192,
        restart_wait: float = 0.05,
    ) -> None:
        self.path = path
        self.every = every
        self.restart_frames = restart_frames
        self.restart_wait = restart_wait
        self.runs = 0
        self.restarts = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread after a last checkpoint."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(30)
            self._thread = None

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("PRAGMA synchronous=NORMAL")
            while True:
                stopping = self._stop.wait(self.every)
                try:
                    self._checkpoint(conn)
                except sqlite3.Error as exc:  # the writer's own checkpoint is not lost
                    log.warning("WAL checkpoint failed: %s", exc)
                if stopping:
                    return
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.runs += 1
        if frames < self.restart_frames:
            return
        conn.execute(f"PRAGMA busy_timeout={int(self.restart_wait * 1000)}")
        try:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            self.restarts += not busy
        finally:
            conn.execute("PRAGMA busy_timeout=10000")


class Writer:
    """Runs write operations in shared transactions (group commit).

    Each lane (one on SQLite, several on PostgreSQL) keeps its connection between batches:
    checking one out of the pool — with PostgreSQL's liveness ping — and resetting it on
    return cost more than a small batch's own statements (a third of a scale-out worker's
    store time in py-spy). A held connection that turns out lost (the database restarted)
    is dropped and the batch tried once more on a new one, which is what the ping bought.
    On a SQLite file the commits do not checkpoint the WAL; a :class:`Checkpointer` does.
    """

    def __init__(self, engine: AsyncEngine, *, lanes: int = 1, max_batch: int = 512) -> None:
        self._engine = engine
        self._held: dict[int, AsyncConnection] = {}
        path = engine.url.database if engine.dialect.name == "sqlite" else None
        self.checkpointer = (
            Checkpointer(path) if lanes == 1 and path and path != ":memory:" else None
        )
        self._queue: asyncio.Queue[tuple[Operation, asyncio.Future[Any]]] = asyncio.Queue()
        self._lanes = lanes
        self._max_batch = max_batch
        self._tasks: list[asyncio.Task[None]] = []
        self.batches = 0
        self.operations = 0

    def start(self) -> None:
        """Start the writer task(s)."""
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._run(lane)) for lane in range(self._lanes)]

    async def aclose(self) -> None:
        """Finish queued operations, then stop."""
        if self._tasks:
            await asyncio.wait_for(self._queue.join(), 30)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        held, self._held = list(self._held.values()), {}
        for conn in held:
            await conn.close()
        if self.checkpointer is not None:
            self.checkpointer.stop()

    async def __call__(self, operation: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``operation`` in a transaction; return its result once committed."""
        if not self._tasks:
            async with self._engine.begin() as conn:
                return await operation(conn)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((operation, future))
        return await future

    async def _run(self, lane: int) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._commit(lane, batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _commit(self, lane: int, batch: list[tuple[Operation, asyncio.Future[Any]]]) -> None:
        self.batches += 1
        self.operations += len(batch)
        try:
            results = await self._attempt(lane, batch)
        except Exception as exc:
            if len(batch) == 1:
                self._fail(batch[0][1], exc)
                return
            for single in batch:  # isolate the operation that failed
                await self._commit(lane, [single])
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _attempt(self, lane: int, batch: list[tuple[Operation, Any]]) -> list[Any]:
        """Run ``batch`` in one transaction; once more on a new connection if it was lost."""
        try:
            return await self._run_batch(lane, batch)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            log.warning("database connection lost; retrying the batch on a new one")
        return await self._run_batch(lane, batch)

    async def _run_batch(self, lane: int, batch: list[tuple[Operation, Any]]) -> list[Any]:
        async with self._transaction(lane) as conn:
            return [await operation(conn) for operation, _ in batch]

    @asynccontextmanager
    async def _transaction(self, lane: int) -> AsyncIterator[AsyncConnection]:
        held = self._held.get(lane)
        if held is None or held.closed or held.invalidated:
            held = self._held[lane] = await self._engine.connect()
            raw = inline_sqlite(held)
            if raw is not None and self.checkpointer is not None:
                raw.execute("PRAGMA wal_autocheckpoint=0")
                self.checkpointer.start()
        raw = inline_sqlite(held)
        if raw is not None:
            await begin_immediate(raw)
        async with held.begin():
            yield held

    @staticmethod
    def _fail(future: asyncio.Future[Any], exc: Exception) -> None:
        if isinstance(exc, SQLAlchemyError):
            log.warning("write failed: %s", type(exc).__name__)
            wrapped = StoreError(f"database write failed: {type(exc).__name__}")
            wrapped.__cause__ = exc
            exc = wrapped
        if not future.done():
            future.set_exception(exc)


_LOCK_WAITS = (0.0002, 0.0005, 0.001, 0.002)
"""Seconds between tries for SQLite's write lock (then the last one, until it is ours)."""


async def begin_immediate(raw: sqlite3.Connection, patience: float = 30.0) -> None:
    """Begin a write transaction on ``raw``, holding SQLite's write lock from the start.

    Several processes share one database file (``tidings serve --processes N``). A
    transaction that began as a read and then writes fails at once (``SQLITE_BUSY``) if
    another process committed in between, and a statement waiting on SQLite's busy timeout
    would hold this process's event loop while it sleeps (the connection is inline). So the
    lock is taken up front, without waiting in SQLite: each refusal is awaited here instead,
    and the loop serves requests meanwhile. With one process the first try always succeeds.
    """
    waited = 0.0
    tries = 0
    raw.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or waited > patience:
                    raise
            pause = _LOCK_WAITS[min(tries, len(_LOCK_WAITS) - 1)]
            tries += 1
            waited += pause
            await asyncio.sleep(pause)
    finally:
        raw.execute("PRAGMA busy_timeout=10000")


def inline_sqlite(conn: AsyncConnection) -> sqlite3.Connection | None:
    """The ``sqlite3`` connection under ``conn`` when it is SQLite on :class:`InlineConnection`.

    Hot statements (the intake's duplicate lookup, bulk inserts) run on it directly, in the
    transaction ``conn`` holds: SQLAlchemy's statement construction, caching and execution
    context cost ~100 µs a statement here, SQLite's own work a few. ``None`` for any other
    backend (and for a closed or invalidated connection): use SQLAlchemy then.
    """
    if conn.dialect.name != "sqlite":
        return None
    sync = conn.sync_connection
    if sync is None or sync.closed or sync.invalidated:
        return None
    driver = sync.connection.driver_connection  # checked out already: no I/O
    return driver.sqlite if isinstance(driver, InlineConnection) else None


def placeholders(count: int) -> str:
    """``?, ?, …`` for ``count`` parameters of a plain SQLite statement."""
    return ", ".join("?" * count)


async def sqlite_rows(conn: AsyncConnection, sql: str, parameters: Sequence[Any]) -> list[Any]:
    """Run one plain SQLite statement in ``conn``'s transaction; its rows (as tuples).

    On the ``sqlite3`` connection itself when there is one (:func:`inline_sqlite`): a few µs
    instead of SQLAlchemy's ~100 µs of execution context per statement.
    """
    raw = inline_sqlite(conn)
    if raw is not None:
        return raw.execute(sql, parameters).fetchall()
    return list((await conn.exec_driver_sql(sql, tuple(parameters))).fetchall())


async def sqlite_many(conn: AsyncConnection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """:func:`sqlite_rows` as an executemany over ``rows``."""
    raw = inline_sqlite(conn)
    if raw is not None:
        raw.executemany(sql, rows)
    else:
        await conn.exec_driver_sql(sql, list(rows))


async def advisory_lock(conn: AsyncConnection, *keys: str) -> None:
    """Hold PostgreSQL advisory locks on ``keys`` until the transaction ends.

    Processes that write the same thing at once (workers deciding for one subject, services
    starting side by side) take turns. The keys are locked in sorted order, in one round trip,
    so two transactions never wait on each other crosswise. SQLite has one writer already: a
    no-op there.
    """
    if conn.dialect.name != "postgresql" or not keys:
        return
    await conn.execute(
        text(
            "SELECT count(pg_advisory_xact_lock(hashtext(k))) FROM"
            ' (SELECT k FROM unnest(CAST(:keys AS text[])) AS k ORDER BY k COLLATE "C") AS s'
        ),
        {"keys": sorted(set(keys))},
    )


_INSERTS: dict[tuple[str, tuple[str, ...], bool], tuple[str, list[int]]] = {}


@dataclass(frozen=True, slots=True)
class Prepared:
    """An ``INSERT`` of many rows made ready before its transaction (:func:`prepare_insert`)."""

    table: Table
    rows: Sequence[dict[str, Any]]
    sql: str
    """The plain SQLite statement ('' for another backend)."""
    values: list[Any]
    """Its parameters, a tuple (or list) a row, JSON columns encoded."""
    keep_first: bool


def prepare_insert(
    table: Table, rows: Sequence[dict[str, Any]], *, sqlite: bool = True, keep_first: bool = False
) -> Prepared:
    """``rows`` (all with the same keys) as one executemany, built outside any transaction.

    On SQLite the statement is compiled once per column set and the rows become plain tuples
    with JSON columns serialised here: SQLAlchemy's per-row parameter processing costs ~25 µs
    a row, more than SQLite's insert itself, and the processor writes ~10 rows an event. Done
    before the transaction, none of it holds the one write lock that every process of
    ``tidings serve --processes N`` takes turns on. ``keep_first``: a row whose unique key is
    stored already is skipped (``ON CONFLICT DO NOTHING``) rather than failing the statement.
    Other backends (``sqlite=False``) take SQLAlchemy's ordinary executemany of ``rows``.
    """
    if not rows or not sqlite:
        return Prepared(table, rows, "", [], keep_first)
    columns = tuple(rows[0])
    key = (table.name, columns, keep_first)
    compiled = _INSERTS.get(key)
    if compiled is None:
        names = ", ".join(columns)
        sql = f"INSERT INTO {table.name} ({names}) VALUES ({placeholders(len(columns))})"
        if keep_first:
            sql += " ON CONFLICT DO NOTHING"
        json_at = [i for i, name in enumerate(columns) if isinstance(table.c[name].type, JSON)]
        compiled = _INSERTS[key] = (sql, json_at)
    sql, as_json = compiled
    values: list[Any]
    take = itemgetter(*columns)
    if len(columns) == 1:
        values = [(take(row),) for row in rows]
    else:
        values = [take(row) for row in rows]
    if as_json:
        encode = json_output.text
        listed = [list(value) for value in values]
        for value in listed:
            for i in as_json:
                if value[i] is not None:
                    value[i] = encode(value[i])
        values = listed
    return Prepared(table, rows, sql, values, keep_first)


async def insert_prepared(conn: AsyncConnection, prepared: Prepared) -> int | None:
    """Run a :func:`prepare_insert` in ``conn``'s transaction; the rows inserted on SQLite
    (fewer than given when ``keep_first`` skipped some), ``None`` elsewhere."""
    if not prepared.rows:
        return 0
    if conn.dialect.name != "sqlite":
        assert not prepared.keep_first, "SQLite only (PostgreSQL: ON CONFLICT … RETURNING)"
        await conn.execute(prepared.table.insert(), list(prepared.rows))
        return None
    if not prepared.sql:  # made for another backend
        prepared = prepare_insert(prepared.table, prepared.rows, keep_first=prepared.keep_first)
    raw = inline_sqlite(conn)
    if raw is not None:
        return raw.executemany(prepared.sql, prepared.values).rowcount
    result = await conn.exec_driver_sql(prepared.sql, list(prepared.values))
    return result.rowcount


async def bulk_insert(conn: AsyncConnection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """``INSERT`` many rows (all with the same keys) as one executemany
    (:func:`prepare_insert` and :func:`insert_prepared` at once)."""
    if rows:
        sqlite = conn.dialect.name == "sqlite"
        await insert_prepared(conn, prepare_insert(table, rows, sqlite=sqlite))
