"""What :mod:`tidings.store.inline_sqlite` imitates of aiosqlite, checked against the real one.

SQLAlchemy's aiosqlite dialect reaches past aiosqlite's public API: it sets the isolation level
by putting ``(future, function)`` on the connection's private ``_tx`` queue with a function of
its ``_conn``, and terminates a connection with ``stop()`` (aiosqlite 0.22.1+). The inline
connection imitates exactly those; pyproject.toml pins the aiosqlite range they hold for, and
these tests fail when an upgrade changes them.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aiosqlite
from packaging.requirements import Requirement
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tidings.store.inline_sqlite import InlineConnection, creator

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


async def _private_api(conn: Any) -> None:
    """The private parts of an aiosqlite connection that SQLAlchemy's dialect uses."""
    assert isinstance(conn._conn, sqlite3.Connection)
    future = asyncio.get_running_loop().create_future()
    conn._tx.put_nowait((future, lambda: conn._conn.execute("select 41 + 1").fetchone()[0]))
    assert await future == 42
    assert callable(conn.stop)


async def test_aiosqlite_still_has_the_private_api_the_inline_connection_imitates(
    tmp_path: Path,
) -> None:
    conn = await aiosqlite.connect(tmp_path / "real.db")
    try:
        await _private_api(conn)
    finally:
        await conn.close()


async def test_the_inline_connection_offers_the_same_private_api(tmp_path: Path) -> None:
    conn = InlineConnection(str(tmp_path / "inline.db"))
    try:
        await _private_api(conn)
    finally:
        await conn.close()


async def test_sqlalchemy_sets_the_isolation_level_and_terminates_through_it(
    tmp_path: Path,
) -> None:
    engine = create_async_engine(
        "sqlite+aiosqlite://", async_creator=creator(str(tmp_path / "engine.db"))
    )
    # has_terminate: the dialect found aiosqlite.Connection.stop (else it never calls ours)
    assert engine.dialect.has_terminate
    try:
        async with engine.connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text("create table t (x integer)"))
            driver = (await conn.get_raw_connection()).driver_connection
            assert isinstance(driver, InlineConnection)
            assert driver.sqlite.isolation_level is None  # set through _tx and _conn
    finally:
        await engine.dispose()


def test_the_installed_aiosqlite_is_in_the_pinned_range() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    pin = next(Requirement(d) for d in dependencies if Requirement(d).name == "aiosqlite")
    assert version("aiosqlite") in pin.specifier
